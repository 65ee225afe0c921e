"""Revision 0009 adds ``usage.allowance_micros`` and ``usage.pool_micros``:
existing rows read 0 (all prepaid), new rows may carry a split, and the
downgrade removes both columns, on SQLite and on PostgreSQL
(``tests/services.py`` rule: fails under ``CI=true``, skips elsewhere)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text

from cambist.store.db import sync_url
from tests.store.test_usage_tier_migration import _INSERT, _config, url  # noqa: F401


def test_0009_upgrade_fills_existing_rows_and_downgrades(url: str) -> None:  # noqa: F811
    cfg = _config(url)
    command.upgrade(cfg, "0008")
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(_INSERT.format(extra="", extra_value="")), {"rid": "before"})
        command.upgrade(cfg, "0009")
        cols = {c["name"]: c for c in inspect(engine).get_columns("usage")}
        assert cols["allowance_micros"]["nullable"] is False
        assert cols["pool_micros"]["nullable"] is False
        with engine.begin() as conn:
            conn.execute(text(_INSERT.format(extra=", allowance_micros, pool_micros",
                                             extra_value=", 5, 7")), {"rid": "split"})
            got = {rid: (a, p) for rid, a, p in conn.execute(text(
                "SELECT request_id, allowance_micros, pool_micros FROM usage"))}
        assert got == {"before": (0, 0), "split": (5, 7)}
        command.downgrade(cfg, "0008")
        engine.dispose()  # SQLite's batch rebuild: reflect a fresh connection
        names = {c["name"] for c in inspect(engine).get_columns("usage")}
        assert not names & {"allowance_micros", "pool_micros"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM usage")).scalar_one() == 2
    finally:
        engine.dispose()
