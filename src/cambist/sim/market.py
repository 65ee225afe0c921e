"""The simulated market: real :class:`~cambist.providers.sim.SimSupplier` objects
configured from the scenario, stepped on the virtual clock, and taped.

Each scenario supplier is the shipped simulated supplier with the scenario's
changes applied through its public constructor (profile, price levels of the
listed GPUs only, provision delay = spin-up time, episode profile). Every
market step lists the offers (on-demand ones; spot is left out of the study)
and appends a row to the :class:`MarketTape`: each offer's realized price and
the units available *to the platform* (what the supplier lists plus what the
platform itself holds), which the baselines and the hindsight oracle read.

Preemptions: the scenario's ``preemption_per_hour`` (per supplier) gives each
leased unit an exponential lifetime drawn when it is leased, from a generator
seeded by the run's seed, the supplier and the lease id (so a seed names the
same losses whatever else the run draws; a zero rate draws nothing). At that
time the supplier takes the unit back (:meth:`Market.preempt`). The study
leases on-demand listings, so the rate stands for a spot-style reclaim or an
instance failure alike; the suppliers' own spot offers stay out of it.

Reserved terms: each supplier may offer units for a fixed term (a day, a week)
at a discount off the current on-demand price, locked for the term, as the
scenario file says (:meth:`Market.term_quotes`). A reservation is an ordinary
supplier lease held for the term (:meth:`Market.reserve`). When the optional
market-maker book is plugged in (:attr:`Market.book`, see
:mod:`cambist.sim.maker`), every lease the platform asks for is first offered
to the book, which serves it from an idle reserved unit of the same class if
it has one, and the book steps with the market. The book's idle units are also
listed among the offers (ids ``book:...``, at their locked term price, off the
tape) so that placement weighs them like any other offer. Reserved capacity is
not reclaimed by preemption.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from cambist.domain.errors import OfferUnavailable
from cambist.domain.offer import Offer
from cambist.market.maker import TermQuote
from cambist.providers.base import SupplierLease
from cambist.providers.catalog import price_levels_for
from cambist.providers.lease_store import LeaseRecord, LeaseStore
from cambist.providers.sim import SimSupplier
from cambist.providers.sim_profiles import DEFAULT_EPISODES, PROFILES
from cambist.sim.scenario import Scenario, SupplierSpec

__all__ = ["Inventory", "Market", "MarketTape"]

_PRICE_QUANTUM = Decimal("0.0001")


class Inventory(Protocol):
    """What the market needs of a book of reserved units (:mod:`cambist.sim.maker`)."""

    def draw(self, offer: Offer, now: float, token: str) -> SupplierLease | None:
        """Serve a lease of ``offer`` from an idle reserved unit of its class, if any."""
        ...

    def give_back(self, lease_id: str, now: float) -> Awaitable[bool]:
        """Take back a unit it served (``False``: ``lease_id`` is not one of its)."""
        ...

    def serves(self, lease_id: str) -> bool:
        """Whether ``lease_id`` is a unit the book served."""
        ...

    def listings(self, now: float) -> list[Offer]:
        """The book's reserved units in their term as offers (ids ``book:...``, at
        their locked price; ``available``: the idle ones)."""
        ...

    def step(self, now: float) -> Awaitable[None]:
        """Act on the market just listed at ``now``."""
        ...


@dataclass(slots=True)
class MarketTape:
    """Offers seen and, per market step, their price per unit-hour and units available."""

    offers: list[Offer] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    _rows: list[dict[int, tuple[float, int]]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def record(self, now: float, offers: list[Offer], held: dict[str, int]) -> None:
        """Append the market at ``now``; ``held`` are the platform's own units per offer."""
        row: dict[int, tuple[float, int]] = {}
        for o in offers:
            i = self._index.get(o.id)
            if i is None:
                i = self._index[o.id] = len(self.offers)
                self.offers.append(o)
            row[i] = (float(o.price_per_hour), o.available + held.get(o.id, 0))
        self.times.append(now)
        self._rows.append(row)

    def index(self, offer_id: str) -> int:
        """Column of an offer."""
        return self._index[offer_id]

    def arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """``(price, avail)`` of shape ``(steps, offers)``; an absent offer has
        ``avail == 0`` and its last known price (so costs stay finite)."""
        steps, n = len(self._rows), len(self.offers)
        price = np.zeros((steps, n))
        avail = np.zeros((steps, n), dtype=np.int64)
        last = np.array([float(o.price_per_hour) for o in self.offers])
        for s, row in enumerate(self._rows):
            for i, (p, a) in row.items():
                last[i] = p
                avail[s, i] = a
            price[s] = last
        return price, avail


