"""Incremental tenant sums (cambist.ledger.tenant_books): each refresh reads
only new lines, yet the sums equal a full scan of the journal exactly, also
when a transaction that drew lower line ids commits after higher ids were
read (PostgreSQL sequences are not commit order), and a reconcile repairs
what a gap given up on missed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.money import to_micros
from cambist.ledger.accounts import CASH, REVENUE_INFERENCE, tenant_account
from cambist.ledger.journal import Entry, Journal
from cambist.ledger.tenant_books import TenantBooks, _Gap, _runs, credit_books
from cambist.store.db import open_engine
from cambist.store.schema import journal_entries, journal_lines
from tests.ledger.conftest import FreshDatabase

D = Decimal
TENANTS = ("ten_a", "ten_b", "ten_c")


def _topup(key: str, tenant: str, amount: str) -> Entry:
    return Entry(key, "topup", [(CASH, D(amount)), (tenant_account(tenant), -D(amount))])


async def _full_scan(journal: Journal) -> dict[str, int]:
    """Every tenant's credit in micro-dollars, summed over the whole journal."""
    return {t: to_micros(v) for t, v in (await journal.tenant_balances()).items()}


async def _post_with_ids(engine: AsyncEngine, entry_id: int, first_line: int, tenant: str,
                         micros: int, kind: str = "topup") -> None:
    """Commit one two-line entry with explicit ids: the order of commits a
    writer that drew ``first_line`` earlier would produce."""
    async with engine.begin() as conn:
        await conn.execute(insert(journal_entries), [{
            "id": entry_id, "idempotency_key": f"e{entry_id}", "kind": kind, "memo": "",
            "created_at": 0.0}])
        await conn.execute(insert(journal_lines), [
            {"id": first_line, "entry_id": entry_id, "account": tenant_account(tenant),
             "amount_micros": -micros},
            {"id": first_line + 1, "entry_id": entry_id, "account": CASH,
             "amount_micros": micros}])


async def test_refresh_counts_new_lines_and_matches_a_full_scan(
    journal: Journal, engine: AsyncEngine
) -> None:
    books = TenantBooks(engine)
    await books.refresh(0.0)
    assert books.balances() == {} and books.top == 0
    await journal.post_many([_topup("t1", "ten_a", "10"), _topup("t2", "ten_b", "2.5")])
    await books.refresh(1.0)
    assert books.balances() == await _full_scan(journal) == {"ten_a": 10_000_000,
                                                              "ten_b": 2_500_000}
    await journal.post("u1", "usage", [(tenant_account("ten_a"), D("0.25")),
                                       (REVENUE_INFERENCE, D("-0.25"))])
    await books.refresh(2.0)
    assert books.balances() == await _full_scan(journal)
    assert books.balances()["ten_a"] == 9_750_000
    assert books.reconciles == 1  # one full read; the rest were tails


async def test_a_lower_id_committed_after_a_higher_one_was_read(
    backend: str, journal: Journal, engine: AsyncEngine
) -> None:
    books = TenantBooks(engine, grace_s=60.0)
    await journal.post("seed", "topup", [(CASH, D("1")), (tenant_account("ten_a"), D("-1"))])
    await books.refresh(0.0)
    if backend == "postgresql":
        # Two real writers: A draws its line ids first and commits last.
        async with engine.connect() as slow:
            tx = await slow.begin()
            await journal.post_in(slow, [_topup("slow", "ten_a", "7")])
            await journal.post("fast", "topup", [(CASH, D("3")),
                                                 (tenant_account("ten_b"), D("-3"))])
            await books.refresh(1.0)
            assert books.balances() == await _full_scan(journal) == {"ten_a": 1_000_000,
                                                                      "ten_b": 3_000_000}
            assert books.gaps(), "the slow writer's ids must be watched"
            await tx.commit()
    else:
        # SQLite has one writer and gives ids max+1, so a lower id cannot commit
        # later there: the same order of events is planted with explicit ids
        # (B's lines top+3..4 commit and are read before A's top+1..2).
        top = books.top
        await _post_with_ids(engine, 100, top + 3, "ten_b", 3_000_000)
        await books.refresh(1.0)
        assert books.gaps() == [(top + 1, top + 2)]
        assert books.balances() == await _full_scan(journal)
        await _post_with_ids(engine, 99, top + 1, "ten_a", 7_000_000)
    await books.refresh(2.0)
    assert books.balances() == await _full_scan(journal) == {"ten_a": 8_000_000,
                                                              "ten_b": 3_000_000}
    assert books.gaps() == [] and books.reconciles == 1


