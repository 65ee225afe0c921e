"""Allowances and pools shared through a real Redis by several wallets (one per
simulated gateway process) over one PostgreSQL journal: the grants are spent
allowance, then pool, then prepaid, exactly once in total; periods reset;
a restart (or Redis losing its data) rebuilds the counters from the ``usage``
table; the journal stays balanced; a process that cannot reach Redis hands
out no grant it has not claimed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.money import to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.grants import prepaid_micros
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.plans import DEFAULT_PLANS, Plan, PlanBook
from cambist.ledger.shared_wallet import SharedWallet
from cambist.store.db import migrate, open_engine
from cambist.store.schema import usage
from tests.services import postgres_database

T = "ten_acme"
ALLOWANCE, POOL, PREPAID = 100_000, 300_000, 1_000_000  # micro-dollars
GRANT = Plan("grant", 1000, 10**9, 1000, 10**9,
             daily_allowance=Decimal("0.10"), monthly_pool=Decimal("0.30"))
PLANS = PlanBook([*DEFAULT_PLANS, GRANT], {T: "grant"})
RESET_HOUR = 6


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    with postgres_database() as url:
        migrate(url)
        eng = open_engine(url)
        yield eng
        await eng.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(ts("2026-01-10T12:00:00"))


@pytest.fixture
async def journal(engine: AsyncEngine, clock: ManualClock) -> Journal:
    await Keyring(engine, clock, b"k" * 32).create_tenant("acme", T)
    j = Journal(engine, clock)
    assert await j.topup(T, Decimal("1.00"), "topup:1")
    return j


class Proc:
    """One simulated gateway process: its outbox, wallet and flusher."""

    def __init__(self, name: str, journal: Journal, redis: Redis, prefix: str, home: Path,
                 clock: ManualClock) -> None:
        self.clock = clock
        self.outbox = UsageOutbox(home / f"outbox-{name}.jsonl", offset_key=f"off:{name}")
        self.wallet = SharedWallet(journal, self.outbox, clock, redis, process=name,
                                   prefix=prefix, slack=Decimal("0.50"), plans=PLANS,
                                   reset_hour=RESET_HOUR)
        self.flusher = OutboxFlusher(self.outbox, journal.engine, journal,
                                     reporter=self.wallet, clock=clock)
        self.n = 0

    async def start(self) -> Proc:
        await self.wallet.load_books()
        await self.flusher.recover()
        await self.wallet.load()
        return self

    def record(self, rid: str, price: Decimal) -> UsageRecord:
        return UsageRecord(request_id=rid, tenant_id=T, key_id="key_1", model="m",
                           endpoint_id="ep", supplier="sim", prompt_tokens=10,
                           completion_tokens=5, reasoning_tokens=0, price=price,
                           compute_cost=Decimal(0), price_version=1, status="ok",
                           created_at=self.clock.now())


async def _sums(engine: AsyncEngine, since: float = 0.0) -> tuple[int, int, int]:
    """The usage table's allowance, pool and prepaid sums since ``since``."""
    c = usage.c
    q = select(func.coalesce(func.sum(c.allowance_micros), 0),
               func.coalesce(func.sum(c.pool_micros), 0),
               func.coalesce(func.sum(c.price_micros), 0)).where(c.tenant_id == T,
                                                                 c.created_at >= since)
    async with engine.connect() as conn:
        a, p, total = (await conn.execute(q)).one()
    return int(a), int(p), int(total) - int(a) - int(p)


async def _redis_int(redis: Redis, key: str) -> int:
    return int(await redis.get(key) or 0)


def _day_key(prefix: str, side: str, start: float, kind: str = "gused") -> str:
    return f"{prefix}:{kind}:{side}:{T}:{int(start)}"


async def _round(procs: list[Proc], price: Decimal) -> list[UsageRecord]:
    """Every process reserves ``price`` at once, claims, then settles it."""
    held = []
    for p in procs:
        p.n += 1
        held.append(p.wallet.reserve(T, price, f"{p.wallet._process}-{p.n}"))
    for p in procs:
        await p.wallet.push()
    out = []
    for p, r in zip(procs, held, strict=True):
        rec = p.record(f"req-{p.wallet._process}-{p.n}", price)
        p.wallet.settle(r, rec)
        out.append(rec)
    for p in procs:
        await p.wallet.push()
    return out


