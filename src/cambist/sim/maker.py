"""The market-maker book in the simulator: reservations, own use, what is idle.

:class:`BookDesk` plugs into :class:`~cambist.sim.market.Market` (its
``book``) and carries out :func:`cambist.market.maker.decide`:

- **Every market step** (hourly) it ends the reservations whose term is over,
  adds the step's per-SKU bar (price level and GPUs available, the same
  aggregation as the live price feed) to its history, samples how many units
  of each class the platform's deployments hold, and, from ``trade_from`` on,
  asks the policy what to reserve: the base load is the fewest units of a
  class the deployments held over the last day; quotes are the suppliers'
  term prices (:meth:`Market.term_quotes`); each SKU's surge outlook comes from
  the real detector and forecaster over the lookback. Orders are leased through
  the supplier and held for the whole term.
- **Own deployments first.** The book's reserved units are listed among the
  market's offers (:meth:`BookDesk.listings`, ids ``book:...``) at their
  locked term price, so the capacity loop's placement weighs them per token
  like any offer, and during a surge they are far the cheapest; and every
  lease it asks for goes to :meth:`BookDesk.draw` first, where an idle
  reserved unit of the same class (same SKU, same GPUs per unit: the same
  capacity) serves it, so the loop draws on the book before the spot market.
  Releasing such a unit returns it to the book. The base load the book
  reserves for is, per class, the mean units the deployments held over the
  last day, rounded (they move between classes as prices move), capped so
  the GPUs reserved never exceed the fewest the deployments held in any hour
  of it.
  A unit still serving when its term ends keeps its supplier lease at the
  on-demand price (an *overrun*) until the deployment lets it go.
- **Idle time is resold** on the exchange at the offer's market price. The
  simulated exchange has no buyers of its own, so a share of the idle time
  sells (``resale_fill``; ``surge_resale_fill`` while the detector sees a surge
  of the SKU open): a modelling assumption set in the scenario file.

Accounting, after the run, is :mod:`cambist.sim.book_ledger`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from cambist.domain.errors import OfferUnavailable
from cambist.domain.lease import LeaseState
from cambist.domain.offer import Offer
from cambist.market.maker import (
    BookConfig,
    Holding,
    SurgeOutlook,
    decide,
    surge_outlook,
    unit_class,
)
from cambist.market.replay import Row, aggregate
from cambist.market.signals import Observation, detect
from cambist.providers.base import SupplierLease
from cambist.sim.market import Market

__all__ = ["BookDesk", "Reservation", "Use"]

_BASE_WINDOW = 24
"""Hourly samples of the deployments' units the base load is the minimum of."""


@dataclass(slots=True)
class Use:
    """One stretch of a reserved unit serving the platform's own deployment."""

    lease_id: str
    start: float
    end: float | None = None


@dataclass(slots=True)
class Reservation:
    """One reserved unit: its supplier lease, term, locked price and uses."""

    id: str
    lease_id: str
    offer: Offer
    start: float
    end: float
    price_per_hour: float
    """Locked unit price per hour (a float inside the simulation, like the tape)."""
    uses: list[Use] = field(default_factory=list)
    released_at: float | None = None
    """When its supplier lease ended (term end, or the end of an overrun)."""

    @property
    def unit_class(self) -> str:
        return unit_class(self.offer.sku or "", self.offer.gpu_count)

    @property
    def serving(self) -> Use | None:
        """The use in progress, if any."""
        return self.uses[-1] if self.uses and self.uses[-1].end is None else None

    def holding(self) -> Holding:
        """The reservation as the policy sees it."""
        return Holding(self.unit_class, self.start, self.end, Decimal(repr(self.price_per_hour)))


