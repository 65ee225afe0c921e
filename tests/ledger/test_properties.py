"""Property tests: random sequences of top-ups, reservations, settlements,
releases, lease postings, refunds, flushes and crashes keep the books whole."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cambist.domain.billing import Reservation
from cambist.domain.clock import ManualClock
from cambist.domain.errors import InsufficientCredit
from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.wallet import TenantWallet
from cambist.store.db import open_engine
from tests.ledger.conftest import FreshDatabase

TENANTS = ("ten_a", "ten_b", "ten_c")
micros = st.integers(min_value=1, max_value=5_000_000).map(lambda m: Decimal(m) / 1_000_000)
fraction = st.integers(min_value=0, max_value=10**9).map(lambda n: Decimal(n) / 10**9)
tenant_ix = st.integers(min_value=0, max_value=len(TENANTS) - 1)
op = st.one_of(
    st.tuples(st.just("topup"), tenant_ix, micros),
    st.tuples(st.just("reserve"), tenant_ix, micros),
    st.tuples(st.just("settle"), st.integers(0, 20), fraction),
    st.tuples(st.just("release"), st.integers(0, 20)),
    st.tuples(st.just("lease"), st.none() | tenant_ix, micros, fraction),
    st.tuples(st.just("refund"), tenant_ix, micros),
    st.just(("flush",)),
    st.just(("refresh",)),
    st.tuples(st.just("crash"), st.booleans()),
)


@dataclass
class World:
    root: Path
    clock: ManualClock
    journal: Journal
    outbox: UsageOutbox
    wallet: TenantWallet
    flusher: OutboxFlusher
    open: list[Reservation] = field(default_factory=list)
    n: int = 0

    def fresh_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    async def restart(self, recover_first: bool) -> None:
        """The process dies: in-flight holds vanish, unflushed records stay on disk."""
        self.outbox.close()
        self.outbox = UsageOutbox(self.root / "usage.outbox")
        self.wallet = TenantWallet(self.journal, self.outbox, self.clock)
        self.flusher = OutboxFlusher(self.outbox, self.journal.engine, self.journal)
        self.open.clear()
        if recover_first:
            await self.flusher.recover()
        await self.wallet.load()


def _record(w: World, res: Reservation, frac: Decimal) -> UsageRecord:
    return UsageRecord(
        request_id=w.fresh_id("req"),
        tenant_id=res.tenant_id,
        key_id="key",
        model="m",
        endpoint_id=None,
        supplier="sim",
        prompt_tokens=10,
        completion_tokens=5,
        reasoning_tokens=0,
        price=res.amount * frac,
        compute_cost=Decimal("0"),
        price_version=1,
        status="ok",
        created_at=w.clock.now(),
    )


async def _apply(w: World, step: tuple) -> None:  # type: ignore[type-arg]
    kind = step[0]
    w.clock.advance(1)
    if kind == "topup":
        await w.wallet.topup(TENANTS[step[1]], step[2], w.fresh_id("top"))
    elif kind == "reserve":
        with contextlib.suppress(InsufficientCredit):  # refused: nothing to track
            w.open.append(w.wallet.reserve(TENANTS[step[1]], step[2], w.fresh_id("r")))
    elif kind == "settle" and w.open:
        res = w.open.pop(step[1] % len(w.open))
        w.wallet.settle(res, _record(w, res, step[2]))  # charge ≤ reservation
    elif kind == "release" and w.open:
        w.wallet.release(w.open.pop(step[1] % len(w.open)))
    elif kind == "lease":
        owner = None if step[1] is None else TENANTS[step[1]]
        fee = step[3]
        amount = step[2]
        if owner is not None:  # deploy stops leases a tenant cannot pay for
            amount = min(amount, w.wallet.available(owner) / (1 + fee))
            amount = amount.quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
        await w.wallet.post_lease_cost(
            w.fresh_id("lease"), "sim", owner, amount, fee, w.clock.now()
        )
    elif kind == "refund":
        await w.wallet.refund(TENANTS[step[1]], step[2], w.fresh_id("rf"))
    elif kind == "flush":
        await w.flusher.step(w.clock.now())
    elif kind == "refresh":  # what WalletRefresh does, with records still unflushed
        await w.wallet.load()
    elif kind == "crash":
        await w.restart(step[1])


async def _scenario(url: str, steps: list[tuple]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = open_engine(url)
        clock = ManualClock()
        journal = Journal(engine, clock)
        keyring = Keyring(engine, clock, b"s" * 32)
        for t in TENANTS:
            await keyring.create_tenant(t, t)
        outbox = UsageOutbox(root / "usage.outbox")
        wallet = TenantWallet(journal, outbox, clock)
        await wallet.load()
        w = World(
            root,
            clock,
            journal,
            outbox,
            wallet,
            OutboxFlusher(outbox, engine, journal, rotate_bytes=2000),
        )
        try:
            for step in steps:
                await _apply(w, step)
            await w.flusher.recover()
            await _check_books(w)
        finally:
            w.outbox.close()
            await engine.dispose()


async def _check_books(w: World) -> None:
    assert await w.journal.check() == []
    everything = await w.journal.balances("")
    assert sum(everything.values(), Decimal(0)) == 0
    booked = await w.journal.tenant_balances()
    for t in TENANTS:
        assert booked.get(t, Decimal(0)) == w.wallet.balance(t), t
        assert w.wallet.balance(t) >= 0, t
        assert w.wallet.available(t) >= 0, t
    reloaded = TenantWallet(w.journal, w.outbox, w.clock)
    await reloaded.load()
    for t in TENANTS:
        assert reloaded.balance(t) == w.wallet.balance(t), t


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=st.lists(op, max_size=40))
def test_books_stay_whole(
    fresh_database: FreshDatabase, steps: list[tuple]  # type: ignore[type-arg]
) -> None:
    with fresh_database() as url:  # one private database per example
        asyncio.run(_scenario(url, steps))
