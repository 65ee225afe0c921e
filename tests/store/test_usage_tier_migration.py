"""Revision 0008 adds ``usage.privacy_tier``: existing rows read ``standard``,
new rows may name any tier, and the downgrade removes the column, on SQLite
and on PostgreSQL (``tests/services.py`` rule: fails under ``CI=true``,
skips elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

import cambist.store
from cambist.store.db import sqlite_url, sync_url
from tests.services import postgres_database

_MIGRATIONS = Path(cambist.store.__file__).parent / "migrations"

_INSERT = (
    "INSERT INTO usage (request_id, tenant_id, key_id, model, prompt_tokens, "
    "completion_tokens, reasoning_tokens, price_micros, compute_cost_micros, "
    "price_version, status, created_at, latency_ms, stream{extra}) VALUES "
    "(:rid, 't', 'k', 'm', 1, 1, 0, 0, 0, 1, 'ok', 1.0, 0.0, false{extra_value})"
)


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "tier.db")
        return
    with postgres_database() as pg:
        yield pg


def test_0008_upgrade_fills_existing_rows_and_downgrades(url: str) -> None:
    cfg = _config(url)
    command.upgrade(cfg, "0007")
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(_INSERT.format(extra="", extra_value="")), {"rid": "before"})
        command.upgrade(cfg, "0008")
        col = {c["name"]: c for c in inspect(engine).get_columns("usage")}["privacy_tier"]
        assert col["nullable"] is False
        with engine.begin() as conn:
            conn.execute(text(_INSERT.format(extra="", extra_value="")), {"rid": "implicit"})
            conn.execute(text(_INSERT.format(extra=", privacy_tier",
                                             extra_value=", 'zero_retention'")),
                         {"rid": "explicit"})
            got = {rid: tier for rid, tier in conn.execute(text(
                "SELECT request_id, privacy_tier FROM usage"))}
        assert got == {"before": "standard", "implicit": "standard",
                       "explicit": "zero_retention"}
        command.downgrade(cfg, "0007")
        engine.dispose()  # SQLite's batch rebuild: reflect a fresh connection
        assert "privacy_tier" not in {c["name"] for c in inspect(engine).get_columns("usage")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM usage")).scalar_one() == 3
    finally:
        engine.dispose()