async def test_the_first_read_watches_writers_in_flight(engine: AsyncEngine,
                                                         journal: Journal) -> None:
    # A writer drew lines 1-2 and has not committed; 3-4 are committed when a
    # wallet starts: its first (full) read must watch 1-2, not skip them.
    await _post_with_ids(engine, 2, 3, "ten_b", 3_000_000)
    books = TenantBooks(engine)
    await books.refresh(0.0)
    assert books.gaps() == [(1, 2)] and books.top == 4
    await _post_with_ids(engine, 1, 1, "ten_a", 7_000_000)
    await books.refresh(1.0)
    assert books.balances() == await _full_scan(journal) == {"ten_a": 7_000_000,
                                                              "ten_b": 3_000_000}


async def test_a_gap_given_up_on_is_repaired_by_the_next_reconcile(
    journal: Journal, engine: AsyncEngine
) -> None:
    books = TenantBooks(engine, grace_s=10.0, reconcile_every=4)
    await journal.post_many([_topup("seed", "ten_a", "1")])
    await books.refresh(0.0)  # 1st: reconcile
    top = books.top
    await _post_with_ids(engine, 100, top + 3, "ten_b", 3_000_000)
    await books.refresh(1.0)  # 2nd: the gap top+1..top+2 is seen
    await books.refresh(20.0)  # 3rd: older than grace_s, given up
    assert books.gaps() == [] and books.dropped_gaps == 1
    await _post_with_ids(engine, 99, top + 1, "ten_a", 7_000_000)  # a very late commit
    await books.refresh(21.0)  # 4th: a tail cannot see it (the stated bound)
    assert books.balances()["ten_a"] == 1_000_000
    await books.refresh(22.0)  # 5th: reconcile
    assert books.balances() == await _full_scan(journal) == {"ten_a": 8_000_000,
                                                              "ten_b": 3_000_000}


async def test_a_rolled_back_writer_leaves_no_gap_for_long(
    journal: Journal, engine: AsyncEngine
) -> None:
    books = TenantBooks(engine, grace_s=5.0)
    await books.refresh(0.0)
    async with engine.connect() as conn:
        tx = await conn.begin()
        await journal.post_in(conn, [_topup("gone", "ten_a", "5")])
        await tx.rollback()
    await journal.post_many([_topup("kept", "ten_a", "2")])
    await books.refresh(1.0)
    await books.refresh(7.0)
    assert books.gaps() == []
    assert books.balances() == await _full_scan(journal) == {"ten_a": 2_000_000}


async def test_many_gaps_keep_the_newest(engine: AsyncEngine, journal: Journal) -> None:
    books = TenantBooks(engine, max_gaps=2)
    await journal.post_many([_topup("seed", "ten_a", "1")])
    await books.refresh(0.0)
    top = books.top
    for i, t in enumerate((1.0, 2.0, 3.0)):  # three gaps, one per refresh
        await _post_with_ids(engine, 100 + i, top + 3 * i + 2, "ten_b", 1)
        await books.refresh(t)
    assert books.gaps() == [(top + 4, top + 4), (top + 7, top + 7)]
    assert books.dropped_gaps == 1


async def test_split_usage_agrees_with_credit_books(
    journal: Journal, engine: AsyncEngine
) -> None:
    books = TenantBooks(engine, split_usage=True)
    await journal.post_many([_topup("t1", "ten_a", "10")])
    await books.refresh(0.0)
    await journal.post("u1", "usage", [(tenant_account("ten_a"), D("0.4")),
                                       (REVENUE_INFERENCE, D("-0.4"))])
    await journal.post("r1", "refund", [(REVENUE_INFERENCE, D("0.1")),
                                        (tenant_account("ten_a"), D("-0.1"))])
    await books.refresh(1.0)  # a tail
    assert (books.credit(), books.usage()) == await credit_books(journal.engine)
    assert books.credit() == {"ten_a": 10_100_000} and books.usage() == {"ten_a": 400_000}
    await books.reconcile(2.0)
    assert (books.credit(), books.usage()) == await credit_books(journal.engine)


# -- random interleavings ---------------------------------------------------------

