"""Opening the database: URL resolution, migrations, the async engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["async_url", "migrate", "open_engine", "sqlite_url"]

_MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(path: Path) -> str:
    """The async SQLAlchemy URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def async_url(url: str) -> str:
    """Turn a plain database URL into its async-driver form."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def _sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


def migrate(url: str) -> None:
    """Bring the schema at ``url`` to the newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", _sync_url(url))
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the CLI and a second gateway read while the exchange writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(url: str) -> AsyncEngine:
    """Create the async engine for ``url`` (call :func:`migrate` first)."""
    engine = create_async_engine(async_url(url))
    if engine.dialect.name == "sqlite":
        sync: Engine = engine.sync_engine
        event.listen(sync, "connect", _sqlite_pragmas)
    return engine
