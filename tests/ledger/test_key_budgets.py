"""Per-key spend budgets (cambist.ledger.budgets): UTC periods, seeding from
stored usage and the outbox, the hard stop, one soft alert per period across
processes, and the reset at the next period, on a manual clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.errors import InvalidRequest, KeyBudgetExceeded, NotFound
from cambist.domain.usage import UsageRecord
from cambist.ledger.budgets import KeyBudgetRefresh, KeyBudgets, period_bounds
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.ledger.outbox import UsageOutbox
from cambist.store.schema import events

D = Decimal
Make = Callable[..., UsageRecord]
JAN_1 = 1_767_225_600.0  # 2026-01-01T00:00Z, the ManualClock's start
FEB_1 = dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()


def _ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()  # type: ignore[misc]


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[UsageOutbox]:
    box = UsageOutbox(tmp_path / "usage.outbox")
    yield box
    box.close()


@pytest.fixture
async def key(keyring: Keyring, tenant: str) -> str:
    key_id, _ = await keyring.create_key(tenant, "inference", "app")
    return key_id


@pytest.fixture
async def budgets(engine: AsyncEngine, clock: ManualClock, outbox: UsageOutbox) -> KeyBudgets:
    b = KeyBudgets(engine, clock, outbox)
    await b.load()
    return b


def _rec(make: Make, rid: str, key: str, price: str, at: float = JAN_1) -> UsageRecord:
    return make(rid, price=price, created_at=at)._replace(key_id=key)


async def _alerts(engine: AsyncEngine) -> list[dict]:
    async with engine.connect() as conn:
        q = select(events).where(events.c.kind == "key.budget_alert")
        return [dict(r._mapping) for r in await conn.execute(q)]


def test_periods_are_utc_calendar_days_and_months() -> None:
    t = _ts(2026, 12, 31, 23, 59, 59)
    assert period_bounds(t, "day") == (_ts(2026, 12, 31), _ts(2027, 1, 1))
    assert period_bounds(t, "month") == (_ts(2026, 12, 1), _ts(2027, 1, 1))
    assert period_bounds(_ts(2027, 1, 1), "month") == (_ts(2027, 1, 1), _ts(2027, 2, 1))
    assert period_bounds(_ts(2028, 2, 29, 12), "month") == (_ts(2028, 2, 1), _ts(2028, 3, 1))


async def test_a_key_without_a_budget_is_never_refused(budgets: KeyBudgets, key: str) -> None:
    budgets.check(key, D("1000000"))
    assert budgets.remaining(key) is None and budgets.spent(key) == 0


async def test_spend_is_seeded_from_stored_usage_and_the_outbox(
    engine: AsyncEngine, journal: Journal, clock: ManualClock, outbox: UsageOutbox,
    keyring: Keyring, tenant: str, key: str, make_record: Make,
) -> None:
    other, _ = await keyring.create_key(tenant, "inference", "other")
    clock.set(_ts(2026, 1, 20))
    flusher = OutboxFlusher(outbox, engine, journal, clock=clock)
    for rec in (_rec(make_record, "r1", key, "1.25", _ts(2026, 1, 3)),
                _rec(make_record, "r2", key, "0.50", _ts(2026, 1, 19)),
                _rec(make_record, "r0", key, "9", _ts(2025, 12, 31, 23, 59)),  # last period
                _rec(make_record, "r3", other, "7", _ts(2026, 1, 5))):  # another key
        outbox.append(rec)
    await flusher.recover()
    outbox.append(_rec(make_record, "r4", key, "0.25", _ts(2026, 1, 19)))  # not flushed yet
    budgets = KeyBudgets(engine, clock, outbox)
    await budgets.set_budget(key, D("5"), period="month")
    assert budgets.spent(key) == D("2.00")
    assert budgets.remaining(key) == D("3.00")
    await flusher.step(clock.now())  # flushed: counted once, not twice
    await budgets.load()
    assert budgets.spent(key) == D("2.00")
    await budgets.set_budget(key, D("5"), period="day")  # today, 2026-01-20: nothing yet
    assert budgets.spent(key) == 0
    assert budgets.budget(other) is None


async def test_hard_stop_refuses_at_the_limit_and_past_it(
    budgets: KeyBudgets, key: str, make_record: Make,
) -> None:
    await budgets.set_budget(key, D("1.00"), period="day")
    budgets.check(key, D("1.00"))  # exactly what is left: allowed
    budgets.record(_rec(make_record, "r1", key, "0.60"))
    budgets.check(key, D("0.40"))
    with pytest.raises(KeyBudgetExceeded) as refused:
        budgets.check(key, D("0.41"))  # the hold would go past the limit
    exc = refused.value
    assert exc.status == 402 and exc.code == "key_budget_exceeded"
    assert "$1 per day" in exc.message and "2026-01-02T00:00:00Z" in exc.message
    budgets.record(_rec(make_record, "r2", key, "0.40"))
    assert budgets.remaining(key) == 0
    with pytest.raises(KeyBudgetExceeded):
        budgets.check(key, D("0"))  # spent >= limit: even a free request is refused


async def test_the_budget_resets_at_the_next_period(
    budgets: KeyBudgets, clock: ManualClock, key: str, make_record: Make,
) -> None:
    await budgets.set_budget(key, D("1"), period="month")
    budgets.record(_rec(make_record, "r1", key, "1", _ts(2026, 1, 31, 23, 59)))
    clock.set(_ts(2026, 1, 31, 23, 59, 59))
    with pytest.raises(KeyBudgetExceeded, match="2026-02-01T00:00:00Z"):
        budgets.check(key, D("0.01"))
    clock.set(FEB_1)
    budgets.check(key, D("0.01"))
    assert budgets.remaining(key) == D("1") and budgets.spent(key) == 0
    # A request that arrived in January and settles in February is January's.
    budgets.record(_rec(make_record, "r2", key, "0.3", FEB_1))
    budgets.record(_rec(make_record, "r3", key, "0.5", _ts(2026, 1, 31, 23, 59, 30)))
    assert budgets.spent(key) == D("0.3")


async def test_soft_alert_fires_once_per_period_across_processes(
    engine: AsyncEngine, clock: ManualClock, outbox: UsageOutbox, budgets: KeyBudgets,
    key: str, make_record: Make, caplog: pytest.LogCaptureFixture,
) -> None:
    await budgets.set_budget(key, D("5"), D("4"), "day")
    other = KeyBudgets(engine, clock)  # a second process on the same store
    await other.load()  # it sees the budget before any alert was sent
    budgets.record(_rec(make_record, "r1", key, "3.99"))
    assert await budgets.send_alerts() == 0
    budgets.record(_rec(make_record, "r2", key, "0.01"))
    with caplog.at_level("WARNING", logger="cambist.ledger.budgets"):
        assert await budgets.send_alerts() == 1
    assert key in caplog.text
    budgets.record(_rec(make_record, "r3", key, "0.5"))
    assert await budgets.send_alerts() == 0
    other.record(_rec(make_record, "r4", key, "4.5"))  # its own view crosses too
    assert await other.send_alerts() == 0  # the stored compare-and-set: already sent
    await KeyBudgetRefresh(other).step(clock.now())
    [event] = await _alerts(engine)
    assert event["subject"] == key and event["data"]["period"] == "day"
    assert event["data"]["alert"] == "4" and event["data"]["limit"] == "5"
    # Same PUT again: nothing changed, so the alert does not fire again.
    await budgets.set_budget(key, D("5"), D("4"), "day")
    budgets.record(_rec(make_record, "r5", key, "0.01"))
    assert await budgets.send_alerts() == 0
    # The next day: a fresh period, a fresh alert.
    clock.set(_ts(2026, 1, 2, 1))
    budgets.record(_rec(make_record, "r6", key, "4.2", clock.now()))
    assert await budgets.send_alerts() == 1
    assert len(await _alerts(engine)) == 2


async def test_budget_changes_reach_another_process_on_refresh(
    engine: AsyncEngine, clock: ManualClock, budgets: KeyBudgets, key: str,
) -> None:
    other = KeyBudgets(engine, clock)
    await other.load()
    await budgets.set_budget(key, D("0"), period="month")
    with pytest.raises(KeyBudgetExceeded):
        budgets.check(key, D("0.000001"))
    other.check(key, D("0.000001"))  # not reloaded yet
    await KeyBudgetRefresh(other).step(clock.now())
    with pytest.raises(KeyBudgetExceeded):
        other.check(key, D("0.000001"))
    await budgets.set_budget(key, None)
    await other.load()
    assert other.budget(key) is None and budgets.budget(key) is None


@pytest.mark.parametrize(("limit", "alert", "period", "param"), [
    ("-1", None, "month", "limit"),
    ("5", "-1", "month", "alert"),
    ("5", "6", "month", "alert"),
    ("5", None, "week", "period"),
    (None, "1", "month", "alert"),
    ("NaN", None, "month", "limit"),
    ("1e12", None, "month", "limit"),
])
async def test_invalid_budgets_are_refused(
    budgets: KeyBudgets, key: str, limit: str | None, alert: str | None, period: str,
    param: str,
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await budgets.set_budget(key, None if limit is None else D(limit),
                                 None if alert is None else D(alert), period)
    assert refused.value.param == param
    assert budgets.budget(key) is None


async def test_unknown_key_is_not_found(budgets: KeyBudgets) -> None:
    with pytest.raises(NotFound):
        await budgets.set_budget("key_nope", D("1"))


async def test_rotation_keeps_the_budget_and_the_spend(
    engine: AsyncEngine, journal: Journal, clock: ManualClock, outbox: UsageOutbox,
    keyring: Keyring, tenant: str, key: str, make_record: Make,
) -> None:
    clock.set(_ts(2026, 1, 20))
    flusher = OutboxFlusher(outbox, engine, journal, clock=clock)
    budgets = KeyBudgets(engine, clock, outbox)
    await budgets.set_budget(key, D("5"), D("2"), "month")
    outbox.append(_rec(make_record, "r1", key, "1.50", _ts(2026, 1, 3)))
    await flusher.recover()  # stored
    outbox.append(_rec(make_record, "r2", key, "0.75", _ts(2026, 1, 19)))  # still in the outbox
    await budgets.load()
    budgets.record(_rec(make_record, "r3", key, "0.25", _ts(2026, 1, 20)))  # crosses the alert
    assert await budgets.send_alerts() == 1

    new, _ = await keyring.rotate(key)
    await budgets.load()
    assert budgets.budget(key) is None  # revoked: its budget is its successor's now
    b = budgets.budget(new)
    assert b is not None and (b.limit_micros, b.alert_micros, b.period) == (5_000_000,
                                                                             2_000_000, "month")
    assert budgets.spent(new) == D("2.25")  # stored + outbox; r3 is not flushed
    assert budgets.remaining(new) == D("2.75")
    # A request of the old key still in flight settles against the new key's budget.
    budgets.record(_rec(make_record, "r4", key, "0.75", clock.now()))
    assert budgets.spent(new) == D("3.00")
    with pytest.raises(KeyBudgetExceeded):
        budgets.check(new, D("2.01"))
    assert await budgets.send_alerts() == 0  # this month's alert was already sent

    # A second rotation keeps the whole chain's spend; so does another process.
    await flusher.recover()
    newer, _ = await keyring.rotate(new)
    other = KeyBudgets(engine, clock, outbox)
    await other.load()
    assert other.spent(newer) == D("2.25")  # r1, r2 stored; r3, r4 were never in the outbox
    other.record(_rec(make_record, "r5", newer, "1", clock.now()))
    assert other.spent(newer) == D("3.25")
    # The next month starts from nothing, as for any key.
    clock.set(FEB_1)
    assert other.spent(newer) == 0 and other.remaining(newer) == D("5")


async def test_rotating_a_key_without_a_budget_leaves_none(
    budgets: KeyBudgets, keyring: Keyring, key: str,
) -> None:
    new, _ = await keyring.rotate(key)
    await budgets.load()
    assert budgets.budget(new) is None
    budgets.check(new, D("1000"))