tenant_ix = st.integers(0, len(TENANTS) - 1)
amount = st.integers(1, 10_000_000)
step = st.one_of(
    st.tuples(st.just("open"), tenant_ix, amount),  # a writer draws ids, commits later
    st.tuples(st.just("post"), tenant_ix, amount),  # draws and commits at once
    st.tuples(st.just("commit"), st.integers(0, 9)),
    st.tuples(st.just("abort"), st.integers(0, 9)),  # a rollback: a gap for good
    st.tuples(st.just("refresh"), st.sampled_from([0.5, 3.0, 30.0])),
)


@dataclass
class _Sim:
    engine: AsyncEngine
    next_entry: int = 1
    next_line: int = 1
    open: list[tuple[int, int, str, int]] = field(default_factory=list)

    def draw(self, tenant: str, micros: int) -> tuple[int, int, str, int]:
        drawn = (self.next_entry, self.next_line, tenant, micros)
        self.next_entry += 1
        self.next_line += 2
        return drawn


async def _interleave(url: str, steps: list[tuple], grace_s: float,  # type: ignore[type-arg]
                      reconcile_every: int) -> None:
    engine = open_engine(url)
    try:
        journal = Journal(engine, ManualClock())
        books = TenantBooks(engine, grace_s=grace_s, reconcile_every=reconcile_every)
        sim, now, refreshes = _Sim(engine), 0.0, 0
        for s in [*steps, ("refresh", 0.5)]:
            if s[0] == "open":
                sim.open.append(sim.draw(TENANTS[s[1]], s[2]))
            elif s[0] == "post":
                await _post_with_ids(engine, *sim.draw(TENANTS[s[1]], s[2]))
            elif s[0] in ("commit", "abort") and sim.open:
                drawn = sim.open.pop(s[1] % len(sim.open))
                if s[0] == "commit":
                    await _post_with_ids(engine, *drawn)
            elif s[0] == "refresh":
                now += s[1]
                reconciling = refreshes % reconcile_every == 0
                await books.refresh(now)
                refreshes += 1
                if books.dropped_gaps == 0 or reconciling:
                    # Exact unless a gap was given up on since the last reconcile.
                    assert books.balances() == await _full_scan(journal)
        await books.reconcile(now)
        assert books.balances() == await _full_scan(journal)
    finally:
        await engine.dispose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=40))
def test_random_interleavings_match_a_full_scan(
    fresh_database: FreshDatabase, steps: list[tuple]  # type: ignore[type-arg]
) -> None:
    with fresh_database() as url:
        asyncio.run(_interleave(url, steps, grace_s=1e9, reconcile_every=1000))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=40), every=st.integers(1, 4))
def test_random_interleavings_with_gaps_given_up(
    fresh_database: FreshDatabase, steps: list[tuple], every: int  # type: ignore[type-arg]
) -> None:
    with fresh_database() as url:
        asyncio.run(_interleave(url, steps, grace_s=10.0, reconcile_every=every))


def test_settings_are_checked(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="reconcile_every"):
        TenantBooks(engine, reconcile_every=0)


def _advance_by_ids(top: int, gaps: list[tuple[int, int]], ids: list[int]
                    ) -> tuple[int, list[tuple[int, int]]]:
    """The reference: ``top`` and the gaps after reading ``ids`` one by one."""
    seen = set(ids)
    left = [i for lo, hi in gaps for i in range(lo, hi + 1) if i not in seen]
    new_top = max([top, *ids])
    left += [i for i in range(top + 1, new_top + 1) if i not in seen]
    return new_top, _runs(sorted(left))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30), st.lists(st.tuples(st.integers(1, 30), st.integers(0, 4)), max_size=4),
       st.sets(st.integers(1, 60), max_size=25))
def test_reading_runs_of_ids_moves_top_and_gaps_as_reading_each_id(
        top: int, raw_gaps: list[tuple[int, int]], ids: set[int]) -> None:
    gaps = _runs(sorted({i for lo, n in raw_gaps for i in range(lo, lo + n + 1) if i <= top}))
    books = TenantBooks.__new__(TenantBooks)
    books._top, books.grace_s, books.max_gaps, books.dropped_gaps = top, 1e9, 10_000, 0
    books._gaps = [_Gap(lo, hi, 0.0) for lo, hi in gaps]
    read = sorted(i for i in ids if i > top or any(lo <= i <= hi for lo, hi in gaps))
    books._advance(_runs(read), 1.0)
    # Gaps of different ages may touch: compare the ids they watch.
    watched = _runs(sorted(i for lo, hi in books.gaps() for i in range(lo, hi + 1)))
    assert (books.top, watched) == _advance_by_ids(top, gaps, read)
