"""The real deploy layer as the simulator's capacity loop (``--capacity controller``).

Instead of the simulator's own :class:`~cambist.sim.policy.CapacityPolicy`,
each model gets one autoscaled deployment run by the real
:class:`~cambist.deploy.controller.DeployController` with its placement and
make-before-break moves (:mod:`cambist.deploy.placing`,
:class:`~cambist.deploy.rebalance.MovePolicy`), the real
:class:`~cambist.deploy.autoscale.Autoscaling` loop, the real
:class:`~cambist.deploy.leasing.LeaseDesk` and :class:`~cambist.deploy.leasing.LeaseSync`,
all on the run's :class:`~cambist.domain.clock.ManualClock`. They lease from
the simulated market through :class:`~cambist.sim.supply.FleetSupplier`
adapters; the endpoints they register are swapped into the gateway's
:class:`~cambist.gateway.routing.RoutingTable` the traffic is routed through.

One control plane per model: a unit's throughput depends on its model's
traffic shape, and the controller has one perf model (``cambist up`` uses
one too, for one workload shape). Each plane keeps its records in memory
(:mod:`cambist.sim.deploy_store`: SQLite would cost most of the run).

Discrete events, not a polling timer: at every ``interval_s`` (and at each
market listing) every loop steps; in between, the lease sync and the
controller step only in a minute where something is due (a lease finished
provisioning, a unit was lost, a replica waits for a lease or a drain) and
the autoscaler every ``autoscale_s``. A loop stepped when nothing is due
does nothing, so skipping it changes no decision. The offer book is
refreshed at each hourly market listing (the market only moves then).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from cambist.deploy.autoscale import Autoscaling, LoadSample, ScalePolicy
from cambist.deploy.controller import DeployController
from cambist.deploy.leasing import LeaseDesk, LeaseSync
from cambist.deploy.placing import Placer
from cambist.deploy.rebalance import MovePolicy
from cambist.deploy.spec import DeploySpec
from cambist.domain.clock import ManualClock
from cambist.domain.deployment import Deployment, ReplicaState
from cambist.domain.events import EventKind
from cambist.domain.lease import Lease
from cambist.domain.models import ModelSpec
from cambist.domain.offer import Offer
from cambist.gateway.routing import RoutingTable
from cambist.market.book import OfferBook
from cambist.placement import Plan
from cambist.providers.base import SupplierRegistry
from cambist.sim.deploy_store import MemoryEventLog, MemoryRecords
from cambist.sim.fleet import Fleet, Preemption, Unit
from cambist.sim.policy import Observed, PolicySettings
from cambist.sim.supply import FleetSupplier

__all__ = ["ControlledCapacity", "ControllerSettings"]

_WAITING = frozenset({ReplicaState.PENDING, ReplicaState.LAUNCHING, ReplicaState.DRAINING})
_FINISHED = frozenset({ReplicaState.STOPPED, ReplicaState.FAILED})
_LIVE = frozenset({ReplicaState.PENDING, ReplicaState.LEASING, ReplicaState.LAUNCHING,
                   ReplicaState.HEALTHY})


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """How the deploy layer is tuned for the study (the rest are its defaults)."""

    autoscale_s: float = 300.0
    """Autoscaler step (live: 30 s; here the policy mode's step: each changed
    replica count costs the controller a placement solve)."""
    scale_down_delay_s: float = 900.0
    replan_s: float = 3600.0
    """Re-plan at least this often (the market re-lists hourly)."""
    max_replicas: int = 2000
    retention_s: float = 86_400.0
    """Finished replicas older than this leave the records (see ``MemoryRecords``)."""


class _TapeJournal:
    """Receives the lease desk's cost postings. The run's books are posted from
    the fleet's units at realized hourly prices (:mod:`cambist.sim.books`);
    this tape keeps the desk's own figure (at the price leased) to compare."""

    def __init__(self) -> None:
        self.posted = Decimal(0)

    async def post_lease_cost(self, lease_id: str, supplier: str, owner_tenant: str | None,
                              amount: Decimal, fee_rate: Decimal, period_end: float) -> bool:
        self.posted += amount
        return True


class _PlatformCredit:
    """The deployments are the platform's own (no owner), so no tenant credit is asked."""

    def available(self, tenant_id: str) -> Decimal:
        return Decimal(0)


class _CountingPlacer(Placer):
    """The controller's placer, counting its solves for the report."""

    solves = 0

    def plan(self, name: str, model: ModelSpec, spec: DeploySpec, replicas: int,
             max_price_per_mtok: Decimal | None, held: list[Lease],
             tokens_per_s: float | None = None) -> Plan:
        self.solves += 1
        return super().plan(name, model, spec, replicas, max_price_per_mtok, held,
                            tokens_per_s)

    async def cover(self, dep: Deployment, spec: DeploySpec, deficit_tok_s: float) \
            -> list[Offer]:
        self.solves += 1
        return await super().cover(dep, spec, deficit_tok_s)


