"""Fixtures for the ledger tests: a fresh migrated database per test on each
backend (SQLite, and PostgreSQL under the CI rule of ``tests/services.py``),
a manual clock.

Isolation: SQLite copies a migrated template file into the test's temporary
directory; PostgreSQL migrates one uniquely named template database per
session and gives each test its own ``CREATE DATABASE ... TEMPLATE`` copy,
dropped after the test.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from decimal import Decimal
from itertools import count

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.usage import UsageRecord
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.store.db import migrate, open_engine, sqlite_url, sync_url
from tests.services import database_name, postgres_database

FreshDatabase = Callable[[], AbstractContextManager[str]]
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend a ledger test runs on."""
    return str(request.param)


@pytest.fixture(scope="session")
def fresh_database(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FreshDatabase]:
    """Factory: each call is a context manager yielding the URL of a new,
    migrated, private database (migrating once per session is the slow part)."""
    if backend == "sqlite":
        root = tmp_path_factory.mktemp("ledger-db")
        template = root / "template.db"
        migrate(sqlite_url(template))
        numbers = count()

        @contextmanager
        def sqlite_copy() -> Iterator[str]:
            path = root / f"db-{next(numbers)}.db"
            shutil.copy(template, path)
            yield sqlite_url(path)

        yield sqlite_copy
        return
    with postgres_database() as template_url:
        migrate(template_url)
        name = database_name(template_url)
        yield lambda: postgres_database(template=name)


@pytest.fixture
def database_url(fresh_database: FreshDatabase) -> Iterator[str]:
    """The URL of this test's private database."""
    with fresh_database() as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = open_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def corrupt(database_url: str) -> Callable[..., None]:
    """Run raw SQL with foreign keys off (to plant broken rows for the checks)."""

    def run(*sql: str) -> None:
        if database_url.startswith("sqlite"):
            import sqlite3

            con = sqlite3.connect(sync_url(database_url).removeprefix("sqlite:///"))
            try:
                for stmt in sql:
                    con.execute(stmt)
                con.commit()
            finally:
                con.close()
            return
        import psycopg

        plain = sync_url(database_url).replace("+psycopg", "")
        with psycopg.connect(plain) as pg:
            pg.execute("SET session_replication_role = replica")  # no FK triggers
            for stmt in sql:
                pg.execute(stmt)  # type: ignore[call-overload]

    return run


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def journal(engine: AsyncEngine, clock: ManualClock) -> Journal:
    return Journal(engine, clock)


@pytest.fixture
def keyring(engine: AsyncEngine, clock: ManualClock) -> Keyring:
    return Keyring(engine, clock, b"k" * 32)


@pytest.fixture
async def tenant(keyring: Keyring) -> str:
    return await keyring.create_tenant("acme", "ten_acme")


def _record(
    request_id: str,
    tenant_id: str = "ten_acme",
    price: str = "0.001",
    *,
    created_at: float = 1_767_225_600.0,
    model: str = "llama-3-8b",
) -> UsageRecord:
    """A usage record for tests."""
    return UsageRecord(
        request_id=request_id,
        tenant_id=tenant_id,
        key_id="key_1",
        model=model,
        endpoint_id="ep_1",
        supplier="sim",
        prompt_tokens=100,
        completion_tokens=50,
        reasoning_tokens=0,
        price=Decimal(price),
        compute_cost=Decimal("0.0002"),
        price_version=1,
        status="ok",
        created_at=created_at,
    )


@pytest.fixture
def make_record():  # type: ignore[no-untyped-def]
    """Factory fixture: ``make_record(request_id, tenant_id=..., price=...)``."""
    return _record