class BookDesk:
    """The book's state and actions in one simulation run (see the module docstring)."""

    def __init__(self, cfg: BookConfig, market: Market, trade_from: float) -> None:
        self.cfg, self.market, self.trade_from = cfg, market, trade_from
        self.reservations: list[Reservation] = []
        self._by_use: dict[str, Reservation] = {}
        self._n = 0
        self.bars: dict[str, deque[Observation]] = {}
        self._usage: dict[str, deque[int]] = {}
        self._class_of: dict[str, str] = {}
        """Offer id -> unit class, of every offer listed so far."""
        self._gpus: dict[str, int] = {}
        """Unit class -> GPUs per unit."""
        self._total: deque[int] = deque(maxlen=_BASE_WINDOW)
        """GPUs the deployments held, per hourly sample."""
        self.surge_hours: dict[str, set[int]] = {}
        """SKU -> hours (index from ``trade_from``) when the detector saw a surge open."""
        self.outlooks: dict[str, SurgeOutlook] = {}
        self.orders = 0
        self.refused = 0

    # -------------------------------------------------------------- the hook

    def serves(self, lease_id: str) -> bool:
        """Whether ``lease_id`` is one of the units the book served."""
        return lease_id in self._by_use

    def _idle(self, now: float) -> list[Reservation]:
        return [r for r in self.reservations if r.start <= now < r.end
                and r.released_at is None and r.serving is None]

    def listings(self, now: float) -> list[Offer]:
        """Reserved units in their term as offers, one per underlying offer, at the
        lowest locked price among them; ``available`` counts the idle ones."""
        by_offer: dict[str, list[Reservation]] = {}
        for r in self.reservations:
            if r.start <= now < r.end and r.released_at is None:
                by_offer.setdefault(r.offer.id, []).append(r)
        out = []
        for offer_id, rs in sorted(by_offer.items()):
            o = rs[0].offer
            price = min(r.price_per_hour for r in rs) / o.gpu_count
            out.append(replace(o, id=f"book:{offer_id}", term_prices=(),
                               price_per_gpu_hour=Decimal(f"{price:.4f}"),
                               available=sum(1 for r in rs if r.serving is None),
                               expires_at=now + 86400.0))
        return out

    def column(self, index: Callable[[str], int]) -> Callable[[str], int]:
        """A tape column lookup that maps a ``book:`` listing to its offer's column."""
        return lambda offer_id: index(offer_id.removeprefix("book:"))

    def draw(self, offer: Offer, now: float, token: str) -> SupplierLease | None:
        """Serve ``offer``'s lease from an idle reserved unit: of that listing
        for a ``book:`` offer, else of the offer's class (the cheapest)."""
        if offer.sku is None:
            return None
        if offer.id.startswith("book:"):
            under = offer.id.removeprefix("book:")
            idle = [r for r in self._idle(now) if r.offer.id == under]
        else:
            cls = unit_class(offer.sku, offer.gpu_count)
            idle = [r for r in self._idle(now) if r.unit_class == cls]
        if not idle:
            return None
        r = min(idle, key=lambda r: (r.price_per_hour, r.id))
        use = Use(f"book-{r.id}-{len(r.uses)}-{token}"[:120], now)
        r.uses.append(use)
        self._by_use[use.lease_id] = r
        return SupplierLease(supplier_lease_id=use.lease_id, offer_id=r.offer.id,
                             state=LeaseState.RUNNING, detail=f"reserved unit {r.id}")

    async def give_back(self, lease_id: str, now: float) -> bool:
        """End the use ``lease_id``; past its term, the reservation's lease ends too."""
        r = self._by_use.get(lease_id)
        if r is None:
            return False
        use = r.serving
        if use is not None and use.lease_id == lease_id:
            use.end = now
        if now >= r.end and r.released_at is None:
            await self._release(r, now)
        return True

    async def _release(self, r: Reservation, now: float) -> None:
        await self.market.end_lease(r.offer.supplier, r.lease_id, r.offer.id, now)
        r.released_at = now

    # ------------------------------------------------------------- each step

    async def step(self, now: float) -> None:
        """Expire terms, observe the market, and reserve what the policy orders."""
        for r in self.reservations:
            if r.released_at is None and r.end <= now and r.serving is None:
                await self._release(r, r.end)
        self._observe(now)
        if now < self.trade_from or not self.cfg.enabled:
            return
        base = self._base()
        holdings = [r.holding() for r in self.reservations if r.end > now]
        active: dict[str, int] = {}
        for h in holdings:
            active[h.unit_class] = active.get(h.unit_class, 0) + 1
        needy = {cls for cls, n in base.items() if n * self.cfg.cover >= active.get(cls, 0) + 1}
        quotes = [q for q in self.market.term_quotes() if q.unit_class in needy]
        outlooks = {sku: self._outlook(sku, now) for sku in {q.sku for q in quotes}}
        for order in decide(now, quotes, outlooks, holdings, base, self.cfg):
            offer = next(o for o in self.market.offers if o.id == order.quote.offer_id)
            for _ in range(order.units):
                await self._reserve(offer, order.quote.term_s,
                                    float(order.quote.price_per_hour), now)

    def _base(self) -> dict[str, int]:
        """Unit class -> base load in units (see the module docstring)."""
        if len(self._total) < _BASE_WINDOW:
            return {}
        gpus_left = min(self._total)
        means = {cls: sum(seen) / len(seen) for cls, seen in self._usage.items()}
        base = {}
        for cls in sorted(means, key=lambda c: (-means[c] * self._gpus[c], c)):
            n = min(round(means[cls]), gpus_left // self._gpus[cls])
            if n > 0:
                base[cls] = n
                gpus_left -= n * self._gpus[cls]
        return base

    def _outlook(self, sku: str, now: float) -> SurgeOutlook:
        out = surge_outlook(sku, list(self.bars.get(sku, ())), now)
        self.outlooks[sku] = out
        return out

    async def _reserve(self, offer: Offer, term_s: float, price: float, now: float) -> None:
        self._n += 1
        rid = f"r{self._n}"
        try:
            lease = await self.market.reserve(offer, now, f"book-{rid}")
        except OfferUnavailable:
            self.refused += 1
            self.market.sold_out(offer.id)
            return
        self.orders += 1
        self.reservations.append(Reservation(rid, lease.supplier_lease_id, offer, now,
                                             now + term_s, price))

    def _observe(self, now: float) -> None:
        """Add this step's bar per SKU, the surge flags and the deployments' units."""
        keep = max(24, round(self.cfg.lookback_s / 3600))
        for sku, obs in aggregate((Row.of(o) for o in self.market.offers), now).items():
            self.bars.setdefault(sku, deque(maxlen=keep)).append(obs)
        hour = int((now - self.trade_from) // 3600)
        for sku in {(r.offer.sku or "") for r in self.reservations if r.released_at is None}:
            bars = list(self.bars.get(sku, ()))
            if any(s.kind == "surge" and s.end is None for s in detect(sku, bars)):
                self.surge_hours.setdefault(sku, set()).add(hour)
        own = {r.offer.id: 0 for r in self.reservations}
        for r in self.reservations:
            if r.released_at is None:
                own[r.offer.id] += 1
        for o in self.market.offers:
            if o.sku is not None:
                self._class_of[o.id] = unit_class(o.sku, o.gpu_count)
                self._gpus[self._class_of[o.id]] = o.gpu_count
        units: dict[str, int] = {}
        # Every held offer, listed now or not: units stay held on withdrawn offers.
        for offer_id, held in self.market.held.items():
            n, cls = held - own.get(offer_id, 0), self._class_of.get(offer_id)
            if n > 0 and cls is not None:
                units[cls] = units.get(cls, 0) + n
        for r in self.reservations:
            if r.serving is not None:
                units[r.unit_class] = units.get(r.unit_class, 0) + 1
                self._gpus[r.unit_class] = r.offer.gpu_count
        for cls in set(units) | set(self._usage):
            self._usage.setdefault(cls, deque(maxlen=_BASE_WINDOW)).append(units.get(cls, 0))
        self._total.append(sum(n * self._gpus[c] for c, n in units.items()))