@dataclass(slots=True)
class _Plane:
    """One model's deploy layer."""

    model: str
    records: MemoryRecords
    events: MemoryEventLog
    suppliers: dict[str, FleetSupplier]
    desk: LeaseDesk
    controller: DeployController
    placer: _CountingPlacer
    autoscaling: Autoscaling
    sync: LeaseSync
    journal: _TapeJournal
    busy: bool = True
    """The last step left work (or endpoints changed): step again next minute."""
    autoscaled_at: float = -1e18


class _SimLoad:
    """The autoscaler's load source: what each model was asked for, from the
    driver's observations (live: the engines' metrics)."""

    def __init__(self, observed: Observed, start: float, output_tokens: dict[str, int],
                 drain_s: float, table: RoutingTable) -> None:
        self.observed, self.start = observed, start
        self.output_tokens, self.drain_s = output_tokens, drain_s
        self.table = table

    async def sample(self, deployment: str, now: float) -> LoadSample | None:
        k = int((now - self.start) // 60)
        if k < 1 or not self.table.routes(deployment):
            return None  # as live: no engine serves yet, so no metrics to read
        rate = self.observed.mean(deployment, k - 1, k)
        queued = self.observed.backlog.get(deployment, 0.0)
        # Queued tokens are demand too: drained within drain_s on top of the rate.
        return LoadSample(now, rate + queued / self.drain_s,
                          queue_depth=queued / max(1, self.output_tokens[deployment]))


@dataclass
class ControlledCapacity:
    """The deploy layer driving the fleet (see the module docstring); the driver
    calls it where it would call :class:`~cambist.sim.policy.CapacityPolicy`."""

    fleet: Fleet
    observed: Observed
    start: float
    settings: PolicySettings
    clock: ManualClock
    table: RoutingTable
    tuning: ControllerSettings = field(default_factory=ControllerSettings)
    name: str = "sim-deploy"
    planes: dict[str, _Plane] = field(default_factory=dict)
    book: OfferBook = field(default_factory=OfferBook)
    finished: dict[str, int] = field(default_factory=dict)
    """Replicas that left the records by final state (``stopped``, ``failed``)."""
    _unrestored: list[Preemption] = field(default_factory=list)
    _owing: list[Preemption] = field(default_factory=list)
    """Losses whose replacement is not leased yet (restored or not)."""
    _routes_dirty: bool = False

    def __post_init__(self) -> None:
        market = self.fleet.market
        spin = max(market.spin_up_s.values(), default=300.0)
        # The policy mode's sizing: the need fills ``target_utilization`` of the
        # capacity after a ``safety`` margin; the same shrink band.
        scale = ScalePolicy(target_utilization=self.settings.target_utilization
                            / (1.0 + self.settings.safety),
                            spin_up_s=spin, billing_minimum_s=0.0,
                            scale_down_delay_s=self.tuning.scale_down_delay_s,
                            shrink_band=self.settings.shrink_band)
        moves = MovePolicy(spin_up_s=spin, replan_interval_s=self.tuning.replan_s,
                           market_check_s=self.tuning.replan_s)
        outputs = {m: s.output_tokens for m, s in self.fleet.shapes.items()}
        load = _SimLoad(self.observed, self.start, outputs, self.settings.drain_s, self.table)
        for model, shape in self.fleet.shapes.items():
            records, events, journal = MemoryRecords(), MemoryEventLog(), _TapeJournal()
            suppliers = {s: FleetSupplier(s, model, self.fleet, self._leased)
                         for s in market.suppliers}
            registry = SupplierRegistry()
            for sup in suppliers.values():
                registry.register(sup)
            desk = LeaseDesk(book=self.book, suppliers=registry, records=records,
                             journal=journal, credit=_PlatformCredit(), events=events,
                             clock=self.clock, fee_rate=Decimal(0), period_s=86_400.0)
            controller = DeployController(
                records=records, desk=desk, perf=shape.perf, events=events, clock=self.clock,
                retry_backoff_s=30.0, drain_timeout_s=0.0,
                endpoints_changed=self._endpoints_changed(model), moves=moves)
            placer = _CountingPlacer(controller, moves)
            controller.placer = placer
            self.planes[model] = _Plane(model, records, events, suppliers, desk, controller,
                                        placer, Autoscaling(controller, load, scale),
                                        LeaseSync(desk), journal)

    def _endpoints_changed(self, model: str) -> Callable[[], Awaitable[None]]:
        async def changed() -> None:
            self.planes[model].busy = True
            self._routes_dirty = True
        return changed

    # ---- what the driver reads -------------------------------------------
    @property
    def interval_s(self) -> float:
        return self.settings.interval_s

    @property
    def solves(self) -> int:
        return sum(p.placer.solves for p in self.planes.values())

    @property
    def replacements(self) -> int:
        """Make-before-break moves completed."""
        return sum(1 for p in self.planes.values() for e in p.events.rows
                   if e["kind"] == EventKind.DEPLOY_MOVED and e["data"].get("phase") == "completed")

    # ---- the loop ----------------------------------------------------------
    async def listing(self, now: float) -> None:
        """A fresh market listing: into the offer book; deployments on the first."""
        by_supplier: dict[str, list] = {s: [] for s in self.fleet.market.suppliers}
        for o in self.fleet.market.offers:
            by_supplier[o.supplier].append(o)
        for s, offers in by_supplier.items():
            await self.book.update(s, offers, now)
        for model, plane in self.planes.items():
            if not await plane.records.deployments():
                await plane.controller.create(model, replicas=1, name=model, spec=DeploySpec(
                    ttft_ms=self.settings.ttft_ms,
                    prompt_tokens=self.fleet.shapes[model].prompt_tokens, spot=False,
                    min_replicas=1, max_replicas=self.tuning.max_replicas))
                plane.busy = True
            await self._forget_finished(plane, now)

    async def step(self, now: float) -> None:
        """Every ``interval_s``: every loop of every model steps."""
        await self._advance(now, every=True)

    async def minute(self, now: float) -> None:
        """Minutes in between: only the loops with something due step."""
        await self._advance(now, every=False)

    async def replace_lost(self, lost: list[Preemption], now: float) -> None:
        """Units just taken back: the lease sync sees them preempted and the
        controller fails their replicas now; replacements come on its next steps."""
        for p in lost:
            p.owed = p.capacity if p.planned else 0.0
            self._unrestored.append(p)
            if p.owed > 0:
                self._owing.append(p)
            self.planes[p.model].busy = True
        await self._advance(now, every=False, autoscale=False)

    def track_restores(self, now: float) -> None:
        """Close loss records once what serves the model is whole again: the
        capacity routed covers the planned capacity before the loss, or what
        the controller holds now if it scaled down meanwhile."""
        if not self._unrestored:
            return
        for p in self._unrestored:
            serving = sum(r.endpoint.capacity_tok_s for r in self.table.routes(p.model))
            planned = self.fleet.planned_capacity(p.model)
            if serving >= min(p.target, planned) - 1e-6:
                p.restored_at = now
        self._unrestored = [p for p in self._unrestored if p.restored_at is None]

    async def close(self, now: float) -> None:
        """Stop the controllers' work and release every unit."""
        for plane in self.planes.values():
            await plane.controller.close()
        await self.fleet.close(now)

    # ---- helpers -----------------------------------------------------------
    def _leased(self, unit: Unit) -> None:
        """A new unit pays off what lost units of its model are still owed, oldest first."""
        got = unit.cap.tokens_per_s
        for p in self._owing:
            if p.model != unit.model or got <= 0:
                continue
            take = min(p.owed, got)
            p.owed, got = p.owed - take, got - take
            p.replaced_by.append(unit.lease_id)
        # A loss the controller did not replace within the hour (it scaled the
        # deployment down instead) is owed nothing more.
        self._owing = [p for p in self._owing
                       if p.owed > 1e-9 and unit.start - p.lost_at < 3600.0]

    async def _advance(self, now: float, every: bool, autoscale: bool = True) -> None:
        for plane in self.planes.values():
            due = every or plane.busy or any(s.launch_due(now)
                                             for s in plane.suppliers.values())
            if autoscale and (every or now - plane.autoscaled_at >= self.tuning.autoscale_s):
                plane.autoscaled_at = now
                before = await plane.records.deployment(plane.model)
                await plane.autoscaling.step(now)
                after = await plane.records.deployment(plane.model)
                due = due or (before is not None and after is not None
                              and before.replicas != after.replicas)
            if not due:
                continue
            plane.busy = False
            await self._refresh_book(now)
            await plane.sync.step(now)
            await plane.controller.step(now)
            await plane.controller.settle()
            plane.busy = plane.busy or await self._work_left(plane)
        if self._routes_dirty:
            await self._swap_routes()

    async def _refresh_book(self, now: float) -> None:
        """Re-read the listing of every supplier whose units changed hands (as
        the live market feed does within seconds): leases must not keep asking
        for units the platform itself just took."""
        for name in self.fleet.market.suppliers:
            adapters = [p.suppliers[name] for p in self.planes.values()]
            if any(a.changed for a in adapters):
                await self.book.update(name, await adapters[0].list_offers(now), now)
                for a in adapters:
                    a.changed = False

    async def _work_left(self, plane: _Plane) -> bool:
        """Whether a replica waits on the controller (not on its supplier)."""
        dep = await plane.records.deployment(plane.model)
        if dep is None:
            return False
        reps = await plane.records.replicas(plane.model)
        live = sum(1 for r in reps if r.state in _LIVE)
        return live < dep.replicas or any(
            r.state in _WAITING or (r.state == ReplicaState.LEASING and not r.lease_id)
            for r in reps)

    async def _swap_routes(self) -> None:
        """The gateway's table from every plane's registered endpoints (what the
        live ``RoutingRefresh`` reads from the store)."""
        endpoints = []
        for plane in self.planes.values():
            endpoints += await plane.records.endpoints()
        self.table.swap(endpoints)
        self._routes_dirty = False

    async def _forget_finished(self, plane: _Plane, now: float) -> None:
        old = [r for r in await plane.records.replicas()
               if r.state in _FINISHED and now - r.created_at > self.tuning.retention_s]
        for r in old:
            self.finished[str(r.state)] = self.finished.get(str(r.state), 0) + 1
        plane.records.forget_replicas([r.id for r in old])
