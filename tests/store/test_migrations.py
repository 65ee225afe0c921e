"""The Alembic migrations create exactly the tables of ``cambist.store.schema``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine

from cambist.store.db import migrate, sqlite_url
from cambist.store.schema import metadata


@pytest.fixture
def migrated(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "cambist.db"
    migrate(sqlite_url(path))
    engine = create_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def _columns(engine: Engine, table: str) -> dict[str, tuple[str, bool]]:
    return {
        c["name"]: (type(c["type"]).__name__, bool(c["nullable"]))
        for c in inspect(engine).get_columns(table)
    }


def test_tables_match_schema(migrated: Engine) -> None:
    reflected = set(inspect(migrated).get_table_names()) - {"alembic_version"}
    assert reflected == set(metadata.tables)


def test_columns_match_schema(migrated: Engine) -> None:
    insp = inspect(migrated)
    for name, table in metadata.tables.items():
        got = _columns(migrated, name)
        assert list(got) == [c.name for c in table.columns], name
        for col in table.columns:
            assert got[col.name][1] == col.nullable, f"{name}.{col.name} nullability"
        pk = insp.get_pk_constraint(name)["constrained_columns"]
        assert pk == [c.name for c in table.primary_key.columns], name
        fks = {
            (tuple(f["constrained_columns"]), f["referred_table"])
            for f in insp.get_foreign_keys(name)
        }
        want = {((fk.parent.name,), fk.column.table.name) for fk in table.foreign_keys}
        assert fks == want, name
        indexes = {(i["name"], tuple(i["column_names"])) for i in insp.get_indexes(name)}
        want_ix = {(i.name, tuple(c.name for c in i.columns)) for i in table.indexes}
        assert indexes == want_ix, name


def test_no_drift_per_alembic(migrated: Engine) -> None:
    with migrated.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    assert diff == []


def test_migrate_twice_is_a_noop(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    migrate(sqlite_url(path))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            before = conn.exec_driver_sql("SELECT sql FROM sqlite_master ORDER BY name").all()
            rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        migrate(sqlite_url(path))
        with engine.connect() as conn:
            after = conn.exec_driver_sql("SELECT sql FROM sqlite_master ORDER BY name").all()
            rev2 = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    finally:
        engine.dispose()
    assert before == after
    assert rev == rev2
    assert len(rev) == 1  # one head, the newest revision


def test_migrate_leaves_loggers_enabled(tmp_path: Path) -> None:
    log = logging.getLogger("cambist.test.migrations")
    assert not log.disabled
    migrate(sqlite_url(tmp_path / "log.db"))
    assert not log.disabled
