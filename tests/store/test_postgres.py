"""PostgreSQL: the same migrations produce the schema of ``cambist.store.schema``;
several processes may migrate at once; URLs of every form open the right
drivers. Needs PostgreSQL (``tests/services.py``: fails under ``CI=true``,
skips elsewhere); each test gets its own database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from cambist.cli.main import app
from cambist.store.db import (
    DatabaseUnavailable,
    async_url,
    current_revision,
    head_revision,
    migrate,
    open_engine,
    redacted_url,
    sync_url,
)
from cambist.store.schema import metadata
from tests.services import postgres_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A plain ``postgresql://`` URL of a fresh, empty database."""
    with postgres_database() as url:
        yield url


def test_url_forms() -> None:
    pg = "postgresql+asyncpg://u:p%40ss@db:5432/x"
    for given in ("postgresql://u:p%40ss@db:5432/x", "postgres://u:p%40ss@db:5432/x",
                  "postgresql+psycopg://u:p%40ss@db:5432/x", pg):
        assert async_url(given) == pg
        assert sync_url(given) == "postgresql+psycopg://u:p%40ss@db:5432/x"
    assert async_url("sqlite:////tmp/a.db") == "sqlite+aiosqlite:////tmp/a.db"
    assert sync_url("sqlite+aiosqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert "p%40ss" not in redacted_url(pg) and "***" in redacted_url(pg)
    with pytest.raises(DatabaseUnavailable, match="unsupported database 'mysql'"):
        async_url("mysql://u@h/db")


def test_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"cannot migrate .*:\*\*\*@127\.0\.0\.1:1/"):
        migrate("postgresql://u:secret@127.0.0.1:1/nowhere")


def test_migrations_match_the_schema(pg_url: str) -> None:
    migrate(pg_url)
    engine = create_engine(sync_url(pg_url))
    try:
        insp = inspect(engine)
        assert set(insp.get_table_names()) - {"alembic_version"} == set(metadata.tables)
        for name, table in metadata.tables.items():
            cols = {c["name"]: c["nullable"] for c in insp.get_columns(name)}
            assert list(cols) == [c.name for c in table.columns], name
            assert all(cols[c.name] == c.nullable for c in table.columns), name
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
    finally:
        engine.dispose()
    assert current_revision(pg_url) == head_revision()


def test_concurrent_migrations_take_turns(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Separate processes, as in production (Alembic's context is process-global).
    env = {**os.environ, "CAMBIST_DATABASE_URL": pg_url, "CAMBIST_HOME": str(tmp_path),
           "COLUMNS": "300"}
    procs = [subprocess.Popen([sys.executable, "-m", "cambist.cli", "db", "upgrade"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    try:
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert all(head_revision() in o for o in outs), outs
    engine = create_engine(sync_url(pg_url))
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    finally:
        engine.dispose()
    assert versions == [(head_revision(),)]


async def test_async_engine_uses_asyncpg(pg_url: str) -> None:
    migrate(pg_url)
    engine = open_engine(pg_url)
    try:
        assert engine.dialect.driver == "asyncpg"
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM api_keys"))).scalar() == 0
    finally:
        await engine.dispose()


def test_cli_db_upgrade(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {"CAMBIST_HOME": str(tmp_path), "CAMBIST_DATABASE_URL": pg_url, "COLUMNS": "200"}
    first = runner.invoke(app, ["db", "upgrade"], env=env)
    assert first.exit_code == 0, first.output
    # The console was sized when the CLI was first imported: unwrap its lines.
    assert f"migrated from empty to {head_revision()}" in " ".join(first.output.split())
    again = runner.invoke(app, ["db", "upgrade"], env=env)
    assert again.exit_code == 0 and "already at revision" in " ".join(again.output.split())
    broken = runner.invoke(app, ["db", "upgrade", "--database-url",
                                 "postgresql://u:hidden@127.0.0.1:1/x"], env=env)
    assert broken.exit_code == 1
    assert "hidden" not in broken.output


def test_cli_db_upgrade_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    r = runner.invoke(app, ["db", "upgrade", "--home", str(tmp_path / "home")],
                      env={"CAMBIST_DATABASE_URL": "", "COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert current_revision(f"sqlite:///{tmp_path / 'home' / 'cambist.db'}") == head_revision()
