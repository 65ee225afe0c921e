"""Spend order: a plan's daily allowance, then its monthly pool, then prepaid credit.

A tenant's plan (:mod:`cambist.ledger.plans`) may grant a *daily allowance*
(dollars per day; the day runs from ``reset_hour`` to ``reset_hour``, UTC) and
a *monthly pool* (dollars per UTC calendar month). Every charge ``C`` is split
when it settles:

* allowance part ``a = min(C, allowance left in the record's day)``;
* pool part ``p = min(C − a, pool left in the record's month)``;
* prepaid part ``b = C − a − p`` (the tenant's balance).

The period is the one of ``record.created_at`` (when the request arrived), so
the usage table alone says how much of each period was used: the split is
stored on the record (``allowance_micros``, ``pool_micros``), durable through
the outbox, and :meth:`GrantCounters.rebuild` recomputes the counters exactly
from the ``usage`` table plus the records not flushed yet. Counters are kept
for the current and the previous period; a record settling more than one
period after it arrived (a request longer than a day) takes nothing from
that period's grants.

In the journal the allowance part debits ``platform:grants:allowance``, the
pool part ``platform:grants:pool``, the prepaid part ``tenant:{id}``; revenue
is credited the whole charge (:mod:`cambist.ledger.usage_bulk`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.money import to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.plans import PlanBook
from cambist.store.schema import usage

__all__ = ["GrantCounters", "Periods", "charge_parts", "prepaid_micros"]

_DAY = 86_400.0


def prepaid_micros(record: UsageRecord) -> int:
    """What ``record`` charges the tenant's prepaid balance, in micro-dollars."""
    return to_micros(record.price) - record.allowance_micros - record.pool_micros


def charge_parts(charges: Iterable[tuple[str, str, int, int, int, float]], periods: Periods
                 ) -> tuple[dict[str, int], dict[tuple[str, str, float], int]]:
    """What records charged, from their charges as
    :meth:`~cambist.ledger.outbox.OutboxBatch.charges` lists them (each request
    once, duplicates skipped), in micro-dollars: the prepaid parts per tenant
    (zero sums left out) and the grant parts per ``(tenant, "a" | "p", period
    start)`` (allowance by day, pool by month)."""
    parts: dict[str, int] = {}
    granted: dict[tuple[str, str, float], int] = {}
    seen: set[str] = set()
    for rid, tenant, price, allowance, pool, created_at in charges:
        if rid in seen:
            continue
        seen.add(rid)
        parts[tenant] = parts.get(tenant, 0) + price - allowance - pool
        if allowance:
            k = (tenant, "a", periods.day(created_at))
            granted[k] = granted.get(k, 0) + allowance
        if pool:
            k = (tenant, "p", periods.month(created_at))
            granted[k] = granted.get(k, 0) + pool
    return {t: c for t, c in parts.items() if c}, granted


class Periods:
    """Where allowance days and pool months begin (UTC, whole seconds)."""

    def __init__(self, reset_hour: int = 0) -> None:
        if isinstance(reset_hour, bool) or not isinstance(reset_hour, int) \
                or not 0 <= reset_hour <= 23:
            raise ValueError(f"the allowance reset hour must be 0-23 (UTC), not {reset_hour!r}")
        self.reset_hour = reset_hour
        # The last day and month looked up, as [start, end): settling asks
        # for the same period again and again (datetime arithmetic is not free).
        self._last_day = (0.0, 0.0)
        self._last_month = (0.0, 0.0)

    def day(self, t: float) -> float:
        """Start of the allowance day holding ``t``."""
        start, end = self._last_day
        if start <= t < end:
            return start
        dt = datetime.fromtimestamp(t, UTC)
        begin = dt.replace(hour=self.reset_hour, minute=0, second=0, microsecond=0)
        if begin > dt:
            begin -= timedelta(days=1)
        self._last_day = (begin.timestamp(), (begin + timedelta(days=1)).timestamp())
        return self._last_day[0]

    def month(self, t: float) -> float:
        """Start of the UTC calendar month holding ``t``."""
        start, end = self._last_month
        if start <= t < end:
            return start
        dt = datetime.fromtimestamp(t, UTC)
        begin = dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        after = (begin + timedelta(days=32)).replace(day=1)
        self._last_month = (begin.timestamp(), after.timestamp())
        return self._last_month[0]

    def month_after(self, start: float) -> float:
        """Start of the month after the one starting at ``start`` (the month
        remembered by :meth:`month` is left as it is)."""
        begin = datetime.fromtimestamp(start, UTC)
        return (begin + timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0,
                                                    microsecond=0).timestamp()

    def previous_day(self, t: float) -> float:
        """Start of the allowance day before the one holding ``t``."""
        return self.day(t) - _DAY

    def previous_month(self, t: float) -> float:
        """Start of the month before the one holding ``t``."""
        return self.month(self.month(t) - 1)


