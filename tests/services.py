"""External services for tests (PostgreSQL, Redis), decided in one place.

The rule: a test that needs a service which is not reachable **fails** when
``CI=true`` (a CI job that silently skips its PostgreSQL tests proves nothing)
and is **skipped** with a message naming the fix everywhere else.

Where the services are: ``CAMBIST_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``, a database the tests may
connect to and create databases from) and ``CAMBIST_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``).

Isolation on a shared server: :func:`postgres_database` creates a database
with a unique name (``cambist_test_<epoch>_<random>``) and drops it afterwards
(``WITH (FORCE)``), so CI jobs and developers never see each other's rows.
Databases that a crashed run left behind are dropped once they are a day old.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "DB_PREFIX",
    "database_name",
    "in_ci",
    "postgres_database",
    "postgres_server_url",
    "redis_url",
    "require_postgres",
    "require_redis",
    "service_missing",
    "with_database",
]

DB_PREFIX = "cambist_test_"
_STALE_S = 24 * 3600
_checked: dict[str, str | None] = {}  # service -> None (reachable) or why not


def in_ci() -> bool:
    """Whether this run is a CI run (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def service_missing(service: str, reason: str) -> NoReturn:
    """Fail (CI) or skip (elsewhere) a test that needs ``service``."""
    message = f"{service} is not available ({reason})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(f"{message}; start it or set CAMBIST_TEST_{service.upper()}_URL")


def postgres_server_url() -> str:
    """The plain ``postgresql://`` URL of the test server's maintenance database."""
    return os.environ.get("CAMBIST_TEST_POSTGRES_URL",
                          "postgresql://postgres@127.0.0.1:5432/test")


def redis_url() -> str:
    """The URL of the test Redis."""
    return os.environ.get("CAMBIST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _postgres_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "the psycopg package is not installed; pip install -e '.[test]'"
    try:
        with psycopg.connect(postgres_server_url(), connect_timeout=3, autocommit=True) as c:
            c.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        return f"cannot connect to {_safe(postgres_server_url())}: {reason}"
    return None


def require_postgres() -> str:
    """The server URL if PostgreSQL answers, else fail/skip per the CI rule."""
    if "postgres" not in _checked:
        _checked["postgres"] = _postgres_problem()
    problem = _checked["postgres"]
    if problem is not None:
        service_missing("postgres", problem)
    return postgres_server_url()


def _redis_problem() -> str | None:
    parts = urlsplit(redis_url())
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379),
                                      timeout=3) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return f"cannot connect to {redis_url()}: {exc}"
    if not reply.startswith((b"+PONG", b"-NOAUTH")):
        return f"{redis_url()} answered {reply[:40]!r} to PING"
    return None


def require_redis() -> str:
    """The Redis URL if Redis answers PING, else fail/skip per the CI rule."""
    if "redis" not in _checked:
        _checked["redis"] = _redis_problem()
    problem = _checked["redis"]
    if problem is not None:
        service_missing("redis", problem)
    return redis_url()


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def with_database(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    parts = urlsplit(server_url)
    return parts._replace(path=f"/{name}").geturl()


def _drop_stale(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (DB_PREFIX + "%",)
    ).fetchall()
    cutoff = time.time() - _STALE_S
    for (name,) in rows:
        try:
            born = int(name[len(DB_PREFIX):].split("_", 1)[0])
        except ValueError:
            continue
        if born < cutoff:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_database(template: str | None = None) -> Iterator[str]:
    """A fresh, uniquely named database on the test server (dropped on exit);
    yields its plain ``postgresql://`` URL. ``template`` copies an existing
    database (fast: no migration per test)."""
    import psycopg

    server = require_postgres()
    name = f"{DB_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        if template is None:
            _drop_stale(conn)
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    """The database name in a PostgreSQL URL."""
    return urlsplit(url).path.lstrip("/")
