"""Credit shared through a real Redis by several wallets (one per simulated
process) over one journal: the overdraft stays within ``N x slack``, the
outbox reports reach Redis exactly once (across a crash between the report
and the journal commit), and a killed process's credit is held, never spent
twice, until it restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.errors import InsufficientCredit
from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.shared_wallet import CreditPending, SharedWallet
from cambist.store.db import migrate, open_engine, sqlite_url

SLACK = Decimal("0.05")
PRICE = Decimal("0.03")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = sqlite_url(tmp_path / "ledger.db")
    migrate(url)
    eng = open_engine(url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def journal(engine: AsyncEngine) -> Journal:
    clock = ManualClock()
    await Keyring(engine, clock, b"k" * 32).create_tenant("acme", "ten_acme")
    j = Journal(engine, clock)
    assert await j.topup("ten_acme", Decimal("1.00"), "topup:1")
    return j


def _record(rid: str, price: Decimal) -> UsageRecord:
    return UsageRecord(request_id=rid, tenant_id="ten_acme", key_id="key_1", model="m",
                       endpoint_id="ep", supplier="sim", prompt_tokens=10, completion_tokens=5,
                       reasoning_tokens=0, price=price, compute_cost=Decimal(0),
                       price_version=1, status="ok", created_at=0.0)


class Proc:
    """One simulated gateway process: its outbox, wallet and flusher."""

    def __init__(self, name: str, journal: Journal, redis: Redis, prefix: str,
                 home: Path) -> None:
        self.outbox = UsageOutbox(home / f"outbox-{name}.jsonl", offset_key=f"off:{name}")
        self.wallet = SharedWallet(journal, self.outbox, ManualClock(), redis, process=name,
                                   prefix=prefix, slack=SLACK)
        self.flusher = OutboxFlusher(self.outbox, journal.engine, journal,
                                     reporter=self.wallet)

    async def start(self) -> Proc:
        await self.wallet.load_books()
        await self.flusher.recover()
        await self.wallet.load()
        return self


async def _used(redis: Redis, prefix: str) -> int:
    return int(await redis.get(f"{prefix}:used:ten_acme") or 0)


async def test_four_processes_overdraw_at_most_n_times_the_slack(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path) -> None:
    procs = [await Proc(f"gw-{i}", journal, redis, prefix, tmp_path).start() for i in range(4)]
    charged = Decimal(0)
    n = 0
    for _ in range(30):
        for p in procs:
            for _ in range(3):  # a burst between round trips to Redis
                try:
                    rsv = p.wallet.reserve("ten_acme", PRICE, f"r{n}")
                except (InsufficientCredit, CreditPending):
                    continue
                p.wallet.settle(rsv, _record(f"req-{n}", PRICE))  # the worst case: all of it
                charged += PRICE
                n += 1
        for p in procs:
            await p.wallet.push()
    assert Decimal("1.00") - PRICE < charged <= Decimal("1.00") + 4 * SLACK
    for p in procs:
        await p.flusher.recover()
    assert await journal.check() == []
    balance = await journal.tenant_balance("ten_acme")
    assert balance == Decimal("1.00") - charged
    assert await _used(redis, prefix) == int(charged * 1_000_000)  # reported exactly once
    for p in procs:
        await p.wallet.load()
        assert p.wallet.available("ten_acme") == balance
        assert p.wallet.balance("ten_acme") == balance


async def test_report_survives_a_crash_before_the_journal_commit(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path) -> None:
    a = await Proc("gw-a", journal, redis, prefix, tmp_path).start()
    for i in range(5):
        rsv = a.wallet.reserve("ten_acme", Decimal("0.01"), f"r{i}")
        a.wallet.settle(rsv, _record(f"a-{i}", Decimal("0.01")))
    # The flusher reports the batch to Redis, then "crashes" before committing it.
    start = a.outbox.start_of(await a.flusher._current())
    await a.wallet.report(a.outbox, start, a.outbox.size())
    assert await _used(redis, prefix) == 50_000
    a.outbox.close()
    again = await Proc("gw-a", journal, redis, prefix, tmp_path).start()  # replays the outbox
    assert await _used(redis, prefix) == 50_000  # not reported twice
    assert await journal.tenant_balance("ten_acme") == Decimal("0.95")  # charged once
    assert again.wallet.available("ten_acme") == Decimal("0.95")


async def test_a_killed_process_holds_its_credit_until_it_restarts(
        journal: Journal, redis: Redis, prefix: str, tmp_path: Path) -> None:
    a = await Proc("gw-a", journal, redis, prefix, tmp_path).start()
    b = await Proc("gw-b", journal, redis, prefix, tmp_path).start()
    held = a.wallet.reserve("ten_acme", Decimal("0.40"), "in-flight")
    await a.wallet.push()  # beyond the slack, the next one waits for Redis
    done = a.wallet.reserve("ten_acme", Decimal("0.30"), "done")
    a.wallet.settle(done, _record("a-done", Decimal("0.25")))
    await a.wallet.push()
    assert held.amount == Decimal("0.40")
    a.outbox.close()  # kill -9: no flush, no goodbye; its exposure stays in Redis
    await b.wallet.load()
    assert b.wallet.available("ten_acme") == Decimal("0.35")  # 1 - 0.40 held - 0.25 charged
    with pytest.raises(InsufficientCredit):
        b.wallet.reserve("ten_acme", Decimal("0.50"), "too-much")
    await Proc("gw-a", journal, redis, prefix, tmp_path).start()  # restart: charge, let go
    await b.wallet.load()
    assert b.wallet.available("ten_acme") == Decimal("0.75")
    assert await journal.tenant_balance("ten_acme") == Decimal("0.75")
    assert await _used(redis, prefix) == 250_000
