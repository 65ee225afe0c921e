"""A proven lower bound on the $/h of any plan: Lagrangian relaxation of shared capacity.

Workloads interact only through the offers' units. Give every offer group a
unit price ``nu[g]`` and drop the requirement that the workloads together fit
the groups' units; then, for *any* prices, the cheapest plan costs at least

    L(nu) = sum_w m_w(nu) - sum_o avail[o] * max(0, nu[g(o)] - price[o])

where ``m_w(nu)`` is the cheapest placement of workload ``w`` alone at those
prices (meeting its demand, replicas and supplier share; a budgeted workload
pays ``price[o] + max(0, nu[g(o)] - price[o])`` per unit of offer ``o`` and
keeps its budget on list prices). Proof (weak duality): in the grouped model
of :mod:`cambist.placement.grouped`, with ``q[o]`` the units offer ``o``
supplies to unbudgeted workloads and ``x[w,o]`` a budgeted workload's own,
multiply each group balance ``sum_w z[w,g] - sum_{o in g} q[o] = 0`` by
``nu[g]`` and each capacity row ``q[o] + sum_w x[w,o] <= avail[o]`` by
``rho[o] = max(0, nu[g(o)] - price[o]) >= 0`` and add them to the objective:
every ``q[o]`` then costs ``price[o] - nu[g] + rho[o] >= 0`` (least at 0),
and what remains splits by workload. Each ``m_w`` is taken as the *dual
bound* HiGHS proves for that workload's small MIP, so a sub-MIP stopped by
its time limit still gives a valid (lower) term; once the whole time is
spent, the workloads left get the fractional relaxation's value (demand at
the best $/token at those prices), valid too, so the bound never overruns.

The best prices are those the master LP of :mod:`cambist.placement.contention`
ends with (the Dantzig-Wolfe duals): the bound is then the master's LP value
less what each workload's exact pricing finds below its dual, the strongest
bound a per-workload decomposition gives (on the benchmark market it is
above the MILP's root bound after HiGHS's cuts). The tie-breaking terms of
the MILP's objective are left out: this bounds the $/h alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import highspy
import numpy as np

from cambist.placement.instance import FloatArray, Instance, IntArray

__all__ = ["LagrangianBound", "lagrangian_bound"]

OPTIONS: dict[str, bool | float | str] = {"mip_detect_symmetry": False, "mip_heuristic_effort": 0.0,
                              "mip_heuristic_run_feasibility_jump": False, "presolve": "off"}


@dataclass(slots=True)
class LagrangianBound:
    """``value`` bounds every plan's $/h from below; ``placements`` are the workloads'
    cheapest placements found at the prices (offer or group -> units, per workload;
    ``None`` where the sub-MIP found none in time)."""

    value: float
    placements: list[dict[int, int] | None]
    exact: int
    """Sub-MIPs solved to optimality (the others gave their dual bound)."""


def _sub_mip(inst: Instance, w: int, refs: IntArray, price: FloatArray, tput: FloatArray,
             upper: FloatArray, suppliers: IntArray, time_limit_s: float,
             hint: dict[int, int] | None = None) -> tuple[float, dict[int, int] | None, bool]:
    """Workload ``w`` alone over columns ``refs`` (groups or offers) at ``price`` per
    unit: its proven dual bound, the placement found, and whether it is optimal."""
    wl = inst.workloads[w]
    n = len(refs)
    d = wl.tokens_per_s
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", float(max(time_limit_s, 0.01)))
    h.setOptionValue("mip_rel_gap", 1e-6)
    h.setOptionValue("mip_abs_gap", 1e-7)
    for k, v in OPTIONS.items():
        h.setOptionValue(k, v)
    inf = highspy.kHighsInf
    # Columns: units per ref, then the replica count n.
    cost = np.concatenate([price, [0.0]])
    lower = np.zeros(n + 1)
    lower[n] = float(wl.min_replicas)
    h.addVars(n + 1, lower, np.concatenate([upper, [inf]]))
    h.changeColsCost(n + 1, np.arange(n + 1, dtype=np.int32), cost)
    h.changeColsIntegrality(n + 1, np.arange(n + 1, dtype=np.int32),
                            np.array([highspy.HighsVarType.kInteger] * (n + 1)))
    cols = np.arange(n, dtype=np.int32)
    if d > 0:
        h.addRow(d, inf, n, cols, np.minimum(tput, d))
    h.addRow(0.0, 0.0, n + 1, np.arange(n + 1, dtype=np.int32),
             np.concatenate([np.ones(n), [-1.0]]))
    if wl.max_supplier_share < 1:
        for s in np.unique(suppliers).tolist():
            idx = cols[suppliers == s]
            h.addRow(-inf, 0.0, len(idx) + 1, np.concatenate([idx, [n]]).astype(np.int32),
                     np.concatenate([np.ones(len(idx)), [-wl.max_supplier_share]]))
    if wl.budget_per_hour is not None:
        h.addRow(-inf, float(wl.budget_per_hour), n, cols, inst.price[refs])
    if hint:
        x0 = np.zeros(n + 1)
        pos = {int(r): i for i, r in enumerate(refs.tolist())}
        for r, u in hint.items():
            x0[pos[r]] = u
        x0[n] = x0[:n].sum()
        sol = highspy.HighsSolution()
        sol.col_value = x0.tolist()
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    info = h.getInfo()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        # No placement at all: the whole problem is infeasible; no finite bound to add.
        return math.inf, None, True
    bound = float(info.mip_dual_bound)
    units = None
    if info.primal_solution_status == 2:
        x = np.rint(np.asarray(h.getSolution().col_value[:n]))
        units = {int(refs[i]): int(x[i]) for i in np.flatnonzero(x > 0).tolist()}
    done = status == highspy.HighsModelStatus.kOptimal
    return (bound if math.isfinite(bound) else 0.0), units, done


def _relaxed(demand: float, min_replicas: int, price: FloatArray, tput: FloatArray) -> float:
    """A lower bound on a workload's cheapest placement at ``price`` without solving it:
    its demand at the best $/token, or its replicas at the cheapest unit, whichever is
    more (each a relaxation of the sub-MIP)."""
    if not len(price):
        return 0.0
    per_token = float(np.min(price / np.maximum(np.minimum(tput, max(demand, 1e-12)), 1e-12)))
    return max(demand * per_token if demand > 0 else 0.0, min_replicas * float(price.min()))


def _prune(refs: IntArray, price: FloatArray, tput: FloatArray, upper: FloatArray,
           sup: IntArray, by_supplier: bool, most: float) -> IntArray:
    """Positions worth keeping: within a class of interchangeable columns (same unit
    throughput, and same supplier when a share cap counts suppliers) some optimal
    placement fills the cheapest first, so columns past those holding ``most`` units
    (more than any placement as cheap as the hint can hold) are never needed."""
    key = np.round(tput, 9) + (sup * 1e7 if by_supplier else 0)
    order = np.lexsort((np.arange(len(refs)), price, key))
    keep = []
    cum, last = 0.0, None
    for i in order.tolist():
        if key[i] != last:
            cum, last = 0.0, key[i]
        if cum < most:
            keep.append(i)
        cum += upper[i]
    return np.array(sorted(keep), dtype=np.int64)


def lagrangian_bound(inst: Instance, nu: FloatArray, *,
                     hints: list[dict[int, int] | None] | None = None,
                     time_limit_s: float = 2.0) -> LagrangianBound:
    """``L(nu)`` of the module docstring for unit prices ``nu`` per group (any real
    prices give a valid bound; good ones come from the contention master's LP).
    ``hints`` (a placement per workload at these prices: groups, or offers when
    budgeted) start the sub-MIPs and bound their size."""
    t0 = time.perf_counter()
    nu = np.maximum(nu, 0.0)  # any prices are valid; non-negative ones keep the caps valid
    rho = np.maximum(0.0, nu[inst.group] - inst.price)
    value = -float(inst.avail @ rho)
    placements: list[dict[int, int] | None] = []
    exact = 0
    W = len(inst.workloads)
    for w, wl in enumerate(inst.workloads):
        cand = inst.cand[w]
        if wl.budget_per_hour is not None:
            refs, price, tput = cand, inst.price[cand] + rho[cand], inst.tput[w]
            upper = inst.avail[cand].astype(np.float64)
            sup = inst.supplier[cand]
        else:
            groups = inst.group[cand]
            _, first = np.unique(groups, return_index=True)
            refs, tput = groups[first], inst.tput[w][first]
            price = nu[refs]
            upper = np.bincount(groups, weights=inst.avail[cand]).astype(np.float64)[refs]
            if wl.max_supplier_share >= 1:
                # More units of one group than its throughput needs only add cost
                # at non-negative prices (as in the grouped model's column bounds).
                need = np.ceil(wl.tokens_per_s / np.maximum(tput, 1e-12) - 1e-9)
                upper = np.minimum(upper, np.maximum(need, wl.min_replicas))
            sup = inst.supplier[cand[first]]
        hint = hints[w] if hints is not None else None
        pos = {int(r): i for i, r in enumerate(refs.tolist())}
        if hint and all(r in pos for r in hint) and price.min() > 0:
            cap = sum(price[pos[r]] * u for r, u in hint.items())
            # A placement as cheap as the hint holds at most cap / cheapest price units.
            most = math.floor(cap / float(price.min()) + 1e-9)
            keep = _prune(refs, price, np.minimum(tput, max(wl.tokens_per_s, 1e-12)),
                          upper, sup, wl.max_supplier_share < 1, most)
            keep = np.union1d(keep, [pos[r] for r in hint]).astype(np.int64)
            refs, price, tput, sup = refs[keep], price[keep], tput[keep], sup[keep]
            upper = np.minimum(upper[keep], float(most))
        left = time_limit_s - (time.perf_counter() - t0)
        if left <= 0:
            # Out of time: the fractional relaxation (best $/token at these prices,
            # no capacity, no integrality) is still a valid, if weaker, term.
            value += _relaxed(wl.tokens_per_s, wl.min_replicas, price, tput)
            placements.append(None)
            continue
        got, units, done = _sub_mip(inst, w, refs, price, tput, upper, sup,
                                    max(left / max(W - w, 1), 0.01), hint)
        value += got
        placements.append(units)
        exact += done
    return LagrangianBound(value, placements, exact)
