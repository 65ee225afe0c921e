"""``solve(demand, offers, policy) -> Plan``: the one entry point of placement.

Pure: no I/O, no globals, nothing printed, inputs never changed. The solvers
work in floats; the plan's money is recomputed exactly from the offers'
``Decimal`` prices. ``milp`` and ``auto`` start HiGHS from the heuristic's
plan, so a MILP that hits its time limit still returns a plan at least as
cheap as the heuristic's, with the proven lower bound.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from cambist.domain.offer import Offer
from cambist.placement.heuristic import solve_heuristic
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

__all__ = ["solve"]

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
    units, failed = solve_heuristic(inst)
    if not use_milp:
        return units, failed, None, "heuristic"
    res = solve_milp(inst, time_limit_s=policy.time_limit_s,
                     rel_gap=policy.mip_rel_gap, start=units)
    if res.units is not None:
        if not failed and res.status != "optimal" and _cost(inst, units) < _cost(inst, res.units):
            # HiGHS may stop before it has taken in the start (time limit during
            # presolve): never return a plan dearer than the heuristic's.
            return units, {}, MilpResult(None, "feasible", res.lower_bound), "heuristic"
        return list(res.units), {}, res, "milp"
    if res.status == "infeasible":
        failed = {w: _TOGETHER for w in failed} or {w: _TOGETHER for w in range(len(units))}
        units = [None if w in failed else u for w, u in enumerate(units)]
    return units, failed, res, "heuristic"


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