class _MemoryLeaseStore(LeaseStore):
    """A supplier's lease book kept in memory only.

    ``SimSupplier`` writes its whole lease book to JSON on every lease and
    release, so a month of re-placements would spend most of the run
    serializing; a simulation never restarts, so it needs no file. The
    units held are tracked incrementally for the same reason. (The entry point
    this wants in ``providers``: ``SimSupplier(..., lease_store=...)``.)"""

    def __init__(self, supplier: str) -> None:
        self.path = Path("/nonexistent")
        self.supplier = supplier
        self._leases: dict[str, LeaseRecord] = {}
        self._by_token: dict[str, str] = {}
        self._held: dict[str, int] = {}

    def _save(self) -> None:
        return None

    def add(self, rec: LeaseRecord) -> None:
        super().add(rec)
        self._held[rec.offer_id] = self._held.get(rec.offer_id, 0) + 1

    def release(self, supplier_lease_id: str, now: float) -> LeaseRecord:
        before = self.get(supplier_lease_id).released_at
        rec = super().release(supplier_lease_id, now)
        if before is None and rec.released_at is not None:
            self._held[rec.offer_id] -= 1
        return rec

    def units_held(self, now: float) -> dict[str, int]:
        # Spot is left out of the study, so a lease holds its unit until released.
        return {k: v for k, v in self._held.items() if v > 0}


def _supplier(spec: SupplierSpec, scenario: Scenario, state_dir: Path, seed: int) \
        -> SimSupplier | None:
    levels = [lv for lv in price_levels_for(spec.name) if lv.gpu in scenario.market.gpus]
    if not levels:
        return None
    base = PROFILES[spec.name]
    lo, hi = base.capacity
    profile = replace(
        base,
        billing_minimum_s=spec.billing_minimum_s,
        log_volatility=base.log_volatility * spec.volatility_scale,
        capacity=(max(1, round(lo * spec.capacity_scale)),
                  max(1, round(hi * spec.capacity_scale))),
    )
    episodes = replace(DEFAULT_EPISODES, per_day=scenario.market.episodes_per_day,
                       glut_price=scenario.market.glut_price,
                       surge_price=scenario.market.surge_price)
    sup = SimSupplier(spec.name, state_dir, seed=seed, provision_delay_s=spec.spin_up_s,
                      spot_preemption_per_hour=0.0, offer_ttl_s=7200.0, profile=profile,
                      levels=levels, episode_profile=episodes)
    sup._leases = _MemoryLeaseStore(spec.name)  # see _MemoryLeaseStore
    return sup


