from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import pytest

from cambist.domain.clock import ManualClock
from cambist.domain.errors import NotFound
from cambist.ledger.accounts import CASH, COMPUTE_COST, REVENUE_INFERENCE, REVENUE_LEASES
from cambist.ledger.journal import Entry, Journal

D = Decimal


async def test_post_balanced_entry(journal: Journal) -> None:
    assert await journal.post("k1", "manual", [("a", D("1.5")), ("b", D("-1.5"))], "memo")
    assert await journal.balance("a") == D("1.5")
    assert await journal.balance("b") == D("-1.5")
    assert await journal.balance("nobody") == 0
    assert await journal.check() == []


async def test_idempotency_key_posts_once(journal: Journal) -> None:
    lines = [("a", D("2")), ("b", D("-2"))]
    assert await journal.post("same", "manual", lines)
    assert not await journal.post("same", "manual", lines)
    assert await journal.balance("a") == D("2")


async def test_concurrent_posts_with_one_key_write_once(journal: Journal) -> None:
    lines = [("a", D("1")), ("b", D("-1"))]
    results = await asyncio.gather(*(journal.post("race", "manual", lines) for _ in range(8)))
    assert results.count(True) == 1
    assert await journal.balance("a") == D("1")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([("a", D("1"))], "at least two lines"),
        ([("a", D("1")), ("b", D("-0.5"))], "not balanced"),
        # Balanced before rounding, not after: each half micro rounds up.
        ([("a", D("0.0000005")), ("b", D("0.0000005")), ("c", D("-0.000001"))], "not balanced"),
        ([("a", 1.0), ("b", -1.0)], "must be a Decimal"),
    ],
)
async def test_invalid_entries_are_refused(journal: Journal, lines, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        await journal.post("bad", "manual", lines)
    assert await journal.balance("a") == 0


async def test_lines_are_rounded_once_half_up(journal: Journal) -> None:
    lines = [("a", D("0.0000015")), ("b", D("-0.0000015"))]
    assert await journal.post("r", "manual", lines)
    assert await journal.balance("a") == D("0.000002")
    assert await journal.balance("b") == D("-0.000002")


async def test_post_many_is_one_transaction(journal: Journal) -> None:
    good = Entry("g", "manual", [("a", D("1")), ("b", D("-1"))])
    bad = Entry("x", "manual", [("a", D("1")), ("b", D("-2"))])
    with pytest.raises(ValueError):
        await journal.post_many([good, bad])
    assert await journal.balance("a") == 0
    again = Entry("h", "manual", [("a", D("3")), ("c", D("-3"))])
    assert await journal.post_many([good, again]) == [True, True]
    assert await journal.post_many([good, again]) == [False, False]
    with pytest.raises(ValueError, match="repeat"):
        await journal.post_many([good, good])


async def test_balances_by_prefix(journal: Journal, tenant: str) -> None:
    await journal.topup(tenant, D("10"), "t1")
    await journal.post("x", "manual", [("tenant:ten_b", D("-1")), (CASH, D("1"))])
    assert await journal.balances("tenant:") == {
        "tenant:ten_acme": D("-10"),
        "tenant:ten_b": D("-1"),
    }
    assert await journal.tenant_balances() == {"ten_acme": D("10"), "ten_b": D("1")}
    assert await journal.balances("platform:") == {CASH: D("11")}
    assert await journal.balances("tenant_") == {}


async def test_topup_is_credit_normal(journal: Journal, tenant: str) -> None:
    assert await journal.topup(tenant, D("25"), "topup-1")
    assert not await journal.topup(tenant, D("25"), "topup-1")
    assert await journal.tenant_balance(tenant) == D("25")
    assert await journal.balance(CASH) == D("25")


async def test_topup_refuses_bad_input(journal: Journal, tenant: str) -> None:
    with pytest.raises(NotFound, match="no tenant"):
        await journal.topup("ten_ghost", D("1"), "t")
    with pytest.raises(ValueError, match="at least"):
        await journal.topup(tenant, D("0"), "t")
    with pytest.raises(ValueError, match="at least"):
        await journal.topup(tenant, D("-5"), "t")


async def test_refund_gives_credit_back(journal: Journal, tenant: str) -> None:
    await journal.topup(tenant, D("5"), "t")
    assert await journal.refund(tenant, D("2"), "rf-1")
    assert not await journal.refund(tenant, D("2"), "rf-1")
    assert await journal.tenant_balance(tenant) == D("7")
    assert await journal.balance(REVENUE_INFERENCE) == D("2")
    with pytest.raises(ValueError, match="reverses revenue"):
        await journal.refund(tenant, D("1"), "rf-2", revenue_account=CASH)


async def test_lease_cost_platform_pool(journal: Journal) -> None:
    posted = await journal.post_lease_cost("lease_1", "lambda", None, D("3.20"), D("0.1"), 100.0)
    assert posted
    assert await journal.balance(COMPUTE_COST) == D("3.2")
    assert await journal.balance("supplier:lambda:payable") == D("-3.2")
    assert await journal.balance(REVENUE_LEASES) == 0
    again = await journal.post_lease_cost("lease_1", "lambda", None, D("3.20"), D("0.1"), 100.0)
    assert not again


async def test_lease_cost_charges_owner_with_fee(journal: Journal, tenant: str) -> None:
    await journal.topup(tenant, D("100"), "t")
    assert await journal.post_lease_cost(
        "lease_2", "runpod", tenant, D("2.000001"), D("0.15"), 3600.5
    )
    # 2.000001 × 1.15 = 2.30000115 → 2.300001 after the one rounding
    assert await journal.tenant_balance(tenant) == D("100") - D("2.300001")
    assert await journal.balance(REVENUE_LEASES) == D("-2.300001")
    async with journal.engine.connect() as conn:
        keys = (
            await conn.exec_driver_sql(
                "SELECT idempotency_key, kind FROM journal_entries ORDER BY id"
            )
        ).all()
    assert ("lease:lease_2:3600.500", "lease_cost") in keys
    assert ("lease-charge:lease_2:3600.500", "lease_charge") in keys
    with pytest.raises(ValueError, match="negative"):
        await journal.post_lease_cost("lease_3", "runpod", tenant, D("-1"), D("0"), 1.0)


async def test_entries_carry_clock_time(engine, clock: ManualClock) -> None:  # type: ignore[no-untyped-def]
    journal = Journal(engine, clock)
    clock.advance(42)
    await journal.post("t", "manual", [("a", D("1")), ("b", D("-1"))])
    async with engine.connect() as conn:
        ts = (await conn.exec_driver_sql("SELECT created_at FROM journal_entries")).scalar()
    assert ts == clock.now()


async def test_check_reports_every_violation(
    journal: Journal, corrupt: Callable[..., None]
) -> None:
    await journal.post("ok", "manual", [("a", D("1")), ("b", D("-1"))])
    corrupt(
        "INSERT INTO journal_entries (id, idempotency_key, kind, memo, created_at)"
        " VALUES (50, 'lopsided', 'manual', '', 0)",
        "INSERT INTO journal_lines (entry_id, account, amount_micros) VALUES (50, 'a', 7)",
        "INSERT INTO journal_lines (entry_id, account, amount_micros) VALUES (99, 'z', -3)",
        "INSERT INTO usage VALUES ('req_lost', 't1', 'k', 'm', NULL, NULL, 1, 1, 0, 500, 0,"
        " 1, 'ok', 0, 0, NULL, FALSE, 'standard', 0, 0)",
        "INSERT INTO journal_entries (id, idempotency_key, kind, memo, created_at)"
        " VALUES (60, 'usage:req_ghost', 'usage', '', 0)",
        "INSERT INTO journal_lines (entry_id, account, amount_micros)"
        " VALUES (60, 'tenant:t1', 5), (60, 'platform:revenue:inference', -5)",
        "INSERT INTO usage VALUES ('req_off', 't1', 'k', 'm', NULL, NULL, 1, 1, 0, 900, 0,"
        " 1, 'ok', 0, 0, NULL, FALSE, 'standard', 0, 0)",
        "INSERT INTO journal_entries (id, idempotency_key, kind, memo, created_at)"
        " VALUES (70, 'usage:req_off', 'usage', '', 0)",
        "INSERT INTO journal_lines (entry_id, account, amount_micros)"
        " VALUES (70, 'tenant:t1', 800), (70, 'platform:revenue:inference', -800)",
    )
    problems = await journal.check()
    text = "\n".join(problems)
    assert "entry 50 (lopsided) is not balanced" in text
    assert "entry 50 (lopsided) has 1 line(s)" in text
    assert "line" in text and "entry 99, which does not exist" in text
    assert "All journal lines sum to 4 micro-dollars" in text
    assert "Usage row req_lost charges 500 micro-dollars but has no journal entry" in text
    assert "entry 60 (usage:req_ghost) has no usage row" in text
    assert "Usage row req_off has price 900" in text and "charges its tenant 800" in text
    assert len(problems) == 7
