"""Revision 0010 adds ``api_keys.lineage``: existing keys read NULL (each is
the first of its chain), new rows may name a lineage, and the downgrade
removes the column, on SQLite and on PostgreSQL (``tests/services.py`` rule)."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text

from cambist.store.db import sync_url
from tests.store.test_usage_tier_migration import _config, url  # noqa: F401

_INSERT = ("INSERT INTO api_keys (id, tenant_id, scope, name, prefix, secret_hash, "
           "created_at{extra}) VALUES (:id, NULL, 'admin', '', 'cb-x', :id, 1.0{value})")


def test_0010_adds_a_nullable_lineage_and_downgrades(url: str) -> None:  # noqa: F811
    cfg = _config(url)
    command.upgrade(cfg, "0009")
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(_INSERT.format(extra="", value="")), {"id": "key_old"})
        command.upgrade(cfg, "0010")
        cols = {c["name"]: c for c in inspect(engine).get_columns("api_keys")}
        assert cols["lineage"]["nullable"] is True
        with engine.begin() as conn:
            conn.execute(text(_INSERT.format(extra=", lineage", value=", 'key_old'")),
                         {"id": "key_new"})
            got = dict(conn.execute(text("SELECT id, lineage FROM api_keys")).all())
        assert got == {"key_old": None, "key_new": "key_old"}
        command.downgrade(cfg, "0009")
        engine.dispose()  # SQLite's batch rebuild: reflect a fresh connection
        assert "lineage" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 2
    finally:
        engine.dispose()
