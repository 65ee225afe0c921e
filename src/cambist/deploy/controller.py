"""The deployment controller: desired state -> leases -> engines -> endpoints.

Each replica is a small state machine advanced by :meth:`DeployController.step`:
``pending`` -> ``leasing`` (cheapest $/Mtok offer leased) -> ``launching``
(lease running, engine starting) -> ``healthy`` (endpoint registered). Slow
supplier calls run as tasks so a step returns at once; the same steps run
under the live scheduler and the simulator's virtual clock. A replica that
fails (engine died, lease preempted) is torn down and a replacement is
created on the next step.

A deployment sized by count holds ``replicas`` replicas. An autoscaled one,
once :meth:`DeployController.scale_capacity` has given it a capacity to hold,
is sized in output tokens/s instead: a deficit (a scale-up, or a lost unit)
is leased at the cheapest $/Mtok over a short list of offers, a surplus is
released dearest $/Mtok first (see :mod:`cambist.deploy.sizing`), and its
``replicas`` just counts the replicas that hold that capacity.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from decimal import Decimal
from typing import Any

from cambist.deploy.autoscale import ScaleDecision
from cambist.deploy.leasing import LeaseDesk
from cambist.deploy.placing import Placer
from cambist.deploy.rebalance import MovePolicy
from cambist.deploy.records import Records
from cambist.deploy.sizing import HeldUnit, surplus
from cambist.deploy.spec import DeploySpec
from cambist.domain.clock import Clock
from cambist.domain.deployment import LIVE_REPLICA_STATES as LIVE
from cambist.domain.deployment import Deployment, DeploymentState, Replica, ReplicaState
from cambist.domain.endpoint import Endpoint
from cambist.domain.errors import Conflict, InvalidRequest, NoCapacity, NotFound
from cambist.domain.events import EventKind
from cambist.domain.ids import new_id
from cambist.domain.lease import Lease, LeaseState
from cambist.domain.models import MODEL_CATALOG, ModelSpec, find_model
from cambist.domain.money import quantize_usd
from cambist.domain.offer import Offer, OfferQuery
from cambist.perf.model import PerfModel
from cambist.placement.rank import Quote, rank_for_model
from cambist.providers.base import EngineHandle, EngineSpec
from cambist.store.events import EventLog

__all__ = ["DeployController"]

log = logging.getLogger("cambist.deploy")

InFlight = Callable[[str], Awaitable[int | None]]
"""Requests an engine at a URL is still serving (``None``: it does not answer)."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{0,62}$")


