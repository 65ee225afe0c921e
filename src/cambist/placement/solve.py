"""``solve(demand, offers, policy) -> Plan``: the one entry point of placement.

Pure: no I/O, no globals, nothing printed, inputs never changed. The solvers
work in floats; the plan's money is recomputed exactly from the offers'
``Decimal`` prices. ``milp`` and ``auto`` on many workloads
(``DECOMPOSE_MIN_WORKLOADS``) first run price-and-branch
(:mod:`cambist.placement.contention`) from the fast heuristic's plan: when
its Lagrangian bound proves the plan within ``policy.mip_rel_gap`` (the usual
case on contended markets, where HiGHS alone needs far longer to find such a
plan) that is the answer. Otherwise, and on fewer workloads, HiGHS solves the
whole MILP started from the cheapest plan at hand (the heuristic's, or the
decomposition's), so a MILP that hits its time limit still returns a plan at
least as cheap as the heuristic's, with the best proven lower bound.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from cambist.domain.offer import Offer
from cambist.placement.contention import decompose
from cambist.placement.heuristic import FAST, solve_heuristic
from cambist.placement.instance import Instance, build_instance
from cambist.placement.milp import MilpResult, solve_milp
from cambist.placement.problem import (
    Assignment,
    Plan,
    PlanStatus,
    Policy,
    WorkloadDemand,
    WorkloadPlan,
)

__all__ = ["DECOMPOSE_MIN_WORKLOADS", "solve"]

DECOMPOSE_MIN_WORKLOADS = 20
"""From this many workloads the MILP path tries price-and-branch first: below it
HiGHS alone is fast, and breaks ties toward fewer suppliers exactly."""
DECOMPOSE_SHARE = 0.75
"""Most of ``policy.time_limit_s`` price-and-branch may take (the MILP gets the rest)."""

_TOGETHER = ("the workloads cannot all be served together from these offers "
             "(capacity, budget or supplier share); the MILP proved it")


def _workload_plan(inst: Instance, w: int, units: dict[int, int]) -> WorkloadPlan:
    cand = inst.cand[w]
    tput = {o: float(inst.tput[w][int(np.flatnonzero(cand == o)[0])]) for o in units}
    rows = []
    for o in sorted(units):
        offer = inst.offers[o]
        rows.append(Assignment(offer_id=offer.id, supplier=offer.supplier, units=units[o],
                               price_per_hour=offer.price_per_hour, tokens_per_s=tput[o]))
    rows.sort(key=lambda a: (a.price_per_hour, a.offer_id))
    return WorkloadPlan(inst.workloads[w].name, tuple(rows), True)


def _cost(inst: Instance, units: Sequence[dict[int, int] | None]) -> float:
    return sum(float(inst.price[o]) * u for x in units for o, u in (x or {}).items())


def _choose(inst: Instance, policy: Policy) \
        -> tuple[list[dict[int, int] | None], dict[int, str], MilpResult | None, str]:
    """Run the solver(s) the policy asks for: units per workload, failures, MILP result."""
    use_milp = policy.solver == "milp" or (
        policy.solver == "auto" and inst.pairs <= policy.auto_max_pairs)
    if not use_milp:
        units, failed = solve_heuristic(inst)
        return units, failed, None, "heuristic"
    spent = 0.0
    dec = None
    if len(inst.workloads) >= DECOMPOSE_MIN_WORKLOADS:
        t0 = time.perf_counter()
        fast, _ = solve_heuristic(inst, FAST)
        dec = decompose(inst, [fast], time_limit_s=DECOMPOSE_SHARE * policy.time_limit_s,
                        rel_gap=policy.mip_rel_gap)
        if dec is not None and dec.gap is not None and dec.gap <= policy.mip_rel_gap:
            return (list(dec.plan), {}, MilpResult(dec.plan, "optimal", dec.lower_bound),
                    "decomposition")
        spent = time.perf_counter() - t0
    units, failed = solve_heuristic(inst)
    start = "heuristic"
    if dec is not None and (failed or dec.cost < _cost(inst, units)):
        units, failed, start = list(dec.plan), {}, "decomposition"
    known = dec.lower_bound if dec is not None else None
    # The limit covers price-and-branch and the MILP; the heuristic is not counted.
    res = solve_milp(inst, time_limit_s=policy.time_limit_s - spent,
                     rel_gap=policy.mip_rel_gap, start=units)
    if known is not None and res.status != "infeasible":
        res.lower_bound = max(known, res.lower_bound or 0.0)
        if res.units is not None and _cost(inst, res.units) <= \
                res.lower_bound * (1 + policy.mip_rel_gap):
            res.status = "optimal"  # proven within the gap by the decomposition's bound
    if res.units is not None:
        if not failed and res.status != "optimal" and _cost(inst, units) < _cost(inst, res.units):
            # HiGHS may stop before it has taken in the start (time limit during
            # presolve): never return a plan dearer than the start.
            return units, {}, MilpResult(None, "feasible", res.lower_bound), start
        return list(res.units), {}, res, "milp"
    if res.status == "infeasible":
        failed = {w: _TOGETHER for w in failed} or {w: _TOGETHER for w in range(len(units))}
        units = [None if w in failed else u for w, u in enumerate(units)]
    return units, failed, res, start


def solve(demand: Sequence[WorkloadDemand], offers: Sequence[Offer],
          policy: Policy | None = None) -> Plan:
    """The cheapest placement of ``demand`` on ``offers`` that the policy's solver finds.

    Ties in $/h go to fewer distinct suppliers, then to fewer units moved from
    ``policy.current`` (exactly in the MILP; the heuristic breaks move ties only).
    """
    policy = policy or Policy()
    t0 = time.perf_counter()
    inst = build_instance(demand, offers, policy)
    units, failed, res, used = _choose(inst, policy)
    plans: dict[str, WorkloadPlan] = {}
    placed = {wl.name: w for w, wl in enumerate(inst.workloads)}
    for wd in demand:
        w = placed.get(wd.name)
        if w is None:
            plans[wd.name] = WorkloadPlan(wd.name, (), False, inst.reasons[wd.name])
        elif units[w] is None or w in failed:
            plans[wd.name] = WorkloadPlan(wd.name, (), False, failed.get(w, _TOGETHER))
        else:
            plans[wd.name] = _workload_plan(inst, w, units[w] or {})
    ok = all(p.feasible for p in plans.values())
    status = (PlanStatus.INFEASIBLE if not ok
              else PlanStatus.OPTIMAL if res is not None and res.status == "optimal"
              else PlanStatus.FEASIBLE)
    total = sum((p.cost_per_hour for p in plans.values()), Decimal(0))
    lower = None
    if ok and res is not None and res.lower_bound is not None:
        lower = min(Decimal(repr(res.lower_bound)), total)
    return Plan(status=status, workloads=plans, total_per_hour=total,
                lower_bound_per_hour=lower, solve_time_s=time.perf_counter() - t0,
                solver=used)
