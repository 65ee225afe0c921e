"""The market-maker book's money after a run: its P&L and its journal entries.

Every reservation is valued hour by hour over the measured window with the
tape's realized prices of its offer:

- *own use*: time a reserved unit served the platform's deployments within
  its term; the deployments are charged its locked term price (the transfer
  at cost, which is what smooths the price they pay), and its value at the
  market price is what the same hours would have cost on the spot market;
- *idle*: the rest of the term inside the window; a share of it is resold at
  the market price (see :class:`~cambist.market.maker.BookConfig`);
- *overrun*: a unit still serving after its term runs on at the on-demand
  price, charged to the deployments like any lease;
- *inventory left*: hours of terms that run past the end of the run, at cost.

The book's P&L is ``resale + own use at market - cost of the hours inside the
run``. The entries (posted with the rest of the run by
:func:`cambist.sim.books.post_books`) are, per reservation: ``book_reserve``
(debit ``platform:book:inventory``, credit the supplier's payable, the whole
term), ``book_own_use`` (debit ``platform:compute_cost``, credit inventory),
``book_idle`` (debit ``platform:book:cost``, credit inventory), ``book_resale``
(debit ``platform:cash``, credit ``platform:book:resale``) and ``lease_cost``
for an overrun. Inventory is left holding exactly the unexpired hours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from cambist.ledger.accounts import (
    BOOK_COST,
    BOOK_INVENTORY,
    BOOK_RESALE,
    CASH,
    COMPUTE_COST,
    supplier_payable,
)
from cambist.ledger.journal import Entry
from cambist.sim.books import unit_costs
from cambist.sim.fleet import Unit
from cambist.sim.maker import BookDesk, Reservation

__all__ = ["BOOK_ACCOUNTS", "BookResult", "settle_book", "unit_gpu_hours"]

F64 = npt.NDArray[np.float64]
BOOK_ACCOUNTS = (BOOK_INVENTORY, BOOK_COST, BOOK_RESALE)


@dataclass(slots=True)
class BookResult:
    """The book's figures over the measured window (floats: dollars, hours)."""

    reservations: int = 0
    refused: int = 0
    reserved_unit_hours: float = 0.0
    reservation_cost: float = 0.0
    """Every term bought, whole terms."""
    cost_in_run: float = 0.0
    """Reserved hours inside the run, at cost."""
    inventory_left: float = 0.0
    own_use_hours: float = 0.0
    own_use_at_cost: float = 0.0
    own_use_at_market: float = 0.0
    idle_hours: float = 0.0
    idle_cost: float = 0.0
    resold_hours: float = 0.0
    resale_revenue: float = 0.0
    overrun_cost: float = 0.0
    served: frozenset[str] = frozenset()
    """Lease ids of the deployments' units the book served."""
    hourly_cost: F64 = field(default_factory=lambda: np.zeros(0))
    """Per hour: what the deployments paid for the book's units (own use at cost, overrun)."""
    hourly_gpu_hours: F64 = field(default_factory=lambda: np.zeros(0))
    entries: list[Entry] = field(default_factory=list)

    @property
    def net(self) -> float:
        """Resale plus own use at market, less the reserved hours inside the run."""
        return self.resale_revenue + self.own_use_at_market - self.cost_in_run


