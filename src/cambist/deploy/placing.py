"""The deploy controller's use of placement: which offers new replicas lease,
and when a deployment moves to a cheaper placement (make-before-break).

Both come from one solve per deployment (:func:`cambist.deploy.spec.plan_deployment`)
over its held units and the eligible market offers. New replicas take the
plan's new units. A ready deployment is re-planned when the offer book
changed or every ``replan_interval_s``; when :func:`decide_move` says the
saving pays back the move, one new replica per new unit is created and
paired with an old one; the old replica leaves routing and is released only
once its successor is healthy and routable. If the successor fails, the old
one simply stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from cambist.deploy.rebalance import MovePolicy, decide_move
from cambist.deploy.spec import (
    HELD_PREFIX,
    DeploySpec,
    eligible_offers,
    held_offers,
    plan_deployment,
)
from cambist.domain.deployment import Deployment, Replica, ReplicaState
from cambist.domain.events import EventKind
from cambist.domain.ids import new_id
from cambist.domain.lease import Lease
from cambist.domain.models import ModelSpec, find_model
from cambist.domain.offer import Offer, OfferQuery
from cambist.placement import Plan

if TYPE_CHECKING:
    from cambist.deploy.controller import DeployController

__all__ = ["Move", "Placer"]

log = logging.getLogger("cambist.deploy")


@dataclass(slots=True)
class Move:
    """A replica being replaced by a cheaper one: ``old`` goes once ``new`` serves."""

    deployment: str
    new: str
    old: str
    saving_per_hour: Decimal


class Placer:
    """Plans placements for a :class:`DeployController` (see the module docstring)."""

    def __init__(self, controller: DeployController, policy: MovePolicy) -> None:
        self.c, self.policy = controller, policy
        self.moves: dict[str, Move] = {}
        """New replica id -> the move it completes."""
        self.assigned: dict[str, Offer] = {}
        """Replica id -> the offer a move created it for."""
        self._planned_at: dict[str, float] = {}
        self._book_seen: dict[str, tuple[float | None, ...]] = {}
        self.last_move_at: dict[str, float] = {}

    async def spec(self, name: str) -> DeploySpec:
        return DeploySpec.from_json(await self.c.records.deployment_spec(name))

    def plan(self, name: str, model: ModelSpec, spec: DeploySpec, replicas: int,
             max_price_per_mtok: Decimal | None, held: list[Lease]) -> Plan:
        """Solve the deployment's placement on its held leases and the market now."""
        now = self.c.clock.now()
        book = self.c.desk.book.query(OfferQuery(), now)
        market = eligible_offers(book, model, self.c.perf, spec, max_price_per_mtok)
        held_units = held_offers(held, {o.id: o for o in book}, now)
        return plan_deployment(name, model, spec, replicas, market, held_units, self.c.perf)

    async def _held(self, live: list[Replica]) -> dict[str, Lease]:
        """Replica id -> its lease, for live replicas whose lease still runs."""
        out = {}
        for r in live:
            lease = await self.c.records.lease(r.lease_id) if r.lease_id else None
            if lease is not None and not lease.terminal:
                out[r.id] = lease
        return out

    async def targets(self, dep: Deployment, live: list[Replica],
                      waiting: list[Replica]) -> dict[str, list[Offer]]:
        """Offers to try, in order, for each replica still to lease: the plan's new
        units first, then the best eligible offers by $/Mtok."""
        if not waiting:
            return {}
        model = find_model(dep.model)
        assert model is not None
        spec = await self.spec(dep.name)
        held = await self._held(live)
        plan = self.plan(dep.name, model, spec, dep.replicas, dep.max_price_per_mtok,
                         list(held.values()))
        planned: list[Offer] = []
        wp = plan.workloads[dep.name]
        for a in wp.assignments if wp.feasible else ():
            offer = self.c.desk.book.get(a.offer_id)
            if offer is not None and not a.offer_id.startswith(HELD_PREFIX):
                planned += [offer] * a.units
        fallback = eligible_offers(self.c.desk.book.query(OfferQuery(), self.c.clock.now()),
                                   model, self.c.perf, spec, dep.max_price_per_mtok)
        fallback = [o for o in fallback if not spec.regions
                    or any(o.region.startswith(p) for p in spec.regions)][:4]
        out = {}
        for rep in waiting:
            first = [self.assigned[rep.id]] if rep.id in self.assigned else planned[:1]
            if rep.id not in self.assigned and planned:
                planned.pop(0)
            out[rep.id] = first + [o for o in fallback if o not in first]
        return out

    def _book_signature(self) -> tuple[float | None, ...]:
        book = self.c.desk.book
        return tuple(book.updated_at(s) for s in book.suppliers())

    async def step(self, dep: Deployment, now: float) -> None:
        """Re-plan a ready deployment on a market change (or every interval); move
        when it pays."""
        if str(dep.state) != "ready" or any(m.deployment == dep.name
                                             for m in self.moves.values()):
            return
        sig = self._book_signature()
        since = now - self._planned_at.get(dep.name, -1e18)
        changed = sig != self._book_seen.get(dep.name)
        if since < self.policy.replan_interval_s and not (
                changed and since >= self.policy.market_check_s):
            return
        self._planned_at[dep.name], self._book_seen[dep.name] = now, sig
        live = [r for r in await self.c.records.replicas(dep.name)
                if r.state == ReplicaState.HEALTHY]
        held = await self._held(live)
        if len(held) != len(live) or not held:
            return
        model = find_model(dep.model)
        assert model is not None
        spec = await self.spec(dep.name)
        plan = self.plan(dep.name, model, spec, dep.replicas, dep.max_price_per_mtok,
                         list(held.values()))
        by_lease = {lease.id: rid for rid, lease in held.items()}
        d = decide_move(plan, dep.name, {lease.id: lease.price_per_hour
                                          for lease in held.values()},
                        self.policy, now, self.last_move_at.get(dep.name))
        if not d.move:
            return
        self.last_move_at[dep.name] = now
        olds = [by_lease[x] for x in d.drop]
        await self.c.event(EventKind.DEPLOY_MOVED, dep.name, {
            "phase": "started", "add": list(d.add), "drop": list(d.drop),
            "saving_per_hour": str(d.saving_per_hour), "move_cost": str(d.move_cost),
            "expected_saving": str(d.expected_saving),
            "horizon_s": self.policy.horizon_s, "reason": d.reason})
        for i, offer_id in enumerate(d.add):
            offer = self.c.desk.book.get(offer_id)
            if offer is None:
                continue
            rep = Replica(id=new_id("rep"), deployment=dep.name, state=ReplicaState.PENDING,
                          lease_id=None, endpoint_id=None, created_at=now,
                          detail=f"moving to {offer_id}")
            self.assigned[rep.id] = offer
            if i < len(olds):
                self.moves[rep.id] = Move(dep.name, rep.id, olds[i], d.saving_per_hour)
            await self.c.records.insert_replica(rep)
        # The count the new placement holds (a surplus left by a restart mid-move,
        # or fewer, larger units, goes; more, smaller units come).
        target = max(1, len(held) + len(d.add) - len(olds))
        if target != dep.replicas:
            await self.c.records.set_deployment_replicas(dep.name, target)
        for old in olds[len(d.add):]:
            await self._retire(old, "moved: not in the cheaper placement")

    async def _retire(self, rep_id: str, why: str) -> None:
        for r in await self.c.records.replicas():
            if r.id == rep_id and r.state == ReplicaState.HEALTHY:
                await self.c.retire(r, why)

    async def settle_moves(self, dep: Deployment, live: list[Replica]) -> None:
        """Finish moves whose new replica serves; forget those whose new one died."""
        states = {r.id: r.state for r in await self.c.records.replicas(dep.name)}
        for new, move in list(self.moves.items()):
            if move.deployment != dep.name:
                continue
            state = states.get(new)
            if state == ReplicaState.HEALTHY:
                del self.moves[new]
                self.assigned.pop(new, None)
                await self._retire_for_move(move)
            elif state not in (ReplicaState.PENDING, ReplicaState.LEASING,
                               ReplicaState.LAUNCHING):
                del self.moves[new]
                self.assigned.pop(new, None)
                await self.c.event(EventKind.DEPLOY_MOVED, dep.name, {
                    "phase": "abandoned", "new": new, "old": move.old})

    async def _retire_for_move(self, move: Move) -> None:
        for r in await self.c.records.replicas(move.deployment):
            if r.id == move.old and r.state == ReplicaState.HEALTHY:
                await self.c.retire(r, f"replaced by {move.new} (cheaper)")
        await self.c.event(EventKind.DEPLOY_MOVED, move.deployment, {
            "phase": "completed", "new": move.new, "old": move.old,
            "saving_per_hour": str(move.saving_per_hour)})
