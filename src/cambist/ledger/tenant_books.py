"""Per-tenant sums of the journal, kept current by reading only what is new.

The wallets reload tenant balances every 2 s so postings by other processes
reach the hot path. Summing every ``tenant:*`` line each time costs time
linear in the journal's history; :class:`TenantBooks` instead keeps the sums
in memory and, per :meth:`~TenantBooks.refresh`, reads only the lines it has
not counted yet.

**Which lines are new.** Line ids come from a sequence (PostgreSQL) or
``max(rowid) + 1`` (SQLite), but ids are not commit order on PostgreSQL: a
transaction that drew a lower id may commit after a higher id was read. So
the books keep ``top``, the highest id read, and the *gaps*: ranges of ids at
or below ``top`` that were not visible when read. A refresh reads the lines
with ``id > top`` or inside a gap (one index range each), adds the ones it
finds and splits the gaps they filled. A line is counted at most once by
construction: it is read only from ``id > top`` or a gap, and once counted it
is in neither.

**Gaps that never fill.** A rolled-back transaction (or a sequence that
skipped values in a crash) leaves a gap for good, so a gap is dropped once it
is ``grace_s`` old (by the clock passed to :meth:`refresh`) and the oldest
gaps past ``max_gaps`` are dropped at once. A transaction that commits lines
into a gap after it was dropped (one that held its ids longer than
``grace_s``) is missed until the next *reconcile*: every ``reconcile_every``
refreshes (and on the first), the sums are recomputed from the whole journal
in the same statement, hence the same snapshot, that reads the new ids, so
the books are again exactly the journal's. **Bound:** between reconciles the
sums lack only lines of transactions that held their ids for more than
``grace_s``; without such transactions they equal a full scan after every
refresh.

The first reconcile watches gaps among the last ``window`` ids only (the ids
below were drawn long before, by transactions that have almost surely ended;
any that had not are caught by the next reconcile).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, case, cast, func, null, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.ledger.accounts import TENANT_PREFIX
from cambist.store.schema import journal_entries, journal_lines

__all__ = ["TenantBooks", "credit_books"]

log = logging.getLogger("cambist.ledger.tenant_books")

_L = journal_lines.c


@dataclass(frozen=True, slots=True)
class _Gap:
    """Line ids ``lo..hi`` (inclusive) not visible since ``seen_at``."""

    lo: int
    hi: int
    seen_at: float


class TenantBooks:
    """Every tenant's journal sums in micro-dollars, refreshed incrementally.

    ``split_usage`` keeps usage charges (entries of kind ``usage``) apart from
    every other posting, as :class:`~cambist.ledger.shared_wallet.SharedWallet`
    needs; without it everything counts as "other" and no entry is joined."""

    def __init__(self, engine: AsyncEngine, *, split_usage: bool = False,
                 grace_s: float = 60.0, reconcile_every: int = 150, max_gaps: int = 256,
                 window: int = 100_000) -> None:
        if reconcile_every < 1 or max_gaps < 0 or window < 0 or grace_s < 0:
            raise ValueError("reconcile_every must be >= 1; grace_s, max_gaps and window >= 0")
        self._engine = engine
        self._split = split_usage
        self.grace_s = grace_s
        self.reconcile_every = reconcile_every
        self.max_gaps = max_gaps
        self.window = window
        self._usage: dict[str, int] = {}  # tenant -> signed sum (debit +) of usage lines
        self._other: dict[str, int] = {}  # tenant -> signed sum of every other line
        self._top = 0
        self._gaps: list[_Gap] = []  # sorted by lo, disjoint, all <= _top
        self._refreshes = 0
        self._lock = asyncio.Lock()
        self.reconciles = 0
        self.dropped_gaps = 0

    # -- what the books say ------------------------------------------------------

    def balances(self) -> dict[str, int]:
        """Every tenant's credit (credit-normal: the negated sum of its lines)."""
        out = {t: -s for t, s in self._other.items()}
        for t, s in self._usage.items():
            out[t] = out.get(t, 0) - s
        return out

    def credit(self) -> dict[str, int]:
        """Every tenant's credit from entries other than usage (credit-normal)."""
        return {t: -s for t, s in self._other.items()}

    def usage(self) -> dict[str, int]:
        """Every tenant's usage charges (the debits of ``usage`` entries)."""
        return dict(self._usage)

    @property
    def top(self) -> int:
        """The highest line id read."""
        return self._top

    def gaps(self) -> list[tuple[int, int]]:
        """The id ranges at or below :attr:`top` still watched for late commits."""
        return [(g.lo, g.hi) for g in self._gaps]

    # -- reading -----------------------------------------------------------------

    async def refresh(self, now: float) -> None:
        """Count the lines committed since the last refresh (a full reconcile
        on the first call and every ``reconcile_every``-th)."""
        async with self._lock:
            if self._refreshes % self.reconcile_every == 0:
                await self._reconcile(now)
            else:
                await self._tail(now)
            self._refreshes += 1

    async def reconcile(self, now: float) -> None:
        """Recompute the sums from the whole journal now."""
        async with self._lock:
            await self._reconcile(now)
            self._refreshes = 1

    def _amounts(self) -> tuple[ColumnElement[int], ColumnElement[int]]:
        """(usage part, other part) of a line's amount (entries joined)."""
        amount = _L.amount_micros
        if not self._split:
            return cast(0, BigInteger), amount
        is_usage = journal_entries.c.kind == "usage"
        return case((is_usage, amount), else_=0), case((is_usage, 0), else_=amount)

    def _lines(self, where: ColumnElement[bool]) -> Select[Any]:
        """The unread lines: id, account, amount and (``split_usage``, tenant
        lines only) their entry's kind."""
        kind: ColumnElement[Any] = null()
        if self._split:
            # A lookup per tenant line, not a join: a tail is small, and a join's
            # estimate can pick a scan of every entry.
            e = journal_entries.c
            entry_kind = select(e.kind).where(e.id == _L.entry_id).scalar_subquery()
            kind = case((_L.account.startswith(TENANT_PREFIX, autoescape=True), entry_kind),
                        else_=null())
        return select(_L.id, _L.account, _L.amount_micros, kind.label("kind")).where(where)

    def _unread(self) -> ColumnElement[bool]:
        return or_(_L.id > self._top, *(_L.id.between(g.lo, g.hi) for g in self._gaps))

    async def _tail(self, now: float) -> None:
        # Summed and cut into runs of consecutive ids by the database: a tail
        # holds two lines per request served since the last refresh, thousands
        # a second under load, which cost the event loop a few microseconds a
        # request as rows.
        new = self._lines(self._unread()).cte("new")
        sums = (select(cast(null(), BigInteger), cast(null(), BigInteger), new.c.account,
                       new.c.kind, func.sum(new.c.amount_micros))
                .where(new.c.account.startswith(TENANT_PREFIX, autoescape=True))
                .group_by(new.c.account, new.c.kind))
        numbered = select(new.c.id, (new.c.id - func.row_number().over(order_by=new.c.id))
                          .label("run")).subquery()
        runs = select(func.min(numbered.c.id), func.max(numbered.c.id), null(), null(),
                      cast(null(), BigInteger)).group_by(numbered.c.run)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sums.union_all(runs))).all()
        prefix = len(TENANT_PREFIX)
        read: list[tuple[int, int]] = []
        for lo, hi, account, kind, amount in rows:
            if lo is not None:
                read.append((int(lo), int(hi)))
                continue
            t = account[prefix:]
            if kind == "usage":
                self._usage[t] = self._usage.get(t, 0) + int(amount)
                self._other.setdefault(t, 0)
            else:
                self._other[t] = self._other.get(t, 0) + int(amount)
        self._advance(sorted(read), now)

    async def _reconcile(self, now: float) -> None:
        u, o = self._amounts()
        totals = (select(cast(null(), BigInteger), _L.account, func.sum(u), func.sum(o))
                  .where(_L.account.startswith(TENANT_PREFIX, autoescape=True))
                  .group_by(_L.account))
        if self._split:
            totals = totals.join(journal_entries, journal_entries.c.id == _L.entry_id)
        if self._top == 0:
            # First time: watch for gaps among the last `window` ids only (the
            # newest id is always among those read, so `top` is known).
            newest = select(func.coalesce(func.max(_L.id), 0)).scalar_subquery()
            where: ColumnElement[bool] = _L.id >= newest - self.window
        else:
            where = self._unread()
        ids = select(_L.id, null(), cast(0, BigInteger), cast(0, BigInteger)).where(where)
        # One statement, one snapshot: the totals and the ids agree.
        async with self._engine.connect() as conn:
            rows = (await conn.execute(totals.union_all(ids))).all()
        usage: dict[str, int] = {}
        other: dict[str, int] = {}
        seen: list[int] = []
        prefix = len(TENANT_PREFIX)
        for line_id, account, us, os_ in rows:
            if line_id is not None:
                seen.append(int(line_id))
                continue
            t = account[prefix:]
            other[t] = int(os_ or 0)
            if us:
                usage[t] = int(us)
        self._usage, self._other = usage, other
        if self._top == 0 and seen:
            # Ids below the window count as read; unseen ids in it are gaps.
            self._top = max(0, max(seen) - self.window - 1)
        self._advance(_runs(sorted(seen)), now)
        self.reconciles += 1

    def _advance(self, runs: list[tuple[int, int]], now: float) -> None:
        """Move ``top`` and the gaps past ``runs``: the ids just read, as sorted,
        disjoint ranges ``(lo, hi)`` of consecutive ids."""
        gaps: list[_Gap] = []
        for g in self._gaps:
            i = bisect.bisect_left(runs, (g.lo, g.lo)) - 1  # a run may start below the gap
            lo = g.lo
            for a, b in runs[max(i, 0):]:
                if a > g.hi:
                    break
                if b < lo:
                    continue
                if a > lo:
                    gaps.append(_Gap(lo, a - 1, g.seen_at))
                lo = b + 1
            if lo <= g.hi:
                gaps.append(_Gap(lo, g.hi, g.seen_at))
        prev = self._top
        for a, b in runs:
            if b <= prev:
                continue
            a = max(a, prev + 1)
            if a > prev + 1:
                gaps.append(_Gap(prev + 1, a - 1, now))
            prev = b
        self._top = prev
        kept = [g for g in gaps if now - g.seen_at < self.grace_s]
        if len(kept) > self.max_gaps:
            # The newest gaps are the likeliest to fill (transactions in flight).
            kept = sorted(kept, key=lambda g: (g.seen_at, g.lo))[len(kept) - self.max_gaps:]
        if len(kept) < len(gaps):
            self.dropped_gaps += len(gaps) - len(kept)
            log.debug("journal: stopped watching %d id gaps (older than %.0f s or too many)",
                      len(gaps) - len(kept), self.grace_s)
        self._gaps = sorted(kept, key=lambda g: g.lo)


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as ranges of consecutive ids."""
    out: list[tuple[int, int]] = []
    for i in ids:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


async def credit_books(engine: AsyncEngine) -> tuple[dict[str, int], dict[str, int]]:
    """Per tenant, in micro-dollars: the credit of every journal entry but usage
    (credit-normal), and the usage charged (debits), by a full scan in one
    query: what :class:`TenantBooks` with ``split_usage`` must agree with."""
    is_usage = journal_entries.c.kind == "usage"
    amount = journal_lines.c.amount_micros
    q = (
        select(journal_lines.c.account,
               func.coalesce(func.sum(case((is_usage, amount), else_=0)), 0),
               func.coalesce(func.sum(case((is_usage, 0), else_=amount)), 0))
        .join(journal_entries, journal_entries.c.id == journal_lines.c.entry_id)
        .where(journal_lines.c.account.startswith(TENANT_PREFIX, autoescape=True))
        .group_by(journal_lines.c.account)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    credit = {a[len(TENANT_PREFIX):]: -int(other) for a, _, other in rows}
    usage = {a[len(TENANT_PREFIX):]: int(used) for a, used, _ in rows}
    return credit, usage