def _hours(a: float, b: float, lo: float, hi: float) -> list[tuple[int, float]]:
    """(hour, seconds) of ``[a, b)`` clipped to ``[lo, hi)``, hour by hour."""
    a, b = max(a, lo), min(b, hi)
    out = []
    h = int(a // 3600)
    while h * 3600.0 < b:
        s = min(b, (h + 1) * 3600.0) - max(a, h * 3600.0)
        if s > 0:
            out.append((h, s))
        h += 1
    return out


def unit_gpu_hours(units: list[Unit], start: float, hour0: int, hours: int) -> F64:
    """GPU-hours the units were billed for, per hour of the measured window."""
    out = np.zeros(hours)
    lo, hi = hour0 * 3600.0, (hour0 + hours) * 3600.0
    for u in units:
        for h, s in _hours(u.start - start, u.billed_end() - start, lo, hi):
            out[h - hour0] += s * u.offer.gpu_count / 3600.0
    return out


def _money(x: float) -> Decimal:
    return Decimal(repr(round(x, 6)))


class _Settle:
    """Values one reservation after another into a :class:`BookResult`."""

    def __init__(self, desk: BookDesk, column: Callable[[str], int], prices: F64, start: float,
                 hour0: int, hours: int, end: float) -> None:
        self.desk, self.column, self.prices, self.start = desk, column, prices, start
        self.hour0, self.hours, self.end = hour0, hours, end
        self.lo, self.hi = hour0 * 3600.0, (hour0 + hours) * 3600.0
        self.res = BookResult(hourly_cost=np.zeros(hours), hourly_gpu_hours=np.zeros(hours))

    def _fill(self, sku: str, h: int) -> float:
        cfg = self.desk.cfg
        surge = h - self.hour0 in self.desk.surge_hours.get(sku, set())
        return cfg.surge_resale_fill if surge else cfg.resale_fill

    def add(self, r: Reservation) -> None:
        res, start = self.res, self.start
        col = self.column(r.offer.id)
        a, e = r.start - start, r.end - start
        term_h = (r.end - r.start) / 3600.0
        cost = r.price_per_hour * term_h
        res.reservations += 1
        res.reserved_unit_hours += term_h
        res.reservation_cost += cost
        left = r.price_per_hour * max(0.0, e - max(a, self.hi)) / 3600.0
        res.inventory_left += left
        own: dict[int, float] = {}
        over_cost = 0.0
        gpus = r.offer.gpu_count
        for use in r.uses:
            ua, ub = use.start - start, (use.end if use.end is not None else self.end) - start
            for h, s in _hours(ua, min(ub, e), self.lo, self.hi):
                own[h] = own.get(h, 0.0) + s
            for h, s in _hours(max(ua, e), ub, self.lo, self.hi):
                c = float(self.prices[h, col]) * s / 3600.0
                over_cost += c
                res.hourly_cost[h - self.hour0] += c
                res.hourly_gpu_hours[h - self.hour0] += s * gpus / 3600.0
        own_cost = own_market = idle_cost = revenue = 0.0
        for h, span in _hours(a, e, self.lo, self.hi):
            used = min(span, own.get(h, 0.0))
            idle = span - used
            price = float(self.prices[h, col])
            own_cost += r.price_per_hour * used / 3600.0
            own_market += price * used / 3600.0
            res.hourly_cost[h - self.hour0] += r.price_per_hour * used / 3600.0
            res.hourly_gpu_hours[h - self.hour0] += used * gpus / 3600.0
            sold = idle * self._fill(r.offer.sku or "", h)
            revenue += price * sold / 3600.0
            idle_cost += r.price_per_hour * idle / 3600.0
            res.own_use_hours += used / 3600.0
            res.idle_hours += idle / 3600.0
            res.resold_hours += sold / 3600.0
        res.cost_in_run += cost - left
        res.own_use_at_cost += own_cost
        res.own_use_at_market += own_market
        res.idle_cost += idle_cost
        res.resale_revenue += revenue
        res.overrun_cost += over_cost
        self._post(r, cost, own_cost, idle_cost, revenue, over_cost)

    def _post(self, r: Reservation, cost: float, own: float, idle: float, revenue: float,
              overrun: float) -> None:
        payable = supplier_payable(r.offer.supplier)
        lines = [("reserve", "book_reserve", BOOK_INVENTORY, payable, cost),
                 ("own", "book_own_use", COMPUTE_COST, BOOK_INVENTORY, own),
                 ("idle", "book_idle", BOOK_COST, BOOK_INVENTORY, idle),
                 ("resale", "book_resale", CASH, BOOK_RESALE, revenue),
                 ("overrun", "lease_cost", COMPUTE_COST, payable, overrun)]
        for what, kind, debit, credit, amount in lines:
            x = _money(amount)
            if x > 0:
                self.res.entries.append(Entry(
                    f"book:{r.id}:{what}", kind, [(debit, x), (credit, -x)],
                    f"book reservation {r.id} ({r.offer.id}): {what}"))


def settle_book(desk: BookDesk, units: list[Unit], costs: list[float], hourly: F64,
                column: Callable[[str], int], prices: F64, start: float, hour0: int,
                hours: int, end: float) -> tuple[list[float], F64, BookResult]:
    """The deployments' unit costs and hourly cost with the book's units taken
    out (they are paid through the book: own use at cost, overrun at spot), and
    the book's result. ``costs``/``hourly`` come from
    :func:`cambist.sim.books.unit_costs` over ``units``."""
    settle = _Settle(desk, column, prices, start, hour0, hours, end)
    for r in desk.reservations:
        settle.add(r)
    res = settle.res
    res.refused = desk.refused
    served = [u for u in units if desk.serves(u.lease_id)]
    res.served = frozenset(u.lease_id for u in served)
    _, served_hourly = unit_costs(served, column, prices, start, hour0, hours)
    adjusted = [0.0 if desk.serves(u.lease_id) else c for u, c in zip(units, costs, strict=True)]
    return adjusted, hourly - served_hourly + res.hourly_cost, res