async def test_two_processes_spend_allowance_pool_prepaid_exactly_once(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path,
        clock: ManualClock) -> None:
    a, b = [await Proc(n, journal, redis, prefix, tmp_path, clock).start()
            for n in ("gw-a", "gw-b")]
    assert a.wallet.grants_left(T) == (Decimal("0.1"), Decimal("0.3"))
    # Both hold 0.08 at once: a claims 0.08 of the allowance, b the last 0.02
    # and 0.06 of the pool; each settles from its own claim.
    await _round([a, b], Decimal("0.08"))
    assert a.wallet.grants_left(T) == b.wallet.grants_left(T) == (Decimal(0), Decimal("0.24"))
    for i in range(5):  # 0.60 more: 0.24 from the pool, 0.36 prepaid
        await _round([a, b], Decimal("0.06"))
        if i == 2:
            await a.flusher.step(clock.now())  # a report in the middle
    await a.flusher.recover()
    await b.flusher.recover()
    for p in (a, b):
        await p.wallet.load()
    allowance, pool, prepaid = await _sums(journal.engine)
    assert (allowance, pool) == (ALLOWANCE, POOL)  # each granted exactly once
    assert prepaid == to_micros(Decimal("0.76")) - ALLOWANCE - POOL
    day, month = ts("2026-01-10T06:00:00"), ts("2026-01-01T00:00:00")
    assert await _redis_int(redis, _day_key(prefix, "a", day)) == ALLOWANCE
    assert await _redis_int(redis, _day_key(prefix, "p", month)) == POOL
    assert not await redis.hgetall(_day_key(prefix, "a", day, "gclaim"))
    assert not await redis.hgetall(_day_key(prefix, "p", month, "gclaim"))
    assert await redis.ttl(_day_key(prefix, "a", day)) > 0
    balance = await journal.tenant_balances()
    assert balance[T] == Decimal("1.00") - Decimal(prepaid) / 10**6
    for p in (a, b):
        assert p.wallet.balance(T) == balance[T]
        assert p.wallet.spendable(T) == balance[T]
    assert await journal.check() == []


async def test_spend_order_within_one_charge_and_records(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path,
        clock: ManualClock) -> None:
    a, b = [await Proc(n, journal, redis, prefix, tmp_path, clock).start()
            for n in ("gw-a", "gw-b")]
    [r1] = await _round([a], Decimal("0.35"))  # 0.10 allowance + 0.25 pool
    assert a.outbox.read(0)[0][-1].allowance_micros == 100_000
    assert a.outbox.read(0)[0][-1].pool_micros == 250_000
    await _round([b], Decimal("0.10"))  # 0.05 pool + 0.05 prepaid
    rec = b.outbox.read(0)[0][-1]
    assert (rec.allowance_micros, rec.pool_micros, prepaid_micros(rec)) == (0, 50_000, 50_000)
    assert r1.tenant_id == T
    assert b.wallet.spendable(T) == Decimal("0.95")
    await a.flusher.recover()
    await b.flusher.recover()
    assert await _sums(journal.engine) == (ALLOWANCE, POOL, 50_000)
    assert await journal.check() == []


