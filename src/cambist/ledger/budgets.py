"""Per-API-key spend budgets: a hard limit and a soft alert per UTC calendar
day or month.

:class:`KeyBudgets` keeps each budgeted key's spend in the current period in
memory. The gateway calls :meth:`KeyBudgets.check` before it forwards a request
(one dict lookup for a key without a budget) and :meth:`KeyBudgets.record` when
it settles. :class:`KeyBudgetRefresh` reloads budgets and spend every second
(as :class:`~cambist.ledger.keys.KeyringRefresh` reloads keys): the ``usage``
charges since the period start plus this process's records still in its outbox,
read under the outbox lock as :meth:`~cambist.ledger.wallet.TenantWallet.load`
does, so none is counted twice or missed by the swap.

**Rotation.** A rotated key keeps its budget: the new key copies the limit,
alert, period and alert state, and inherits the old key's *lineage* (the
first key of its rotation chain, ``api_keys.lineage``). Spend is counted over
every key of the lineage, so a rotation never resets the period's spend, and
requests of the old key still in flight count against the new key's budget.

**Hard stop.** A request is refused (402 ``key_budget_exceeded``) when the key
has spent its limit in the period or its reservation would take it past the
limit. **Soft alert.** The first time a key's spend reaches its alert threshold
in a period, one ``key.budget_alert`` event is appended: the ``api_keys`` row
records the period alerted (a compare-and-set), so of several processes that
see the crossing only one writes the event.

**Bound.** A check compares settled spend plus the request's own hold with the
limit; other requests in flight are not counted. A process counts its own
settles at once and other processes' once flushed (0.2 s) and reloaded
(``interval_s``). As a charge never exceeds its reservation, a key's spend in a
period exceeds its limit by at most the reservations in flight when it crossed
plus what other processes settled within one flush and one reload interval.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal, cast

from sqlalchemy import and_, case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.clock import Clock
from cambist.domain.errors import InvalidRequest, KeyBudgetExceeded, NotFound
from cambist.domain.money import from_micros, to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.outbox import UsageOutbox, read_position
from cambist.store.schema import api_keys, events, usage

__all__ = ["PERIODS", "KeyBudget", "KeyBudgetRefresh", "KeyBudgets", "Period",
           "period_bounds", "validate_budget"]

log = logging.getLogger("cambist.ledger.budgets")

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
_C = api_keys.c
_LINEAGE = func.coalesce(_C.lineage, _C.id)  # the first key of a key's rotation chain
_MAX_USD = Decimal(10**9)  # whole micro-dollars of this fit any BigInteger column


def period_bounds(t: float, period: Period) -> tuple[float, float]:
    """The UTC calendar ``period`` holding time ``t``: (start, end) in epoch seconds."""
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    if period == "day":
        start = d.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + dt.timedelta(days=1)
    else:
        start = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 \
            else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


def _usd(micros: int) -> str:
    return f"${from_micros(micros).normalize():f}"


def _label(start: float, period: Period) -> str:
    return dt.datetime.fromtimestamp(start, dt.UTC).strftime(
        "%Y-%m-%d" if period == "day" else "%Y-%m")


@dataclass(frozen=True, slots=True)
class KeyBudget:
    """One key's budget, in whole micro-dollars; ``alerted``: the period label
    whose soft alert was already sent."""

    tenant_id: str | None
    limit_micros: int
    alert_micros: int | None
    period: Period
    alerted: str | None = None

    @property
    def limit(self) -> Decimal:
        """The hard limit in dollars."""
        return from_micros(self.limit_micros)


def validate_budget(limit: Decimal | None, alert: Decimal | None, period: str) -> None:
    """Raise ``InvalidRequest`` unless the amounts and period make a budget."""
    if period not in PERIODS:
        raise InvalidRequest(f"unknown budget period {period!r}; use day or month",
                             param="period")
    for name, amount in (("limit", limit), ("alert", alert)):
        if amount is not None and (not amount.is_finite() or not 0 <= amount <= _MAX_USD):
            raise InvalidRequest(f"the budget {name} must be a dollar amount from 0 to "
                                 f"{_MAX_USD}", param=name)
    if limit is None and alert is not None:
        raise InvalidRequest("an alert needs a limit (set limit too)", param="alert")
    if limit is not None and alert is not None and alert > limit:
        raise InvalidRequest("the alert must not be above the limit", param="alert")


class KeyBudgets:
    """Budgets and spend in the current period of every budgeted key (see module)."""

    def __init__(self, engine: AsyncEngine, clock: Clock,
                 outbox: UsageOutbox | None = None) -> None:
        self._engine, self._clock, self._outbox = engine, clock, outbox
        self._budgets: dict[str, KeyBudget] = {}
        self._spent: dict[str, tuple[float, int]] = {}  # key -> (period start, micros)
        self._alias: dict[str, str] = {}  # any key of a budgeted lineage -> the budgeted key
        self._due: set[str] = set()  # keys whose soft alert should be sent
        self._changes = 0  # bumped by local writes; a reload that raced one retries

    def budget(self, key_id: str) -> KeyBudget | None:
        """The key's budget, or ``None``."""
        return self._budgets.get(key_id)

    def covers(self, key_id: str) -> bool:
        """Whether the key, or the budgeted key it replaced, has a budget (for
        any other key :meth:`remaining`, :meth:`check` and :meth:`record` do
        nothing, so a request may skip them)."""
        return key_id in self._budgets or key_id in self._alias

    def _spent_micros(self, key_id: str, budget: KeyBudget, now: float) -> int:
        got = self._spent.get(key_id)
        return got[1] if got is not None and got[0] == period_bounds(now, budget.period)[0] \
            else 0

    def spent(self, key_id: str) -> Decimal:
        """What the key spent in its current period (0 without a budget)."""
        budget = self._budgets.get(key_id)
        return Decimal(0) if budget is None else \
            from_micros(self._spent_micros(key_id, budget, self._clock.now()))

    def remaining(self, key_id: str) -> Decimal | None:
        """What is left of the key's budget this period, or ``None`` without one."""
        budget = self._budgets.get(key_id)
        if budget is None:
            return None
        left = budget.limit_micros - self._spent_micros(key_id, budget, self._clock.now())
        return from_micros(max(left, 0))

    def check(self, key_id: str, hold: Decimal) -> None:
        """Raise ``KeyBudgetExceeded`` if the key has spent its budget this period
        or ``hold`` would take it past the limit."""
        if key_id in self._budgets:
            self.check_micros(key_id, to_micros(hold))

    def check_micros(self, key_id: str, hold: int) -> None:
        """:meth:`check` of a hold of ``hold`` whole micro-dollars."""
        budget = self._budgets.get(key_id)
        if budget is None:
            return
        now = self._clock.now()
        spent = self._spent_micros(key_id, budget, now)
        if spent < budget.limit_micros and spent + hold <= budget.limit_micros:
            return
        resets = dt.datetime.fromtimestamp(period_bounds(now, budget.period)[1], dt.UTC)
        raise KeyBudgetExceeded(
            f"API key {key_id} has a budget of {_usd(budget.limit_micros)} per {budget.period} "
            f"(UTC) and has spent {_usd(spent)}; this request may cost up to "
            f"{_usd(hold)}. The budget resets at {resets:%Y-%m-%dT%H:%M:%SZ}; "
            f"raise it with `cambist keys budget {key_id} --limit <amount>`")

    def record(self, record: UsageRecord) -> None:
        """Count a settled usage record against its key's budget (that of the
        key which replaced it, for a rotated key)."""
        key_id = self._alias.get(record.key_id, record.key_id)
        budget = self._budgets.get(key_id)
        if budget is None:
            return
        start, _ = period_bounds(record.created_at, budget.period)
        got = self._spent.get(key_id)
        if got is not None and got[0] > start:
            return  # arrived in a period that has ended: not this period's spend
        before = got[1] if got is not None and got[0] == start else 0
        self._spent[key_id] = (start, before + to_micros(record.price))
        self._mark_due(key_id, budget, start)

    def _mark_due(self, key_id: str, budget: KeyBudget, start: float) -> None:
        if budget.alert_micros is None or budget.alerted == _label(start, budget.period):
            return
        got = self._spent.get(key_id)
        if got is not None and got[0] == start and got[1] >= budget.alert_micros:
            self._due.add(key_id)

    async def load(self) -> None:
        """Reload budgets and spend: stored charges of each budgeted key's lineage
        since its period start plus this process's records still in the outbox
        (swapped atomically)."""
        q = (select(_C.id, _C.tenant_id, _C.budget_limit_micros, _C.budget_alert_micros,
                    _C.budget_period, _C.budget_alerted, _LINEAGE.label("lineage"))
             .where(_C.budget_limit_micros.is_not(None), _C.revoked_at.is_(None)))
        lock: AbstractAsyncContextManager[object] = \
            self._outbox.lock if self._outbox is not None else nullcontext()
        async with lock:  # keeps the flusher out: the outbox read matches the sums
            while True:
                seen = self._changes
                now = self._clock.now()
                position = (await read_position(self._engine, self._outbox.offset_key)
                            if self._outbox is not None else None)
                async with self._engine.connect() as conn:
                    rows = (await conn.execute(q)).all()
                    lineages = {r.lineage: r.id for r in rows}
                    members = (await conn.execute(
                        select(_C.id, _LINEAGE).where(_LINEAGE.in_(list(lineages))))).all() \
                        if lineages else []
                    sums: dict[str, int] = {}  # lineage -> spend
                    for period in {r.budget_period for r in rows}:
                        sums.update(await self._sums(
                            conn, period, now, [r.lineage for r in rows
                                                if r.budget_period == period]))
                if seen == self._changes:
                    break
            budgets = {r.id: KeyBudget(r.tenant_id, int(r.budget_limit_micros),
                                       None if r.budget_alert_micros is None
                                       else int(r.budget_alert_micros),
                                       cast(Period, r.budget_period), r.budget_alerted)
                       for r in rows if r.budget_period in PERIODS}
            starts = {k: period_bounds(now, b.period)[0] for k, b in budgets.items()}
            lineage_of = {r.id: r.lineage for r in rows}
            spent = {k: (starts[k], sums.get(lineage_of[k], 0)) for k in budgets}
            alias = {m: lineages[lin] for m, lin in members if lineages.get(lin) in budgets}
            # No await from here on: the outbox read and the swap see the same appends.
            if self._outbox is not None and position is not None and budgets:
                for r in self._outbox.pending(position):
                    k = alias.get(r.key_id, r.key_id)
                    if k in spent and r.created_at >= starts[k]:
                        spent[k] = (starts[k], spent[k][1] + to_micros(r.price))
            self._budgets, self._spent, self._alias = budgets, spent, alias
            self._due = {k for k in self._due if k in budgets}
            for k, b in budgets.items():
                self._mark_due(k, b, starts[k])

    @staticmethod
    async def _sums(conn: AsyncConnection, period: str, now: float,
                    lineages: list[str]) -> dict[str, int]:
        """Spend since the ``period`` start per lineage (of every key in it)."""
        start, _ = period_bounds(now, cast(Period, period))
        u = usage.c
        q = (select(_LINEAGE, func.coalesce(func.sum(u.price_micros), 0))
             .join(api_keys, _C.id == u.key_id)
             .where(_LINEAGE.in_(lineages), u.created_at >= start)
             .group_by(_LINEAGE))
        rows = (await conn.execute(q)).all()
        return {k: int(v) for k, v in rows}

    async def send_alerts(self) -> int:
        """Append one ``key.budget_alert`` event per key whose spend reached its
        alert this period, unless some process already did; returns how many."""
        sent = 0
        for key_id in sorted(self._due):
            self._due.discard(key_id)
            budget = self._budgets.get(key_id)
            if budget is None or budget.alert_micros is None:
                continue
            now = self._clock.now()
            (start, end), spent = period_bounds(now, budget.period), \
                self._spent_micros(key_id, budget, now)
            label = _label(start, budget.period)
            async with self._engine.begin() as conn:
                won = await conn.execute(
                    update(api_keys).where(_C.id == key_id, _C.budget_limit_micros.is_not(None),
                                           (_C.budget_alerted.is_(None))
                                           | (_C.budget_alerted != label))
                    .values(budget_alerted=label))
                if won.rowcount != 1:
                    continue  # another process sent it (or the budget was cleared)
                await conn.execute(insert(events), [{
                    "ts": now, "kind": "key.budget_alert", "subject": key_id,
                    "data": {"key_id": key_id, "tenant_id": budget.tenant_id,
                             "period": budget.period, "period_start": start, "resets_at": end,
                             "spent": str(from_micros(spent)), "limit": str(budget.limit),
                             "alert": str(from_micros(budget.alert_micros))}}])
            self._budgets[key_id] = replace(budget, alerted=label)
            log.warning("API key %s spent %s of its %s per-%s budget (alert at %s)", key_id,
                        _usd(spent), _usd(budget.limit_micros), budget.period,
                        _usd(budget.alert_micros))
            sent += 1
        return sent

    async def set_budget(self, key_id: str, limit: Decimal | None, alert: Decimal | None = None,
                         period: str = "month") -> None:
        """Set (``limit`` ``None``: clear) a key's budget. The soft alert may fire
        again only if the budget changed. ``NotFound`` for an unknown key."""
        validate_budget(limit, alert, period)
        values = {"budget_limit_micros": None if limit is None else to_micros(limit),
                  "budget_alert_micros": None if alert is None else to_micros(alert),
                  "budget_period": None if limit is None else period}
        # A repeated PUT keeps the alert state; a changed budget may alert again.
        same = and_(*(api_keys.c[name].is_not_distinct_from(v) for name, v in values.items()))
        async with self._engine.begin() as conn:
            done = await conn.execute(
                update(api_keys).where(_C.id == key_id)
                .values(**values, budget_alerted=case((same, _C.budget_alerted), else_=None)))
            if done.rowcount != 1:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
        self._changes += 1
        await self.load()


class KeyBudgetRefresh:
    """Control loop: reload budgets and spend so changes and other processes'
    charges apply within about ``interval_s``, then send due soft alerts."""

    name = "key-budget-refresh"

    def __init__(self, budgets: KeyBudgets, interval_s: float = 1.0) -> None:
        self.budgets, self.interval_s = budgets, interval_s

    async def step(self, now: float) -> None:
        """Reload, then append any soft-alert events."""
        await self.budgets.load()
        await self.budgets.send_alerts()