class DeployController:
    """Owns deployments and their replicas; see the module docstring."""

    name = "deploy-reconcile"

    def __init__(self, *, records: Records, desk: LeaseDesk, perf: PerfModel, events: EventLog,
                 clock: Clock, time_scale: float = 1.0, interval_s: float = 0.5,
                 retry_backoff_s: float = 3.0, drain_timeout_s: float = 30.0,
                 in_flight: InFlight | None = None,
                 endpoints_changed: Callable[[], Awaitable[None]] | None = None,
                 moves: MovePolicy | None = None) -> None:
        self.records, self.desk, self.perf = records, desk, perf
        self.events, self.clock = events, clock
        self.time_scale = time_scale
        self.interval_s = interval_s
        self.retry_backoff_s = retry_backoff_s
        self.drain_timeout_s = drain_timeout_s
        self.in_flight = in_flight
        # Lets the in-process gateway swap its routing table at once, so a
        # replica is routable before its deployment reports ready.
        self.endpoints_changed = endpoints_changed
        self._drain_started: dict[str, float] = {}
        self.engines: dict[str, tuple[str, EngineHandle]] = {}  # replica id -> (supplier, handle)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_failure: dict[str, float] = {}
        # Placement (the solver), re-placement and make-before-break moves.
        self.placer = Placer(self, moves or MovePolicy())
        self.capacity_targets: dict[str, ScaleDecision] = {}
        """Autoscaled deployment -> the capacity it was last told to hold."""

    # ---- public operations -------------------------------------------------
    def quotes(self, model: ModelSpec, max_cost: Decimal | None = None) -> list[Quote]:
        """Offers that can serve ``model``, cheapest $/Mtok first."""
        offers = self.desk.book.query(OfferQuery(), self.clock.now())
        return rank_for_model(offers, model, self.perf, max_cost_per_mtok=max_cost)

    async def create(self, model_name: str, *, replicas: int = 1, owner: str | None = None,
                     max_price_per_mtok: Decimal | None = None, client_token: str | None = None,
                     name: str | None = None, spec: DeploySpec | None = None) -> Deployment:
        """Record a deployment (idempotent on ``client_token``); replicas come up on steps.

        The placement solver sizes and checks it first: with ``spec.tokens_per_s``
        the replica count is what the cheapest feasible placement needs; a
        deployment no placement can serve is refused with the solver's reason."""
        if client_token:
            existing = await self.records.deployment_by_token(client_token)
            if existing is not None:
                return existing
        model = find_model(model_name)
        if model is None:
            raise InvalidRequest(f"unknown model {model_name!r}; catalog: "
                                 f"{', '.join(sorted(MODEL_CATALOG))}", param="model")
        if not 1 <= replicas <= 64:
            raise InvalidRequest("replicas must be between 1 and 64", param="replicas")
        spec = spec or DeploySpec()
        if spec.autoscaled:
            assert spec.max_replicas is not None
            replicas = min(max(replicas, spec.min_replicas), spec.max_replicas)
        if not self.quotes(model, max_price_per_mtok):
            cheapest = self.quotes(model)
            hint = (f"; the cheapest offer costs ${cheapest[0].cost_per_mtok:.4f}/Mtok"
                    if cheapest else "")
            raise NoCapacity(f"no offer can serve {model.name} under the price cap{hint}")
        name = name or f"{model.name}-{new_id('d', 2)[2:]}"
        plan = self.placer.plan(name, model, spec, replicas, max_price_per_mtok, [])
        wp = plan.workloads[name]
        if not wp.feasible:
            raise NoCapacity(f"no placement can serve {model.name}: {wp.reason}")
        if spec.tokens_per_s is not None and not spec.autoscaled:
            replicas = wp.replicas
        if not _NAME.match(name):
            raise InvalidRequest("deployment names use a-z, 0-9, '.', '-' (max 63)",
                                 param="name")
        if await self.records.deployment(name) is not None:
            raise Conflict(f"deployment {name!r} exists; choose another --name")
        now = self.clock.now()
        dep = Deployment(name=name, model=model.name, replicas=replicas, owner=owner,
                         state=DeploymentState.DEPLOYING, created_at=now,
                         max_price_per_mtok=max_price_per_mtok, client_token=client_token)
        reps = [self._new_replica(name, now) for _ in range(replicas)]
        # The plan just solved names the units: the first leases need no second solve.
        units = [o for a in wp.assignments for o in
                 [self.desk.book.get(a.offer_id)] * a.units if o is not None]
        for rep, offer in zip(reps, units, strict=False):
            self.placer.assigned[rep.id] = offer
        await self.records.insert_deployment(dep, reps, spec.to_json())
        await self._event(name, "created", model=model.name, replicas=replicas,
                          planned_per_hour=str(wp.cost_per_hour), solver=plan.solver)
        return dep

    async def undeploy(self, name: str) -> Deployment:
        """Drain and release a deployment (finished by the following steps)."""
        dep = await self.records.deployment(name)
        if dep is None:
            raise NotFound(f"no deployment {name!r}; see 'cambist deployments'", param="name")
        if dep.state in (DeploymentState.STOPPED, DeploymentState.DRAINING):
            return dep
        await self.records.set_deployment_state(name, DeploymentState.DRAINING)
        for rep in await self.records.replicas(name):
            if rep.endpoint_id:
                await self.records.remove_endpoint(rep.endpoint_id, self.clock.now())
        await self._endpoints_changed()
        await self._event(name, "draining")
        return replace(dep, state=DeploymentState.DRAINING)

    # ---- the loop ----------------------------------------------------------
    async def step(self, now: float) -> None:
        """Advance every deployment toward its desired state."""
        for dep in await self.records.deployments():
            if dep.state == DeploymentState.STOPPED:
                continue
            reps = await self.records.replicas(dep.name)
            if dep.state == DeploymentState.DRAINING:
                await self._drain(dep, reps, now)
                continue
            await self._reconcile(dep, reps, now)
            await self.placer.step(dep, now)

    async def _reconcile(self, dep: Deployment, reps: list[Replica], now: float) -> None:
        await self._drain_retired(reps, now)
        live = [r for r in reps if r.state in LIVE]
        backed_off = now - self._last_failure.get(dep.name, 0) > self.retry_backoff_s
        target = self.capacity_targets.get(dep.name)
        if target is not None:
            if backed_off:
                live += await self._top_up(dep, target, now)
        elif len(live) < dep.replicas and backed_off:
            for _ in range(dep.replicas - len(live)):
                rep = self._new_replica(dep.name, now)
                await self.records.insert_replica(rep)
                live.append(rep)
                await self._event(dep.name, "replacement", replica=rep.id)
        idle = [r for r in live if not (r.id in self._tasks and not self._tasks[r.id].done())]
        choices = await self.placer.targets(dep, live, [r for r in idle if r.state in (
            ReplicaState.PENDING, ReplicaState.LEASING) and not r.lease_id])
        for rep in idle:
            if rep.state == ReplicaState.PENDING:
                self._spawn(rep.id, self._lease(dep, rep, choices.get(rep.id, [])))
            elif rep.state == ReplicaState.LEASING and rep.lease_id:
                lease = await self.records.lease(rep.lease_id)
                if lease is None or lease.terminal:
                    await self._fail(dep, rep, "lease ended before the engine started")
                elif lease.state == LeaseState.RUNNING:
                    self._spawn(rep.id, self._launch(dep, rep))
            elif rep.state == ReplicaState.LEASING:
                self._spawn(rep.id, self._lease(dep, rep, choices.get(rep.id, [])))
            elif rep.state == ReplicaState.HEALTHY and rep.lease_id:
                lease = await self.records.lease(rep.lease_id)
                if lease is not None and lease.terminal:
                    await self._fail(dep, rep, f"lease {lease.state}")
        healthy = sum(1 for r in live if r.state == ReplicaState.HEALTHY)
        await self.placer.settle_moves(dep, live)
        state = (DeploymentState.READY if healthy >= dep.replicas
                 else DeploymentState.DEGRADED if healthy else DeploymentState.DEPLOYING)
        if state != dep.state:
            await self.records.set_deployment_state(dep.name, state)
            await self._event(dep.name, str(state), healthy=healthy)

    def _spawn(self, key: str, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks[key] = asyncio.create_task(coro, name=f"replica:{key}")

    async def _lease(self, dep: Deployment, rep: Replica, choices: list[Offer]) -> None:
        """Lease the planned offer (then the next best eligible ones) for ``rep``."""
        model = find_model(dep.model)
        assert model is not None
        existing = await self.records.lease_by_token(rep.id)
        if existing is not None and not existing.terminal:
            await self._save(replace(rep, state=ReplicaState.LEASING, lease_id=existing.id))
            return
        await self._save(replace(rep, state=ReplicaState.LEASING, detail="choosing offer"))
        for offer in choices:
            try:
                lease = await self.desk.lease_offer(offer, owner=dep.owner, client_token=rep.id)
            except Exception as exc:
                log.info("lease of %s for %s failed: %s", offer.id, rep.id, exc)
                continue
            if rep.id not in self.placer.moves:
                self.placer.assigned.pop(rep.id, None)
            assert offer.sku is not None
            per_mtok = quantize_usd(self.perf.estimate(model, offer.sku, offer.gpu_count)
                                    .cost_per_mtok(offer.price_per_hour))
            await self._save(replace(rep, state=ReplicaState.LEASING, lease_id=lease.id,
                                     detail=f"leased {offer.id} at ${per_mtok:.4f}/Mtok"))
            await self._event(dep.name, "leased", replica=rep.id, lease=lease.id,
                              offer=offer.id, cost_per_mtok=str(per_mtok))
            return
        await self._fail(dep, rep, "no offer could be leased")

    async def _launch(self, dep: Deployment, rep: Replica) -> None:
        assert rep.lease_id
        lease = await self.records.lease(rep.lease_id)
        model = find_model(dep.model)
        assert lease is not None and model is not None and lease.sku is not None
        await self._save(replace(rep, state=ReplicaState.LAUNCHING, detail="starting engine"))
        supplier = self.desk.suppliers.get(lease.supplier)
        spec = EngineSpec(model=model.name, sku=lease.sku, gpu_count=lease.gpu_count,
                          lease_id=lease.id, time_scale=self.time_scale)
        try:
            handle = await supplier.launch_engine(spec)
        except Exception as exc:
            await self._fail(dep, rep, f"engine did not start: {exc}")
            return
        await self.serve(dep, rep, lease, handle)

    async def serve(self, dep: Deployment, rep: Replica, lease: Lease,
                    handle: EngineHandle) -> None:
        """Take a started engine on (also one adopted after a restart): its
        endpoint, then the replica healthy."""
        self.engines[rep.id] = (lease.supplier, handle)
        model = find_model(dep.model)
        assert model is not None and lease.sku is not None
        est = self.perf.estimate(model, lease.sku, lease.gpu_count)
        ep = Endpoint(
            id=new_id("ep"), model=model.name, url=handle.url, supplier=lease.supplier,
            owner=dep.owner, healthy=True, deployment=dep.name, lease_id=lease.id, sku=lease.sku,
            region=lease.region, cost_per_hour=lease.price_per_hour,
            capacity_tok_s=est.throughput_tok_s, max_concurrency=max(1, est.max_batch),
            context_length=model.context_length, created_at=self.clock.now())
        await self.records.insert_endpoint(ep)
        await self._endpoints_changed()
        await self._save(replace(rep, state=ReplicaState.HEALTHY, endpoint_id=ep.id,
                                 detail=f"serving at {handle.url}"))
        await self._event(dep.name, "healthy", replica=rep.id, endpoint=ep.id, url=handle.url)

    async def _fail(self, dep: Deployment, rep: Replica, why: str) -> None:
        """Tear a replica down: endpoint out, engine stopped, lease released."""
        self._last_failure[dep.name] = self.clock.now()
        await self._teardown(rep)
        await self._save(replace(rep, state=ReplicaState.FAILED, detail=why))
        await self._event(dep.name, "replica_failed", replica=rep.id, reason=why)

    async def replica_unhealthy(self, replica_id: str, why: str) -> None:
        """Called by the health probe when an engine stops answering."""
        for rep in await self.records.replicas():
            if rep.id == replica_id and rep.state == ReplicaState.HEALTHY:
                dep = await self.records.deployment(rep.deployment)
                assert dep is not None
                await self._fail(dep, rep, why)

    async def _endpoints_changed(self) -> None:
        if self.endpoints_changed is not None:
            await self.endpoints_changed()

    async def _teardown(self, rep: Replica) -> None:
        if rep.endpoint_id:
            await self.records.remove_endpoint(rep.endpoint_id, self.clock.now())
            await self._endpoints_changed()
        eng = self.engines.pop(rep.id, None)
        if eng is not None:
            supplier, handle = eng
            try:
                await self.desk.suppliers.get(supplier).stop_engine(handle)
            except Exception:
                log.info("engine of %s was already gone", rep.id)
        if rep.lease_id:
            await self.desk.release(rep.lease_id)

    async def _drain(self, dep: Deployment, reps: list[Replica], now: float) -> None:
        """Endpoints left routing at undeploy; wait (up to ``drain_timeout_s``)
        for the requests still running on each engine, then tear it down."""
        started = self._drain_started.setdefault(dep.name, now)
        waiting = False
        for rep in reps:
            if rep.state in (ReplicaState.STOPPED, ReplicaState.FAILED):
                continue
            task = self._tasks.get(rep.id)
            if task is not None and not task.done():
                waiting = True  # let an in-progress lease/launch settle first
                continue
            if await self._busy(rep) and now - started < self.drain_timeout_s:
                waiting = True
                continue
            await self._teardown(rep)
            await self._save(replace(rep, state=ReplicaState.STOPPED, detail="undeployed"))
        if waiting:
            return
        self._drain_started.pop(dep.name, None)
        await self.records.set_deployment_state(dep.name, DeploymentState.STOPPED)
        await self._event(dep.name, "stopped")

    async def retire(self, rep: Replica, why: str) -> None:
        """Take ``rep`` out of routing now; it is released once idle (or after
        ``drain_timeout_s``) by the following steps."""
        if rep.endpoint_id:
            await self.records.remove_endpoint(rep.endpoint_id, self.clock.now())
            await self._endpoints_changed()
        self._drain_started[rep.id] = self.clock.now()
        await self._save(replace(rep, state=ReplicaState.DRAINING, endpoint_id=None,
                                 detail=why))

    async def _drain_retired(self, reps: list[Replica], now: float) -> None:
        for rep in reps:
            if rep.state != ReplicaState.DRAINING:
                continue
            started = self._drain_started.setdefault(rep.id, now)
            if await self._busy(rep) and now - started < self.drain_timeout_s:
                continue
            self._drain_started.pop(rep.id, None)
            await self._teardown(rep)
            await self._save(replace(rep, state=ReplicaState.STOPPED, detail=rep.detail))

    async def scale(self, name: str, replicas: int, why: str, **data: object) -> None:
        """Set a deployment's replica count: new replicas come up on the next steps;
        surplus ones (dearest first, not-yet-serving before serving) drain and go."""
        dep = await self.records.deployment(name)
        if dep is None or dep.state in (DeploymentState.DRAINING, DeploymentState.STOPPED):
            return
        if replicas == dep.replicas:
            return
        await self.records.set_deployment_replicas(name, replicas)
        await self.event(EventKind.DEPLOY_SCALED, name, {
            "from": dep.replicas, "to": replicas, "why": why, **data})
        if replicas > dep.replicas:
            return
        live = [r for r in await self.records.replicas(name) if r.state in LIVE]
        price: dict[str, Decimal] = {}
        for r in live:
            lease = await self.records.lease(r.lease_id) if r.lease_id else None
            price[r.id] = lease.price_per_hour if lease is not None else Decimal(0)
        live.sort(key=lambda r: (r.state == ReplicaState.HEALTHY, -price[r.id]))
        for rep in live[: len(live) - replicas]:
            await self._scale_down(rep, why)

    # ---- capacity (autoscaled deployments) ---------------------------------
    async def scale_capacity(self, name: str, decision: ScaleDecision, units: list[HeldUnit],
                             **data: object) -> None:
        """Hold the capacity ``decision`` asks of autoscaled deployment ``name``
        (``units``: what it holds now, from :meth:`Placer.held_units`): a deficit is leased
        now at the cheapest $/Mtok; when the decision shrinks, the surplus above
        its ``keep_tok_s`` drains and goes, dearest $/Mtok first, none inside its
        billing minimum, never below the spec's ``min_replicas``."""
        dep = await self.records.deployment(name)
        if dep is None or dep.state in (DeploymentState.DRAINING, DeploymentState.STOPPED):
            return
        self.capacity_targets[name] = decision
        spec = await self.placer.spec(name)
        have = sum(u.tok_s for u in units)
        before = len(units)
        after, why = before, decision.reason
        if decision.need_tok_s > have + 1e-9:
            after += len(await self._add_capacity(dep, spec, decision.need_tok_s - have,
                                                  before, "scale_up"))
        elif decision.shrink:
            drop = set(surplus(units, decision.keep_tok_s, min_units=spec.min_replicas))
            for rep in await self.records.replicas(name):
                if rep.id in drop:
                    await self._scale_down(rep, why)
            after -= len(drop)
        if after == before:
            return
        await self.records.set_deployment_replicas(name, after)
        await self.event(EventKind.DEPLOY_SCALED, name, {
            "from": before, "to": after, "why": why, "held_tok_s": round(have, 1),
            "need_tok_s": round(decision.need_tok_s, 1),
            "keep_tok_s": round(decision.keep_tok_s, 1),
            "forecast_tok_s": None if decision.forecast_tok_s is None
            else round(decision.forecast_tok_s, 1), **data})

    async def _top_up(self, dep: Deployment, target: ScaleDecision, now: float) \
            -> list[Replica]:
        """Replace capacity lost since the last decision (a failed replica, a
        lease refused): lease what is short of its need."""
        units = await self.placer.held_units(dep.name, now)
        have = sum(u.tok_s for u in units)
        if target.need_tok_s <= have + 1e-9:
            return []
        spec = await self.placer.spec(dep.name)
        new = await self._add_capacity(dep, spec, target.need_tok_s - have, len(units),
                                       "replacement")
        if new:
            await self.records.set_deployment_replicas(dep.name, len(units) + len(new))
        return new

    async def _add_capacity(self, dep: Deployment, spec: DeploySpec, deficit_tok_s: float,
                            count: int, step: str) -> list[Replica]:
        """New replicas, each planned on one unit of the cheapest cover of
        ``deficit_tok_s`` (no more than the spec's ``max_replicas`` in all)."""
        offers = await self.placer.cover(dep, spec, deficit_tok_s)
        if spec.max_replicas is not None:
            offers = offers[:max(0, spec.max_replicas - count)]
        now = self.clock.now()
        out = []
        for offer in offers:
            rep = self._new_replica(dep.name, now)
            self.placer.assigned[rep.id] = offer
            await self.records.insert_replica(rep)
            await self._event(dep.name, step, replica=rep.id, offer=offer.id)
            out.append(rep)
        return out

    async def _scale_down(self, rep: Replica, why: str) -> None:
        """Stop leasing or launching ``rep`` and retire it (it drains first)."""
        task = self._tasks.pop(rep.id, None)
        if task is not None and not task.done():
            task.cancel()
        self.placer.assigned.pop(rep.id, None)
        await self.retire(rep, f"scaled down: {why}")

    async def _busy(self, rep: Replica) -> bool:
        eng = self.engines.get(rep.id)
        if eng is None or self.in_flight is None:
            return False
        return bool(await self.in_flight(eng[1].url))

    # ---- helpers -----------------------------------------------------------
    @staticmethod
    def _new_replica(deployment: str, now: float) -> Replica:
        return Replica(id=new_id("rep"), deployment=deployment, state=ReplicaState.PENDING,
                       lease_id=None, endpoint_id=None, created_at=now)

    async def _save(self, rep: Replica) -> None:
        await self.records.save_replica(rep)

    async def _event(self, deployment: str, step: str, **data: object) -> None:
        await self.event(EventKind.DEPLOY_STEP, deployment, {"step": step, **data})

    async def event(self, kind: str, deployment: str, data: dict[str, object]) -> None:
        """Append one event about ``deployment`` (money as strings)."""
        await self.events.append([{"ts": self.clock.now(), "kind": kind,
                                   "subject": deployment, "data": data}])

    async def settle(self) -> None:
        """Wait for in-flight replica work (a simulator driving time itself calls this
        between steps so leases and launches finish in virtual time)."""
        await asyncio.gather(*(t for t in self._tasks.values() if not t.done()),
                             return_exceptions=True)

    async def close(self) -> None:
        """Cancel in-flight replica work and stop every engine this process runs."""
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        for supplier, handle in list(self.engines.values()):
            try:
                await self.desk.suppliers.get(supplier).stop_engine(handle)
            except Exception:
                log.info("engine %s already stopped", handle.url)
        self.engines.clear()
