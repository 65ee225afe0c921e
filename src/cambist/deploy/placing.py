"""The deploy controller's use of placement: which offers new replicas lease,
and when a deployment moves to a cheaper placement (make-before-break).

A deployment's placement is one solve (:func:`cambist.deploy.spec.plan_deployment`)
over its held units and the eligible market offers; its first replicas take
the plan's units. A capacity deficit of an autoscaled deployment is not
re-solved whole: it is covered over a short list of the cheapest offers per
token (:meth:`Placer.cover`, :mod:`cambist.deploy.sizing`), each new replica
planned on one unit. A replica with no planned unit (after a restart) takes
the next unit of a fresh solve. A lease refused falls back to the best few
offers of the short list.

A ready deployment is re-planned when the offer book changed or every
``replan_interval_s`` (an autoscaled one for the capacity it holds, or its
need if more); when :func:`decide_move`
says the saving pays back the move, one new replica per new unit is created
and paired with an old one; the old replica leaves routing and is released
only once its successor is healthy and routable. If the successor fails, the
old one simply stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from cambist.deploy.rebalance import MovePolicy, decide_move
from cambist.deploy.sizing import SHORTLIST, HeldUnit, UnitQuote, cover, estimate, shortlist
from cambist.deploy.spec import (
    HELD_PREFIX,
    DeploySpec,
    eligible_offers,
    held_offers,
    plan_deployment,
)
from cambist.domain.deployment import LIVE_REPLICA_STATES as LIVE
from cambist.domain.deployment import Deployment, Replica, ReplicaState
from cambist.domain.events import EventKind
from cambist.domain.ids import new_id
from cambist.domain.lease import Lease
from cambist.domain.models import ModelSpec, find_model
from cambist.domain.offer import Offer, OfferQuery
from cambist.perf.model import PerfEstimate
from cambist.placement import Plan

if TYPE_CHECKING:
    from cambist.deploy.controller import DeployController

__all__ = ["Move", "Placer"]

log = logging.getLogger("cambist.deploy")

FALLBACK_OFFERS = 4
"""Offers of the short list tried after a replica's planned one fails to lease."""
REPLAN_SHORTLIST = 32
"""Market offers an autoscaled deployment's periodic re-plan solves over
(cheapest per token; more than a deficit's so a supplier cap can be met)."""


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
        self._estimates: dict[tuple[str, str, int], PerfEstimate | None] = {}

    async def spec(self, name: str) -> DeploySpec:
        return DeploySpec.from_json(await self.c.records.deployment_spec(name))

    def plan(self, name: str, model: ModelSpec, spec: DeploySpec, replicas: int,
             max_price_per_mtok: Decimal | None, held: list[Lease],
             tokens_per_s: float | None = None) -> Plan:
        """Solve the deployment's placement on its held leases and the market now
        (``tokens_per_s``: sized in capacity, over the cheapest offers per token)."""
        now = self.c.clock.now()
        book = self.c.desk.book.query(OfferQuery(), now)
        if tokens_per_s is None:
            market = eligible_offers(book, model, self.c.perf, spec, max_price_per_mtok)
        else:
            market = [q.offer for q in self.shortlist(book, model, spec, max_price_per_mtok,
                                                      REPLAN_SHORTLIST)]
        held_units = held_offers(held, {o.id: o for o in book}, now)
        return plan_deployment(name, model, spec, replicas, market, held_units, self.c.perf,
                               tokens_per_s=tokens_per_s)

    def shortlist(self, book: list[Offer], model: ModelSpec, spec: DeploySpec,
                  max_price_per_mtok: Decimal | None, n: int) -> list[UnitQuote]:
        """The ``n`` cheapest $/Mtok offers of ``book`` the deployment may use."""
        return shortlist(book, model, self.c.perf, spec, max_price_per_mtok,
                         self._estimates, n)

    async def cover(self, dep: Deployment, spec: DeploySpec, deficit_tok_s: float) \
            -> list[Offer]:
        """The units that serve ``deficit_tok_s`` more of ``dep`` cheapest, one
        offer per unit (empty when the market has none)."""
        model = find_model(dep.model)
        assert model is not None
        book = self.c.desk.book.query(OfferQuery(), self.c.clock.now())
        quotes = self.shortlist(book, model, spec, dep.max_price_per_mtok, SHORTLIST)
        return cover(dep.name, model, spec, deficit_tok_s, quotes, self.c.perf)

    def unit_tok_s(self, model: ModelSpec, sku: str, gpu_count: int) -> float:
        """Output tokens/s one unit of ``gpu_count`` x ``sku`` serves ``model`` at."""
        est = estimate(self.c.perf, model, sku, gpu_count, self._estimates)
        return est.throughput_tok_s if est is not None and est.fits else 0.0

    async def reference(self, dep: Deployment) -> Offer | None:
        """The cheapest $/Mtok offer for ``dep`` now (what a replica with no
        planned unit is counted as)."""
        model = find_model(dep.model)
        assert model is not None
        spec = await self.spec(dep.name)
        book = self.c.desk.book.query(OfferQuery(), self.c.clock.now())
        quotes = self.shortlist(book, model, spec, dep.max_price_per_mtok, 1)
        return quotes[0].offer if quotes else None

    def replacing(self, name: str) -> set[str]:
        """Replicas of ``name`` that a move in progress replaces."""
        return {m.old for m in self.moves.values() if m.deployment == name}

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
        planned: list[Offer] = []
        if any(r.id not in self.assigned for r in waiting):
            held = await self._held(live)
            plan = self.plan(dep.name, model, spec, dep.replicas, dep.max_price_per_mtok,
                             list(held.values()))
            wp = plan.workloads[dep.name]
            for a in wp.assignments if wp.feasible else ():
                offer = self.c.desk.book.get(a.offer_id)
                if offer is not None and not a.offer_id.startswith(HELD_PREFIX):
                    planned += [offer] * a.units
        book = self.c.desk.book.query(OfferQuery(), self.c.clock.now())
        fallback = [q.offer for q in self.shortlist(book, model, spec, dep.max_price_per_mtok,
                                                    FALLBACK_OFFERS)]
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
        sized = self.c.capacity_targets.get(dep.name)
        tokens = None
        if spec.autoscaled and sized is not None:
            # Re-place the capacity held (never less than the need): a move is
            # not a way to scale down, which waits for the autoscaler's delay
            # and the units' billing minimums.
            held_tok_s = sum(self.unit_tok_s(model, x.sku, x.gpu_count)
                             for x in held.values() if x.sku is not None)
            tokens = max(sized.need_tok_s, held_tok_s * (1 - 1e-9))
        plan = self.plan(dep.name, model, spec, dep.replicas, dep.max_price_per_mtok,
                         list(held.values()), tokens)
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

    async def held_units(self, name: str, now: float, billing_floor_s: float = 0.0) \
            -> list[HeldUnit]:
        """The live replicas of ``name`` as units of capacity: leased ones at their
        lease's price and age, those still to lease at their planned offer.
        Replicas a move is replacing are left out (they go once their successors
        serve), and so are replicas whose lease already ended (they are failed
        and replaced on the next step). ``billing_floor_s``: the least billing
        minimum to assume for any lease."""
        dep = await self.c.records.deployment(name)
        model = find_model(dep.model) if dep is not None else None
        if dep is None or model is None:
            return []
        going = self.replacing(name)
        out = []
        for r in await self.c.records.replicas(name):
            if r.state not in LIVE or r.id in going:
                continue
            lease = await self.c.records.lease(r.lease_id) if r.lease_id else None
            if lease is not None:
                if lease.terminal or lease.sku is None:
                    continue
                tok_s = self.unit_tok_s(model, lease.sku, lease.gpu_count)
                # A lease still provisioning bills from its request at some
                # suppliers: its minimum runs from then.
                began = lease.started_at if lease.started_at is not None else lease.created_at
                out.append(HeldUnit(r.id, tok_s, lease.price_per_hour, now - began,
                                    max(billing_floor_s, float(lease.billing_minimum_s)),
                                    r.state == ReplicaState.HEALTHY))
                continue
            offer = self.assigned.get(r.id) or await self.reference(dep)
            if offer is None or offer.sku is None:
                continue
            # Not leased yet: releasing it costs nothing.
            out.append(HeldUnit(r.id, self.unit_tok_s(model, offer.sku, offer.gpu_count),
                                offer.price_per_hour, 0.0, 0.0, False))
        return out
