from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.billing import Wallet
from cambist.domain.clock import ManualClock
from cambist.domain.errors import Conflict, InsufficientCredit, InvalidRequest
from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import OutboxPosition, UsageOutbox
from cambist.ledger.wallet import TenantWallet, WalletRefresh

D = Decimal
Make = Callable[..., UsageRecord]


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[UsageOutbox]:
    box = UsageOutbox(tmp_path / "usage.outbox")
    yield box
    box.close()


@pytest.fixture
async def wallet(journal: Journal, outbox: UsageOutbox, clock: ManualClock) -> TenantWallet:
    w = TenantWallet(journal, outbox, clock)
    await w.load()
    return w


async def test_no_credit_means_no_reservation(wallet: TenantWallet, tenant: str) -> None:
    with pytest.raises(InsufficientCredit, match="cambist credits add"):
        wallet.reserve(tenant, D("0"), "req_1")


async def test_reserve_settle_release(
    wallet: TenantWallet, tenant: str, make_record: Make, outbox: UsageOutbox
) -> None:
    assert await wallet.topup(tenant, D("1"), "t1")
    checked: Wallet = wallet
    r = checked.reserve(tenant, D("0.4"), "req_1")
    assert r.amount == D("0.4") and r.tenant_id == tenant
    assert wallet.available(tenant) == D("0.6") and wallet.held(tenant) == D("0.4")
    wallet.settle(r, make_record("req_1", price="0.1234564"))
    assert wallet.balance(tenant) == D("0.876544")  # the charge rounds once, half up
    assert wallet.available(tenant) == D("0.876544") and wallet.held(tenant) == 0
    assert [r.request_id for r in outbox.pending(OutboxPosition("", 0))] == ["req_1"]
    r2 = wallet.reserve(tenant, D("0.5"), "req_2")
    wallet.release(r2)
    wallet.release(r2)  # a second release is harmless
    assert wallet.available(tenant) == D("0.876544")
    with pytest.raises(Conflict):
        wallet.settle(r2, make_record("req_2"))


async def test_insufficient_credit_message(wallet: TenantWallet, tenant: str) -> None:
    await wallet.topup(tenant, D("1"), "t1")
    wallet.reserve(tenant, D("0.75"), "a")
    with pytest.raises(InsufficientCredit) as info:
        wallet.reserve(tenant, D("0.5"), "b")
    msg = str(info.value)
    assert "$0.250000 available" in msg and "needs $0.500000" in msg
    assert f"cambist credits add {tenant}" in msg
    with pytest.raises(InvalidRequest):
        wallet.reserve(tenant, D("-1"), "c")


async def test_settle_checks_the_record(
    wallet: TenantWallet, tenant: str, make_record: Make
) -> None:
    await wallet.topup(tenant, D("1"), "t1")
    r = wallet.reserve(tenant, D("0.5"), "a")
    with pytest.raises(ValueError, match="for tenant"):
        wallet.settle(r, make_record("a", tenant_id="ten_other"))
    with pytest.raises(ValueError, match="negative"):
        wallet.settle(r, make_record("a", price="-0.1"))
    assert wallet.held(tenant) == D("0.5")


async def test_load_counts_unflushed_outbox_records(
    wallet: TenantWallet,
    journal: Journal,
    outbox: UsageOutbox,
    clock: ManualClock,
    engine: AsyncEngine,
    tenant: str,
    make_record: Make,
) -> None:
    await wallet.topup(tenant, D("2"), "t1")
    for i in range(3):
        r = wallet.reserve(tenant, D("0.5"), f"q{i}")
        wallet.settle(r, make_record(f"q{i}", price="0.25"))
    flusher = OutboxFlusher(outbox, engine, journal)
    await flusher.step(clock.now())
    r = wallet.reserve(tenant, D("0.5"), "q3")
    wallet.settle(r, make_record("q3", price="0.25"))  # still only in the outbox
    held = wallet.reserve(tenant, D("0.1"), "q4")
    restarted = TenantWallet(journal, outbox, clock)
    await restarted.load()
    assert restarted.balance(tenant) == D("1")
    await wallet.load()  # a reload keeps holds in flight
    assert wallet.balance(tenant) == D("1") and wallet.held(tenant) == D("0.1")
    wallet.release(held)
    await flusher.recover()
    assert await journal.tenant_balance(tenant) == D("1")


async def test_refresh_sees_other_processes(
    wallet: TenantWallet, journal: Journal, tenant: str, clock: ManualClock
) -> None:
    await journal.topup(tenant, D("3"), "cli-topup")  # e.g. from `cambist credits add`
    assert wallet.balance(tenant) == 0
    loop = WalletRefresh(wallet)
    await loop.step(clock.now())
    assert wallet.balance(tenant) == D("3")


async def test_refund_and_lease_charges_update_memory(
    wallet: TenantWallet, journal: Journal, tenant: str
) -> None:
    await wallet.topup(tenant, D("10"), "t1")
    assert not await wallet.topup(tenant, D("10"), "t1")
    assert await wallet.refund(tenant, D("0.5"), "rf1")
    assert await wallet.post_lease_cost("l1", "sim", tenant, D("2"), D("0.1"), 60.0)
    assert not await wallet.post_lease_cost("l1", "sim", tenant, D("2"), D("0.1"), 60.0)
    assert await wallet.post_lease_cost("l2", "sim", None, D("5"), D("0.1"), 60.0)
    assert wallet.balance(tenant) == D("8.3")
    assert await journal.tenant_balance(tenant) == D("8.3")