class GrantCounters:
    """Per tenant, the allowance used per day and the pool used per month, in
    micro-dollars, for the current and previous periods. Not thread-safe; the
    wallet calls it from the event loop only."""

    def __init__(self, plans: PlanBook | None = None, reset_hour: int = 0) -> None:
        self.plans = plans
        self.periods = Periods(reset_hour)
        self._allowance: dict[tuple[str, float], int] = {}  # (tenant, day start) -> used
        self._pool: dict[tuple[str, float], int] = {}  # (tenant, month start) -> used

    @property
    def enabled(self) -> bool:
        """Whether any tenant can have a grant (else every split is all prepaid)."""
        return self.plans is not None and self.plans.grants_in_use()

    def limits(self, tenant_id: str) -> tuple[int, int]:
        """The tenant's daily allowance and monthly pool, in micro-dollars."""
        if self.plans is None:
            return 0, 0
        return self.plans.plan_of(tenant_id).grant_micros

    def plan_name(self, tenant_id: str) -> str | None:
        """The name of the tenant's plan (``None`` without a plan book)."""
        return None if self.plans is None else self.plans.plan_of(tenant_id).name

    def _left(self, tenant_id: str, at: float, now: float) -> tuple[int, int]:
        allowance, pool = self.limits(tenant_id)
        if allowance:
            day = self.periods.day(at)
            if day < self.periods.previous_day(now):
                allowance = 0
            else:
                allowance = max(0, allowance - self._allowance.get((tenant_id, day), 0))
        if pool:
            month = self.periods.month(at)
            if month < self.periods.previous_month(now):
                pool = 0
            else:
                pool = max(0, pool - self._pool.get((tenant_id, month), 0))
        return allowance, pool

    def left(self, tenant_id: str, now: float) -> tuple[int, int]:
        """Allowance left today and pool left this month at ``now``, in micro-dollars."""
        return self._left(tenant_id, now, now)

    def split(self, tenant_id: str, charge: int, created_at: float, now: float
              ) -> tuple[int, int]:
        """The allowance and pool parts of a ``charge`` (micro-dollars) of a
        request that arrived at ``created_at`` (counted by :meth:`count`)."""
        if charge <= 0:
            return 0, 0
        allowance, pool = self._left(tenant_id, created_at, now)
        a = min(charge, allowance)
        return a, min(charge - a, pool)

    def count(self, record: UsageRecord) -> None:
        """Add a settled record's allowance and pool parts to its periods."""
        t = record.tenant_id
        if record.allowance_micros:
            key = (t, self.periods.day(record.created_at))
            self._allowance[key] = self._allowance.get(key, 0) + record.allowance_micros
        if record.pool_micros:
            key = (t, self.periods.month(record.created_at))
            self._pool[key] = self._pool.get(key, 0) + record.pool_micros

    async def query(self, engine: AsyncEngine, now: float
                    ) -> tuple[dict[tuple[str, float], int], dict[tuple[str, float], int]]:
        """The ``usage`` table's allowance and pool sums per tenant for the
        current and previous periods at ``now`` (for :meth:`rebuild`)."""
        if not self.enabled:
            return {}, {}
        p = self.periods
        day, prev_day = p.day(now), p.previous_day(now)
        month, prev_month = p.month(now), p.previous_month(now)
        c = usage.c

        def part(col: ColumnElement[int], lo: float, hi: float | None) -> ColumnElement[int]:
            cond = c.created_at >= lo if hi is None else (c.created_at >= lo) & (c.created_at < hi)
            return func.coalesce(func.sum(case((cond, col), else_=0)), 0)

        q = (select(c.tenant_id,
                    part(c.allowance_micros, day, None),
                    part(c.allowance_micros, prev_day, day),
                    part(c.pool_micros, month, None),
                    part(c.pool_micros, prev_month, month))
             .where(c.created_at >= min(prev_day, prev_month),
                    or_(c.allowance_micros != 0, c.pool_micros != 0))
             .group_by(c.tenant_id))
        async with engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        allowance: dict[tuple[str, float], int] = {}
        pool: dict[tuple[str, float], int] = {}
        for t, a_cur, a_prev, p_cur, p_prev in rows:
            for out, key, v in ((allowance, (t, day), a_cur), (allowance, (t, prev_day), a_prev),
                                (pool, (t, month), p_cur), (pool, (t, prev_month), p_prev)):
                if int(v):
                    out[key] = int(v)
        return allowance, pool

    def rebuild(self, booked: tuple[dict[tuple[str, float], int], dict[tuple[str, float], int]],
                pending: Iterable[UsageRecord], now: float) -> None:
        """Replace the counters with ``booked`` (:meth:`query` at ``now``) plus
        the ``pending`` records (in the outbox, not in the table yet)."""
        self._allowance, self._pool = dict(booked[0]), dict(booked[1])
        prev_day, prev_month = self.periods.previous_day(now), self.periods.previous_month(now)
        for r in pending:
            if r.allowance_micros and self.periods.day(r.created_at) >= prev_day:
                key = (r.tenant_id, self.periods.day(r.created_at))
                self._allowance[key] = self._allowance.get(key, 0) + r.allowance_micros
            if r.pool_micros and self.periods.month(r.created_at) >= prev_month:
                key = (r.tenant_id, self.periods.month(r.created_at))
                self._pool[key] = self._pool.get(key, 0) + r.pool_micros

    def used(self, tenant_id: str, now: float) -> tuple[int, int]:
        """Allowance used today and pool used this month at ``now``, in micro-dollars."""
        return (self._allowance.get((tenant_id, self.periods.day(now)), 0),
                self._pool.get((tenant_id, self.periods.month(now)), 0))