async def test_periods_reset_at_the_reset_hour_and_month(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path,
        clock: ManualClock) -> None:
    clock.set(ts("2026-01-31T05:00:00"))
    a, b = [await Proc(n, journal, redis, prefix, tmp_path, clock).start()
            for n in ("gw-a", "gw-b")]
    await _round([a, b], Decimal("0.10"))  # allowance 0.10, pool 0.10
    assert b.wallet.grants_left(T) == (Decimal(0), Decimal("0.2"))
    clock.set(ts("2026-01-31T05:59:59"))
    assert a.wallet.grants_left(T) == (Decimal(0), Decimal("0.2"))
    clock.set(ts("2026-01-31T06:00:00"))  # a new allowance day, the same month
    assert a.wallet.grants_left(T) == (Decimal("0.1"), Decimal("0.2"))
    await _round([a, b], Decimal("0.10"))
    assert a.wallet.grants_left(T) == b.wallet.grants_left(T) == (Decimal(0), Decimal("0.1"))
    clock.set(ts("2026-02-01T00:00:00"))  # a new month, the same allowance day
    await a.flusher.recover()
    await b.flusher.recover()
    for p in (a, b):
        await p.wallet.load()
        assert p.wallet.grants_left(T) == (Decimal(0), Decimal("0.3"))
    await _round([a], Decimal("0.05"))
    await b.wallet.load()  # b learns of a's claim at its next sync
    assert b.wallet.grants_left(T) == (Decimal(0), Decimal("0.25"))
    clock.set(ts("2026-02-01T06:00:00"))
    assert b.wallet.grants_left(T) == (Decimal("0.1"), Decimal("0.25"))
    await a.flusher.recover()
    assert await _sums(journal.engine) == (2 * ALLOWANCE,
                                           to_micros(Decimal("0.25")), 0)
    assert await _sums(journal.engine, ts("2026-02-01T00:00:00")) == (0, 50_000, 0)
    assert await journal.check() == []


async def test_restart_and_lost_redis_rebuild_the_counters_from_usage(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path,
        clock: ManualClock) -> None:
    a, b = [await Proc(n, journal, redis, prefix, tmp_path, clock).start()
            for n in ("gw-a", "gw-b")]
    await _round([a, b], Decimal("0.04"))
    await a.flusher.recover()
    await _round([a, b], Decimal("0.04"))  # a's second charge stays in its outbox
    held = a.wallet.reserve(T, Decimal("0.01"), "in-flight")  # claimed when a dies
    await a.wallet.push()
    assert held.amount == Decimal("0.01")
    day, month = ts("2026-01-10T06:00:00"), ts("2026-01-01T00:00:00")
    assert await redis.hget(_day_key(prefix, "p", month, "gclaim"), "gw-a") is not None
    # kill -9 a; it restarts under its name and reports its outbox once.
    a2 = await Proc("gw-a", journal, redis, prefix, tmp_path, clock).start()
    assert await redis.hget(_day_key(prefix, "p", month, "gclaim"), "gw-a") is None
    await b.flusher.recover()
    await b.wallet.load()
    sums = await _sums(journal.engine)
    assert sums[:2] == (ALLOWANCE, 60_000)
    assert await _redis_int(redis, _day_key(prefix, "a", day)) == ALLOWANCE
    assert await _redis_int(redis, _day_key(prefix, "p", month)) == 60_000
    assert a2.wallet.grants_left(T) == b.wallet.grants_left(T) == (Decimal(0), Decimal("0.24"))
    # Redis loses everything: the counters come back from the usage table.
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
    await redis.delete(*keys)
    c = await Proc("gw-c", journal, redis, prefix, tmp_path, clock).start()
    assert await _redis_int(redis, _day_key(prefix, "a", day)) == ALLOWANCE
    assert await _redis_int(redis, _day_key(prefix, "p", month)) == 60_000
    assert c.wallet.grants_left(T) == (Decimal(0), Decimal("0.24"))
    await _round([c, b], Decimal("0.12"))
    await c.flusher.recover()
    await b.flusher.recover()
    assert (await _sums(journal.engine))[:2] == (ALLOWANCE, POOL)
    assert await journal.check() == []


async def test_without_redis_no_grant_is_handed_out_unclaimed(
        journal: Journal, tmp_path: Path, clock: ManualClock) -> None:
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        p = Proc("gw-x", journal, down, "cambist-test-down", tmp_path, clock)
        await p.wallet.load_books()
        await p.wallet.load()  # Redis does not answer: counted, no claim
        assert p.wallet.failures >= 1
        assert p.wallet.grants_left(T) == (Decimal("0.1"), Decimal("0.3"))
        r = p.wallet.reserve(T, Decimal("0.05"), "r1")
        await p.wallet.push()
        p.wallet.settle(r, p.record("req-1", Decimal("0.05")))
        rec = p.outbox.read(0)[0][-1]
        assert (rec.allowance_micros, rec.pool_micros) == (0, 0)  # fails closed
    finally:
        await down.aclose()
