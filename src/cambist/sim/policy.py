"""Cambist's capacity policy: forecast-aware, cheapest $/Mtok, with hysteresis.

A control loop (``step(now)`` every five minutes) over the fleet, seeing only
the past: the output tokens/s each model was asked for, minute by minute.

- **Forecast.** The next hour's need is the larger of the last quarter-hour's
  peak (5-minute mean) and the same hour yesterday scaled by how today
  compares with yesterday over the last two hours; capacity is sized so that
  need fills ``target_utilization`` of it, plus a small safety margin.
- **Re-placement** once an hour, ``lead_s`` ahead of the hour:
  the real placement solver (``cambist.placement.solve``, one solve per
  model, MILP on HiGHS) picks the cheapest units for the need over a short
  list of the cheapest offers per token plus those holding the fleet's own
  units. The plan is adopted only if it is
  cheaper than keeping the current units (topped up or trimmed) by more than
  ``switch_gain``; the units it replaces are released once their
  replacements are ready (make before break).
- **Scale up** at every step when the planned capacity is below the recent
  need, and every minute (:meth:`CapacityPolicy.react`) when the last two
  minutes plus the queue would overload it (bursts of batch jobs), with the
  cheapest units for the deficit (placement heuristic).
- **Scale down** when capacity exceeds the need by more than ``shrink_band``,
  most expensive $/Mtok first, never before a unit's billing minimum.
- **Replace lost units** the minute a preemption is noticed
  (:meth:`CapacityPolicy.replace_lost`): the lost tokens/s are leased at once
  through the scale-up path (cheapest quick units, placement heuristic); a
  refused lease is retried every minute until covered, or until the remaining
  fleet covers the need. Each loss's record gets its time to restore: the
  first minute at which the units *serving* the model (ready, retiring ones
  included: they still take traffic) add up to its planned capacity just
  before the loss, or to the policy's planned capacity now (plus what it
  still owes) if that is lower. (A retiring unit that is lost is not
  replaced: its successor is already leased.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.placement.problem import Plan, Policy, SolverName, WorkloadDemand
from cambist.placement.solve import solve
from cambist.sim.fleet import Fleet, Preemption, Unit

__all__ = ["CapacityPolicy", "Observed", "PolicySettings"]

_DAY_MIN = 1440


@dataclass(slots=True)
class Observed:
    """Per model, output tokens/s asked for in each minute so far (``upto`` minutes)."""

    rate: dict[str, npt.NDArray[np.float64]]
    upto: int = 0
    backlog: dict[str, float] = field(default_factory=dict)
    """Per model, output tokens queued on the platform's endpoints right now."""

    def peak(self, model: str, start: int, end: int) -> float:
        """Largest 5-minute mean rate in minutes ``[start, end)`` (clipped to the past)."""
        start, end = max(0, start), min(end, self.upto)
        if end <= start:
            return 0.0
        x = self.rate[model][max(0, start - 4):end]
        if len(x) < 5:
            return float(x.mean())
        c = np.cumsum(np.concatenate(([0.0], x)))
        return float(((c[5:] - c[:-5]) / 5.0).max())

    def mean(self, model: str, start: int, end: int) -> float:
        """Mean rate over minutes ``[start, end)`` (0 when empty)."""
        start, end = max(0, start), min(end, self.upto)
        return float(self.rate[model][start:end].mean()) if end > start else 0.0


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Knobs of the capacity policy."""

    target_utilization: float = 0.8
    ttft_ms: float = 1000.0
    safety: float = 0.08
    switch_gain: float = 0.04
    shrink_band: float = 0.25
    lead_s: float = 900.0
    shortlist: int = 16
    quick_s: float = 1e9
    drain_s: float = 300.0
    interval_s: float = 300.0


@dataclass
class CapacityPolicy:
    """The capacity control loop (see the module docstring)."""

    fleet: Fleet
    observed: Observed
    start: float
    settings: PolicySettings = field(default_factory=PolicySettings)
    name: str = "sim-capacity"
    solves: int = 0
    replacements: int = 0
    _unrestored: list[Preemption] = field(default_factory=list)

    @property
    def interval_s(self) -> float:
        return self.settings.interval_s

    def _minute(self, now: float) -> int:
        return int((now - self.start) // 60)

    def need(self, model: str, now: float) -> tuple[float, float]:
        """(need now, need over the next hour) in tokens/s of capacity."""
        k = self._minute(now)
        obs, s = self.observed, self.settings
        recent = obs.peak(model, k - 15, k)
        ahead = recent
        if k >= _DAY_MIN:
            lead = int(s.lead_s // 60)
            yesterday = obs.peak(model, k - _DAY_MIN + lead, k - _DAY_MIN + lead + 60)
            past = obs.mean(model, k - _DAY_MIN - 120, k - _DAY_MIN)
            ratio = obs.mean(model, k - 120, k) / past if past > 0 else 1.0
            ahead = max(recent, yesterday * min(max(ratio, 0.8), 1.25))
        scale = (1.0 + s.safety) / s.target_utilization
        return recent * scale, ahead * scale

    def _offers(self, model: str, own: dict[str, int] | None = None) -> list[Offer]:
        """The offers worth solving over for ``model``: the ``shortlist`` cheapest
        per token with free units, plus those holding the platform's own units
        (``own``, counted as available so the solver may keep them). Dearer
        offers cannot enter a cheapest cover while cheaper units are free, and
        a short list keeps each solve to milliseconds."""
        own = own or {}
        shape = self.fleet.shapes[model]
        ranked = []
        for o in self.fleet.market.offers:
            unit = shape.unit(o)
            avail = self.fleet.market.free.get(o.id, 0) + own.get(o.id, 0)
            if unit is not None and avail > 0:
                ranked.append((float(o.price_per_hour) / unit.tokens_per_s, o, avail))
        ranked.sort(key=lambda t: t[0])
        keep = {o.id for o in self.fleet.market.offers if own.get(o.id)}
        short = [t for i, t in enumerate(ranked) if i < self.settings.shortlist or t[1].id in keep]
        return [replace(o, available=avail) for _, o, avail in short]

    def _top_up_cost(self, model: str, deficit: float) -> float:
        """$/h of covering ``deficit`` tokens/s with the cheapest free units (greedy)."""
        shape = self.fleet.shapes[model]
        cost = 0.0
        for o in self._offers(model):
            unit = shape.unit(o)
            assert unit is not None
            n = min(o.available, math.ceil(deficit / unit.tokens_per_s))
            cost += n * float(o.price_per_hour)
            deficit -= n * unit.tokens_per_s
            if deficit <= 0:
                return cost
        return math.inf

    def _solve(self, model: str, tokens_per_s: float, offers: list[Offer],
               current: dict[str, int], solver: SolverName = "milp") -> Plan | None:
        if tokens_per_s <= 0 or not offers:
            return None
        shape = self.fleet.shapes[model]
        wl = WorkloadDemand(model, MODEL_CATALOG[model], tokens_per_s,
                            ttft_ms=self.settings.ttft_ms, prompt_tokens=shape.prompt_tokens)
        self.solves += 1
        plan = solve([wl], offers, Policy(perf=shape.perf, current={model: current},
                                          time_limit_s=2.0, mip_rel_gap=1e-3, solver=solver))
        return plan if plan.workloads[model].feasible else None

    def _price(self, unit: Unit) -> float:
        return float(self.fleet.price_now(unit))

    def _trim(self, units: list[Unit], need: float) -> list[Unit]:
        """Units that could go while the rest still cover ``need``: dearest per token first."""
        ranked = sorted(units, key=lambda u: self._price(u) / u.cap.tokens_per_s, reverse=True)
        spare = sum(u.cap.tokens_per_s for u in units) - need
        out = []
        for u in ranked:
            if u.cap.tokens_per_s <= spare:
                out.append(u)
                spare -= u.cap.tokens_per_s
        return out

    async def _lease_plan(self, model: str, plan: Plan, keep: dict[str, int], now: float) \
            -> list[Unit]:
        """Lease the plan's units beyond ``keep`` (offer id -> units already held)."""
        offers = {o.id: o for o in self.fleet.market.offers}
        new = []
        for a in plan.workloads[model].assignments:
            for _ in range(max(0, a.units - keep.get(a.offer_id, 0))):
                unit = await self.fleet.lease(offers[a.offer_id], model, now)
                if unit is not None:
                    new.append(unit)
        return new

    async def _scale_up(self, model: str, deficit: float, now: float) -> list[Unit]:
        """Cover ``deficit`` tokens/s at once, from the offers that come up
        fastest (a burst cannot wait for a slow supplier; the hourly
        re-placement moves the load to cheaper units if they pay back)."""
        offers = self._offers(model)
        spin = self.fleet.market.spin_up_s
        fastest = min((spin.get(o.supplier, 0.0) for o in offers), default=0.0)
        quick = [o for o in offers if spin.get(o.supplier, 0.0) <= fastest + self.settings.quick_s]
        plan = self._solve(model, deficit, quick, {}, "heuristic") if quick else None
        plan = plan or self._solve(model, deficit, offers, {}, "heuristic")
        if plan is None:
            return []
        return await self._lease_plan(model, plan, {}, now)

    def _open(self, model: str | None = None) -> list[Preemption]:
        return [p for p in self._unrestored if model is None or p.model == model]

    async def replace_lost(self, lost: list[Preemption], now: float) -> None:
        """Lease replacements for units just preempted (see the module docstring)."""
        for p in lost:
            if p.planned:  # a retiring unit's successor is already leased
                p.owed = p.capacity
            self._unrestored.append(p)
        await self._cover_owed(now)

    async def _cover_owed(self, now: float) -> None:
        """Lease what lost units are still owed, per model, at once."""
        for model in dict.fromkeys(p.model for p in self._unrestored if p.owed > 0):
            owing = [p for p in self._open(model) if p.owed > 0]
            refused = len(self.fleet.refused)
            new = await self._scale_up(model, sum(p.owed for p in owing), now)
            for offer_id in self.fleet.refused[refused:]:
                # The market's free counts can be stale (a listing's units taken
                # since): a retry must not ask the same sold-out offer again.
                self.fleet.market.sold_out(offer_id)
            got = sum(u.cap.tokens_per_s for u in new)
            for p in owing:  # oldest loss first
                take = min(p.owed, got)
                p.owed -= take
                got -= take
                if take > 0:
                    p.replaced_by += [u.lease_id for u in new]
                if p.owed <= 1e-9:
                    p.owed = 0.0

    def _forgive(self, model: str, need: float) -> None:
        """Stop owing ``model`` replacements once what it plans covers ``need``."""
        if self.fleet.planned_capacity(model) >= need:
            for p in self._open(model):
                p.owed = 0.0

    def track_restores(self, now: float) -> None:
        """Close the records whose model's capacity is whole again at ``now``."""
        if not self._unrestored:
            return
        for model in dict.fromkeys(p.model for p in self._unrestored):
            serving = self.fleet.serving_capacity(model, now)
            planned = self.fleet.planned_capacity(model)
            open_ = self._open(model)
            owed = sum(p.owed for p in open_)
            for p in open_:
                if serving >= min(p.target, planned + owed) - 1e-6:
                    p.restored_at = now
        self._unrestored = [p for p in self._unrestored if p.restored_at is None]

    async def react(self, now: float) -> None:
        """Every minute: lease at once when the last two minutes' rate (plus
        draining the queue within ``drain_s``) would overload the planned
        capacity (the five-minute step keeps the target headroom; this only
        catches bursts, so it sizes for full utilization, not the target)."""
        if self._unrestored:
            await self._cover_owed(now)
        k = self._minute(now)
        s = self.settings
        for model in self.fleet.shapes:
            rate = self.observed.mean(model, k - 2, k)
            rate += self.observed.backlog.get(model, 0.0) / s.drain_s
            need = rate * (1.0 + s.safety)
            have = self.fleet.planned_capacity(model)
            if have < need:
                await self._scale_up(model, need / s.target_utilization - have, now)

    async def _replace(self, model: str, need: float, now: float) -> None:
        """Hourly: adopt the cheapest placement if it beats keeping by ``switch_gain``."""
        mine = [u for u in self.fleet.live(model) if u.planned()]
        current = self.fleet.current(model)
        plan = self._solve(model, need, self._offers(model, current), current)
        if plan is None:
            return
        have = sum(u.cap.tokens_per_s for u in mine)
        keep_cost = sum(self._price(u) for u in mine)
        if have >= need:
            keep_cost -= sum(self._price(u) for u in self._trim(mine, need))
        else:
            keep_cost += self._top_up_cost(model, need - have)
        if float(plan.total_per_hour) >= keep_cost * (1.0 - self.settings.switch_gain):
            return
        target = {a.offer_id: a.units for a in plan.workloads[model].assignments}
        new = await self._lease_plan(model, plan, current, now)
        ready_by = max((u.ready for u in new), default=now)
        # Retire what the plan drops, dearest per token first, but only while
        # what stays (and what was actually leased) still covers the need: a
        # refused lease must not leave a hole.
        left = dict(target)
        drop = []
        for u in mine:
            if left.get(u.offer.id, 0) > 0:
                left[u.offer.id] -= 1
            else:
                drop.append(u)
        spare = self.fleet.planned_capacity(model) - need
        for u in sorted(drop, key=lambda u: self._price(u) / u.cap.tokens_per_s, reverse=True):
            if u.cap.tokens_per_s <= spare:
                u.retire_at = max(ready_by, u.start + u.billing_minimum_s)
                spare -= u.cap.tokens_per_s
        self.replacements += 1

    async def listing(self, now: float) -> None:
        """A fresh market listing: the routing table re-prices the fleet's endpoints."""
        self.fleet.swap_routes(now)

    async def minute(self, now: float) -> None:
        """A minute between steps: react to bursts, release retired units and
        route to the ready ones."""
        await self.react(now)
        await self.fleet.tick(now)

    async def close(self, now: float) -> None:
        """Release every unit at the end of the run."""
        await self.fleet.close(now)

    async def step(self, now: float) -> None:
        """One round: re-place on the hour, scale up to the need, trim the excess."""
        hourly = (now - self.start + self.settings.lead_s) % 3600 < self.settings.interval_s
        if self._unrestored:
            await self._cover_owed(now)
        for model in self.fleet.shapes:
            need_now, need_ahead = self.need(model, now)
            if self._unrestored:
                self._forgive(model, max(need_now, need_ahead))
            if hourly:
                await self._replace(model, need_ahead, now)
            have = self.fleet.planned_capacity(model)
            if have < need_now:
                await self._scale_up(model, need_now - have, now)
            elif have > max(need_now, need_ahead) * (1.0 + self.settings.shrink_band):
                ready = [u for u in self.fleet.live(model) if u.planned() and u.ready <= now
                         and now - u.start >= u.billing_minimum_s]
                busy = have - sum(u.cap.tokens_per_s for u in ready)
                for u in self._trim(ready, max(need_now, need_ahead) - busy):
                    await self.fleet.release(u, now)
        await self.fleet.tick(now)

