"""The simulated market as suppliers of the real deploy layer.

A :class:`FleetSupplier` follows the :class:`~cambist.providers.base.Supplier`
protocol for one scenario supplier and one model, the way
:class:`~cambist.providers.sim.SimSupplier` does for ``cambist up``: the lease
desk rents, polls and releases through it, the controller launches engines
on it. Underneath, each lease is a :class:`~cambist.sim.fleet.Unit` of the
run's :class:`~cambist.sim.fleet.Fleet`, rented through the scenario
supplier's own ``lease`` call (so sold-out offers, billing minimums and
spin-up times are the market's), costed and preempted exactly as in the
policy mode. Engines are the simulator's traffic model, not processes: a
launch returns a handle at once.

The adapter is per model because a unit's capacity depends on the traffic
shape of the model it serves (:mod:`cambist.sim.capacity`). It never steps the
market: the driver steps every supplier once an hour for the whole run, so
both capacity modes see the same market.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cambist.domain.errors import NotFound, OfferUnavailable
from cambist.domain.lease import LeaseState
from cambist.domain.offer import Offer
from cambist.providers.base import EngineHandle, EngineSpec, SupplierLease
from cambist.sim.fleet import Fleet, Unit

__all__ = ["FleetSupplier"]


class FleetSupplier:
    """One scenario supplier's units for one model (see the module docstring)."""

    def __init__(self, name: str, model: str, fleet: Fleet,
                 on_lease: Callable[[Unit], None] | None = None) -> None:
        self.name, self.model, self.fleet = name, model, fleet
        self.on_lease = on_lease
        self.changed = False
        """Units were taken or given back since the offer book last re-read the listing."""
        self.unsupported: dict[str, str] = {
            "real_engines": "engines are the simulator's traffic model; nothing is launched",
            "spot": "the study leases on-demand listings only",
        }
        self._by_token: dict[str, Unit] = {}
        self._by_id: dict[str, Unit] = {}
        self._unlaunched: dict[str, Unit] = {}
        """Client token (the desk's lease id) -> unit no engine was launched on yet."""

    def units(self) -> list[Unit]:
        """Every unit leased through this adapter, in lease order."""
        return list(self._by_id.values())

    @staticmethod
    def _view(unit: Unit, now: float) -> SupplierLease:
        if unit.preempted:
            state, detail = LeaseState.PREEMPTED, f"taken back at {unit.end:.0f}"
        elif unit.end is not None:
            state, detail = LeaseState.RELEASED, f"released at {unit.end:.0f}"
        elif now >= unit.ready:
            state, detail = LeaseState.RUNNING, "running"
        else:
            state, detail = LeaseState.PROVISIONING, f"provisioning until {unit.ready:.0f}"
        return SupplierLease(unit.lease_id, unit.offer.id, state, detail)

    def _unit(self, supplier_lease_id: str) -> Unit:
        try:
            return self._by_id[supplier_lease_id]
        except KeyError:
            raise NotFound(f"{self.name} has no lease {supplier_lease_id!r}",
                           param="supplier_lease_id") from None

    async def list_offers(self, now: float) -> list[Offer]:
        """The market's latest listing of this supplier (units taken since included)."""
        free = self.fleet.market.free
        return [replace(o, available=free.get(o.id, o.available))
                for o in self.fleet.market.offers if o.supplier == self.name]

    async def lease(self, offer: Offer, now: float, client_token: str) -> SupplierLease:
        """Rent one unit of ``offer`` for the model; idempotent on ``client_token``."""
        unit = self._by_token.get(client_token)
        if unit is None:
            self.changed = True
            got = await self.fleet.lease(offer, self.model, now)
            if got is None:
                # The market's free counts are stale between listings: a retry
                # in the same listing must not ask this offer again.
                self.fleet.market.sold_out(offer.id)
                raise OfferUnavailable(f"{self.name} refused a unit of {offer.id} "
                                       "(sold out since the listing)")
            unit = self._by_token[client_token] = self._by_id[got.lease_id] = got
            self._unlaunched[client_token] = unit
            if self.on_lease is not None:
                self.on_lease(unit)
        return self._view(unit, now)

    async def lease_status(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """The unit's state: provisioning until its spin-up is over, then
        running until released or taken back."""
        return self._view(self._unit(supplier_lease_id), now)

    async def release(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """Give the unit back (a no-op once it ended)."""
        unit = self._unit(supplier_lease_id)
        self.changed = self.changed or unit.end is None
        await self.fleet.release(unit, now)
        return self._view(unit, now)

    async def launch_engine(self, spec: EngineSpec) -> EngineHandle:
        """The simulated engine on the lease: serving starts at once (the
        traffic model serves it from the routing table)."""
        self._unlaunched.pop(spec.lease_id, None)
        return EngineHandle(f"http://sim.invalid/{spec.lease_id}", None, spec.lease_id,
                            spec.model)

    async def stop_engine(self, handle: EngineHandle) -> None:
        """Nothing runs, so nothing to stop."""

    def launch_due(self, now: float) -> bool:
        """Whether a live unit finished provisioning and awaits its engine (the
        controller has work to do this minute)."""
        for token, unit in list(self._unlaunched.items()):
            if unit.end is not None:
                del self._unlaunched[token]
            elif unit.ready <= now:
                return True
        return False

    async def step(self, now: float) -> None:
        """A no-op: the driver steps the scenario's suppliers (see the module docstring)."""
        return None

