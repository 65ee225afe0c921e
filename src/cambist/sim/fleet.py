"""Cambist's fleet in the simulation: leased units, their endpoints, their cost.

A :class:`Unit` is one leased unit of an offer serving one model. It is rented
and released through the simulated supplier's own ``lease``/``release`` calls
(so availability, idempotency and provisioning delays are the supplier's),
becomes an :class:`~cambist.domain.endpoint.Endpoint` in the gateway's
routing table once provisioning is over, and costs the offer's realized price
for every second from lease to release, but at least the billing minimum.

A unit can also be *preempted*: its supplier takes it back at the time the
market drew for it (:meth:`Market.preempt_at`). It stops serving at once (it
leaves the routing table at the first minute boundary after the loss, which is
when the platform notices) and its cost stops at the loss, billing minimum
waived: the supplier ended the lease (as spot markets do when they interrupt).
Each loss leaves a :class:`Preemption` record; the capacity policy replaces the
unit and the record says when the fleet's capacity was whole again.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass, field
from decimal import Decimal

from cambist.domain.clock import ManualClock
from cambist.domain.endpoint import Endpoint
from cambist.domain.errors import OfferUnavailable
from cambist.domain.offer import Offer
from cambist.gateway.routing import RoutingTable
from cambist.sim.capacity import ModelShape, UnitCapacity
from cambist.sim.market import Market

__all__ = ["Fleet", "Preemption", "Unit"]

log = logging.getLogger("cambist.sim")


@dataclass(slots=True)
class Unit:
    """One leased unit serving ``model``."""

    lease_id: str
    offer: Offer
    model: str
    cap: UnitCapacity
    start: float
    ready: float
    end: float | None = None
    retire_at: float | None = None
    """When a re-placement will release it (its replacement is ready by then)."""
    preempt_at: float | None = None
    """When its supplier will take it back (``None``: never)."""
    preempted: bool = False

    @property
    def billing_minimum_s(self) -> int:
        return self.offer.billing_minimum_s

    def billed_end(self) -> float:
        """When billing stops: release, but not before the billing minimum
        (a preemption stops it at the loss)."""
        assert self.end is not None
        if self.preempted:
            return self.end
        return max(self.end, self.start + self.billing_minimum_s)

    def planned(self) -> bool:
        """Counts toward capacity the policy plans with (live, not retiring)."""
        return self.end is None and self.retire_at is None


@dataclass(slots=True)
class Preemption:
    """One unit its supplier took back, and how the fleet recovered."""

    lease_id: str
    supplier: str
    model: str
    capacity: float
    """Tokens/s the lost unit served (or was about to serve)."""
    lost_at: float
    detected_at: float
    """The minute boundary at which the platform noticed and reacted."""
    target: float
    """Planned capacity of ``model`` just before the loss (ready or provisioning,
    retiring units left out), the lost unit included."""
    planned: bool
    """The lost unit counted toward planned capacity (it was not retiring)."""
    owed: float = 0.0
    """Tokens/s of replacement still to lease (a refused lease is retried)."""
    replaced_by: list[str] = field(default_factory=list)
    restored_at: float | None = None

    @property
    def restore_s(self) -> float | None:
        """Seconds from the loss until capacity was whole again (``None``: not yet)."""
        return None if self.restored_at is None else self.restored_at - self.lost_at


class Fleet:
    """The platform's units and the routing table they are served through."""

    def __init__(self, market: Market, shapes: dict[str, ModelShape], table: RoutingTable,
                 clock: ManualClock) -> None:
        self.market, self.shapes, self.table, self.clock = market, shapes, table, clock
        self.units: list[Unit] = []
        self._routed: frozenset[str] = frozenset()
        self._n = 0
        self.leases_failed = 0
        self.refused: list[str] = []
        """Offer ids of refused leases, in order."""
        self._doom: list[tuple[float, int, Unit]] = []
        """Heap of (preemption time, lease number, unit) of live units."""
        self.preemptions: list[Preemption] = []

    def live(self, model: str | None = None) -> list[Unit]:
        """Units not released yet (of ``model``)."""
        return [u for u in self.units
                if u.end is None and (model is None or u.model == model)]

    def planned_capacity(self, model: str) -> float:
        """Tokens/s of live, non-retiring units (ready or provisioning)."""
        return sum(u.cap.tokens_per_s for u in self.live(model) if u.planned())

    def current(self, model: str) -> dict[str, int]:
        """Offer id -> planned units of ``model`` (the placement in force)."""
        out: dict[str, int] = {}
        for u in self.live(model):
            if u.planned():
                out[u.offer.id] = out.get(u.offer.id, 0) + 1
        return out

    async def lease(self, offer: Offer, model: str, now: float) -> Unit | None:
        """Rent one unit of ``offer`` for ``model``; ``None`` if the supplier refused."""
        cap = self.shapes[model].unit(offer)
        if cap is None:
            return None
        self._n += 1
        try:
            lease = await self.market.lease(offer, now, f"sim-{model}-{self._n}")
        except OfferUnavailable as exc:
            self.leases_failed += 1
            self.refused.append(offer.id)
            log.debug("lease of %s refused: %s", offer.id, exc)
            return None
        unit = Unit(lease.supplier_lease_id, offer, model, cap, now,
                    now + self.market.spin_up_s.get(offer.supplier, 0.0))
        unit.preempt_at = self.market.preempt_at(offer.supplier, unit.lease_id, now)
        if unit.preempt_at is not None:
            heapq.heappush(self._doom, (unit.preempt_at, self._n, unit))
        self.units.append(unit)
        return unit

    def serving_capacity(self, model: str, now: float) -> float:
        """Tokens/s of the units of ``model`` serving at ``now`` (ready, not released)."""
        return sum(u.cap.tokens_per_s for u in self.live(model) if u.ready <= now)

    async def preempt_due(self, now: float) -> list[Preemption]:
        """Take back every live unit whose preemption time is up to ``now``;
        returns the new records (the policy replaces the units)."""
        lost = []
        while self._doom and self._doom[0][0] <= now:
            at, _, unit = heapq.heappop(self._doom)
            if unit.end is not None:
                continue
            target = self.planned_capacity(unit.model)
            await self.market.preempt(unit.offer.supplier, unit.lease_id, unit.offer.id, at)
            unit.end, unit.preempted = at, True
            rec = Preemption(unit.lease_id, unit.offer.supplier, unit.model,
                             unit.cap.tokens_per_s, at, now, target, unit.retire_at is None)
            self.preemptions.append(rec)
            lost.append(rec)
            log.debug("unit %s of %s preempted at %.0f", unit.lease_id, unit.model, at)
        return lost

    async def release(self, unit: Unit, now: float) -> None:
        """Give ``unit`` back to its supplier."""
        if unit.end is not None:
            return
        await self.market.release(unit.offer.supplier, unit.lease_id, unit.offer.id, now)
        unit.end = now

    async def tick(self, now: float) -> None:
        """Release units whose retirement is due and route to the ready ones."""
        for u in self.live():
            if u.retire_at is not None and u.retire_at <= now:
                await self.release(u, now)
        ready = frozenset(u.lease_id for u in self.live() if u.ready <= now)
        if ready != self._routed:
            self.swap_routes(now)

    def price_now(self, unit: Unit) -> Decimal:
        """The unit's offer price per hour in the current market listing."""
        return self.market.prices.get(unit.offer.id, unit.offer.price_per_hour)

    def swap_routes(self, now: float) -> None:
        """Swap the routing table to the ready units at current prices."""
        prices = self.market.prices
        endpoints = []
        for u in self.live():
            if u.ready > now:
                continue
            endpoints.append(Endpoint(
                id=u.lease_id, model=u.model, url=f"http://sim.invalid/{u.lease_id}",
                supplier=u.offer.supplier, owner=None, healthy=True, lease_id=u.lease_id,
                sku=u.offer.sku, region=u.offer.region,
                cost_per_hour=prices.get(u.offer.id, u.offer.price_per_hour),
                capacity_tok_s=u.cap.tokens_per_s, max_concurrency=u.cap.max_batch,
                created_at=u.ready))
        self.table.swap(endpoints)
        self._routed = frozenset(e.id for e in endpoints)

    async def close(self, now: float) -> None:
        """Release every unit at the end of the run."""
        for u in self.live():
            await self.release(u, now)
