"""Fixtures for the ledger tests: a migrated SQLite file per test, a manual clock."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.usage import UsageRecord
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.store.db import migrate, open_engine, sqlite_url


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database, copied for each test (migrating is the slow part)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(sqlite_url(path))
    return path


@pytest.fixture
def db_path(tmp_path: Path, template_db: Path) -> Path:
    path = tmp_path / "cambist.db"
    shutil.copy(template_db, path)
    return path


@pytest.fixture
async def engine(db_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = open_engine(sqlite_url(db_path))
    yield eng
    await eng.dispose()


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
