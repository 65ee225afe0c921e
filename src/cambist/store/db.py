"""Opening the database: URL resolution, migrations, the async engine.

SQLite (``sqlite:///path``, the embedded default) or PostgreSQL
(``postgresql://``, ``postgres://``, ``postgresql+asyncpg://`` or
``postgresql+psycopg://``). Whatever driver the URL names, the application
runs on the async driver (aiosqlite, asyncpg) and Alembic migrates through the
sync one (sqlite3, psycopg).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, pool
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = [
    "DatabaseUnavailable",
    "async_url",
    "current_revision",
    "head_revision",
    "migrate",
    "open_engine",
    "redacted_url",
    "sqlite_url",
    "sync_url",
]

_MIGRATIONS = Path(__file__).parent / "migrations"
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


class DatabaseUnavailable(ConnectionError):
    """The database cannot be reached or its URL is not usable; the message
    names the URL (password hidden) and the reason."""


def sqlite_url(path: Path) -> str:
    """The async SQLAlchemy URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUnavailable(f"cannot read the database URL ({exc})") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":  # the Heroku-style alias
        parsed = parsed.set(drivername="postgresql")
        backend = "postgresql"
    if backend not in _ASYNC_DRIVERS:
        raise DatabaseUnavailable(
            f"unsupported database {backend!r} in {redacted_url(url)}; use sqlite:///PATH "
            "or postgresql://USER@HOST/DB"
        )
    return parsed


def async_url(url: str) -> str:
    """``url`` with the async driver (aiosqlite or asyncpg)."""
    parsed = _parse(url)
    driver = _ASYNC_DRIVERS[parsed.get_backend_name()]
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """``url`` with the sync driver Alembic uses (sqlite3 or psycopg)."""
    parsed = _parse(url)
    driver = _SYNC_DRIVERS[parsed.get_backend_name()]
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def redacted_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unreadable database URL>"


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    # ConfigParser interpolation: a literal '%' (URL-encoded passwords) is '%%'.
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the schema at ``url`` to the newest Alembic revision.

    Safe to call from several processes at once: on PostgreSQL the migration
    environment holds an advisory lock, so one process migrates and the others
    find the schema current. Raises :class:`DatabaseUnavailable` when the
    database cannot be reached."""
    try:
        command.upgrade(_config(url), "head")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot migrate the database at {redacted_url(url)}: {reason}"
        ) from None


def head_revision() -> str:
    """The newest Alembic revision shipped with this version."""
    head = ScriptDirectory.from_config(_config("sqlite://")).get_current_head()
    if head is None:
        raise RuntimeError("no Alembic revisions found")
    return head


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (``None``: never migrated)."""
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database at {redacted_url(url)}: {exc.orig}"
        ) from None
    finally:
        engine.dispose()


# Memory, measured with bench/gateway/bench.py --soak 100000 (bench/README.md
# "Memory"): sqlite3 keeps 128 prepared statements per connection by default,
# and the usage flush's multi-row INSERTs differ in row count, so that cache
# filled with large distinct statements (about 3 KB of native memory per
# request served); SQLite's 2 MiB page cache per pooled connection added more
# as the database grew. Statements are re-prepared instead (off the request
# path), and the OS page cache serves reads the smaller page cache misses.
_SQLITE_STATEMENT_CACHE = 0
_SQLITE_PAGE_CACHE_KIB = 512


_SQLITE_THREAD_NICE = 10
"""How much lower than the event loop's thread each SQLite connection's thread
runs (Linux: a per-thread nice value). The driver's thread shares the
gateway's core; at equal priority a usage flush held the loop back for a
millisecond or more at a time (the tail of requests in flight). Lower, it
runs whenever the loop waits (most of the time below saturation) and gets
about a tenth of the core when both want it."""


def _lower_thread_priority() -> int:
    """Lower the calling thread's priority (called in the driver's thread)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                       + _SQLITE_THREAD_NICE)
    return 0


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    if sys.platform.startswith("linux"):
        # A SQL function runs in the thread that owns the connection.
        dbapi_conn.create_function("cambist_lower_thread_priority", 0, _lower_thread_priority)
        cur.execute("SELECT cambist_lower_thread_priority()")
    # WAL lets the CLI and a second gateway read while the exchange writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA cache_size=-{_SQLITE_PAGE_CACHE_KIB}")
    cur.close()


def open_engine(url: str) -> AsyncEngine:
    """Create the async engine for ``url`` (call :func:`migrate` first)."""
    if async_url(url).startswith("postgresql"):
        # pre-ping: a server restart or failover costs one retry, not an error.
        return create_async_engine(async_url(url), pool_pre_ping=True, pool_size=10,
                                   max_overflow=20)
    engine = create_async_engine(async_url(url),
                                 connect_args={"cached_statements": _SQLITE_STATEMENT_CACHE})
    sync: Engine = engine.sync_engine
    event.listen(sync, "connect", _sqlite_pragmas)
    return engine