class Market:
    """The scenario's suppliers, their current offers and the tape."""

    def __init__(self, scenario: Scenario, state_dir: Path, seed: int) -> None:
        built = (_supplier(s, scenario, state_dir, seed) for s in scenario.market.suppliers)
        self.suppliers: dict[str, SimSupplier] = {s.name: s for s in built if s is not None}
        if not self.suppliers:
            raise ValueError("no supplier of the scenario lists any of its market.gpus; add a "
                             "supplier that does or list other GPUs")
        self.spin_up_s = {s.name: s.spin_up_s for s in scenario.market.suppliers}
        self.preemption_per_hour = {s.name: scenario.market.preemption_rate(s.name)
                                    for s in scenario.market.suppliers}
        self.seed = seed
        self.offers: list[Offer] = []
        self.tape = MarketTape()
        self.held: dict[str, int] = {}
        """The platform's units per offer id (kept by the fleet)."""
        self.prices: dict[str, Decimal] = {}
        """Offer id -> price per unit-hour in the latest listing."""
        self.free: dict[str, int] = {}
        """Units per listed offer nobody holds, kept current between listings."""
        self.terms = {s.name: scenario.market.term_discounts(s.name)
                      for s in scenario.market.suppliers}
        self.book: Inventory | None = None
        """The market-maker book, when the run has one."""

    async def step(self, now: float) -> None:
        """Advance every supplier's price and capacity processes to ``now`` and re-list."""
        offers: list[Offer] = []
        for sup in self.suppliers.values():
            await sup.step(now)
            offers += [o for o in await sup.list_offers(now) if not o.spot and o.sku]
        self.offers = offers
        self.free = {o.id: o.available for o in offers}
        self.prices = {o.id: o.price_per_hour for o in offers}
        self.tape.record(now, offers, self.held)
        if self.book is not None:
            await self.book.step(now)
            self._list_book(now)

    def _list_book(self, now: float) -> None:
        """Put the book's idle units among the offers (after every draw and return)."""
        assert self.book is not None
        listed = self.book.listings(now)
        self.offers = [o for o in self.offers if not o.id.startswith("book:")] + listed
        for o in listed:
            self.prices[o.id] = o.price_per_hour
            self.free[o.id] = o.available

    def available(self, offer: Offer) -> int:
        """Units of ``offer`` the platform could hold now (its own included)."""
        return offer.available + self.held.get(offer.id, 0)

    async def lease(self, offer: Offer, now: float, token: str) -> SupplierLease:
        """Rent one unit: from the book's idle reserved units if it has one of
        the class, else through the supplier's own lease call."""
        if self.book is not None:
            served = self.book.draw(offer, now, token)
            if served is not None:
                self._list_book(now)
                return served
            if offer.id.startswith("book:"):
                raise OfferUnavailable(f"the book has no idle unit of {offer.id} left")
        return await self.reserve(offer, now, token)

    async def reserve(self, offer: Offer, now: float, token: str) -> SupplierLease:
        """Rent one unit through the supplier's lease call (the book holds its
        reservations this way, for their whole term)."""
        lease = await self.suppliers[offer.supplier].lease(offer, now, token)
        self.held[offer.id] = self.held.get(offer.id, 0) + 1
        self.free[offer.id] = max(0, self.free.get(offer.id, 0) - 1)
        return lease

    async def release(self, supplier: str, lease_id: str, offer_id: str, now: float) -> None:
        """Give a unit back: to the book if it served it, else to the supplier."""
        if self.book is not None and await self.book.give_back(lease_id, now):
            self._list_book(now)
            return
        await self.end_lease(supplier, lease_id, offer_id, now)

    async def end_lease(self, supplier: str, lease_id: str, offer_id: str, now: float) -> None:
        """Give a unit back through the supplier's release call."""
        sup = self.suppliers[supplier]
        await sup.release(lease_id, now)
        self.held[offer_id] = max(0, self.held.get(offer_id, 0) - 1)
        if offer_id in self.free:
            # Ask the supplier rather than add one: while others hold more than
            # its capacity (a surge, a shock) the unit given back is not free.
            listed = [o for o in await sup.list_offers(now) if o.id == offer_id]
            self.free[offer_id] = listed[0].available if listed else 0

    def term_quotes(self) -> list[TermQuote]:
        """Reserved-term prices of every listed offer whose supplier offers terms:
        the current unit price less the term's discount, locked for the term."""
        out = []
        for o in self.offers:
            for term_s, discount in self.terms.get(o.supplier, ()):
                if o.sku is None or o.id.startswith("book:"):
                    continue
                price = (o.price_per_hour * (1 - Decimal(repr(discount)))).quantize(
                    _PRICE_QUANTUM)
                out.append(TermQuote(o.id, o.supplier, o.sku, o.gpu_count, term_s, price,
                                     self.free.get(o.id, 0)))
        return out

    def preempt_at(self, supplier: str, lease_id: str, now: float) -> float | None:
        """When the supplier will take back the unit leased as ``lease_id`` at
        ``now`` (``None``: never; see the module docstring)."""
        if self.book is not None and self.book.serves(lease_id):
            return None  # reserved capacity: the term is the supplier's promise
        rate = self.preemption_per_hour.get(supplier, 0.0)
        if rate <= 0:
            return None
        draw = random.Random(f"{self.seed}:preempt:{supplier}:{lease_id}")
        return now + draw.expovariate(rate / 3600.0)

    async def preempt(self, supplier: str, lease_id: str, offer_id: str, at: float) -> None:
        """The supplier takes the unit back at ``at``: its lease ends then. Unlike
        a release the unit is not counted free again before the next listing:
        the supplier reclaimed it (for someone else, or it broke)."""
        await self.suppliers[supplier].release(lease_id, at)
        self.held[offer_id] = max(0, self.held.get(offer_id, 0) - 1)

    def sold_out(self, offer_id: str) -> None:
        """The supplier refused a lease of ``offer_id``: none free until the next listing."""
        if offer_id in self.free:
            self.free[offer_id] = 0
