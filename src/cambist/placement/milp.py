"""The exact solver: one mixed-integer program, solved by HiGHS.

The model (:mod:`cambist.placement.grouped`) has integer units per workload
and offer group, the replica count ``n[w]``, a binary ``y[s]`` per supplier
used, and ``k <= min(units, current units)`` for the units a workload keeps
where it is. Rows: offer capacity, group balance, throughput, ``sum = n``,
the supplier share ``sum_{s} units - share * n <= 0`` (linear because ``n`` is
a column), budget, and ``sum_{s} units <= M y[s]``. The objective is the $/h
plus tiny tie-breaking terms (a supplier costs ``SUPPLIER_WEIGHT``, a kept
unit earns ``KEEP_WEIGHT``), so the proven bound on cost is HiGHS's dual bound
less the most those terms can take off.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np

from cambist.placement.grouped import build_group_model, decode, start_vector
from cambist.placement.instance import FloatArray, Instance

__all__ = ["KEEP_WEIGHT", "SUPPLIER_WEIGHT", "MilpResult", "Relaxation", "relax", "solve_milp"]

SUPPLIER_WEIGHT = 1e-4
"""$/h charged per distinct supplier: breaks ties toward fewer suppliers."""
STRENGTHEN = True
"""Add the valid tightenings of :func:`build_group_model` (``strengthen``); the
benchmark turns it off to measure the plain model in the same run."""
KEEP_WEIGHT = 1e-5
"""$/h credited per unit kept from the current placement: breaks ties toward fewer moves."""


@dataclass(slots=True)
class MilpResult:
    """Units per workload (``None`` without an incumbent), the status and the bound."""

    units: list[dict[int, int]] | None
    status: str
    """``optimal``, ``feasible`` (time limit with an incumbent), ``infeasible`` or ``unknown``."""
    lower_bound: float | None
    """A proven lower bound on the $/h of any feasible plan."""


def solve_milp(inst: Instance, *, time_limit_s: float, rel_gap: float,
               start: list[dict[int, int] | None] | None = None) -> MilpResult:
    """Solve ``inst`` exactly (to ``rel_gap``) or until ``time_limit_s``: the grouped
    model of :mod:`cambist.placement.grouped`, started from ``start`` when given."""
    if not inst.workloads:
        return MilpResult([], "optimal", 0.0)
    m = build_group_model(inst, SUPPLIER_WEIGHT, KEEP_WEIGHT, strengthen=STRENGTHEN)
    x0 = start_vector(inst, m, start) if start is not None else None
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(time_limit_s, 0.01)))
    # HiGHS's gap is (cost - bound) / cost; the plan's is cost / bound - 1: stopping
    # at rel_gap / (1 + rel_gap) by HiGHS's measure is rel_gap by the plan's.
    h.setOptionValue("mip_rel_gap", float(rel_gap / (1 + rel_gap)))
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("threads", 1)
    h.passModel(m.lp)
    if x0 is not None:
        sol = highspy.HighsSolution()
        sol.col_value = x0.tolist()
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    slack = SUPPLIER_WEIGHT * len(inst.suppliers)
    bound = info.mip_dual_bound
    lower = max(0.0, float(bound) - slack) if np.isfinite(bound) else None
    if status == highspy.HighsModelStatus.kInfeasible:
        return MilpResult(None, "infeasible", None)
    if info.primal_solution_status != 2:
        return MilpResult(None, "unknown", lower)
    units = decode(inst, m, np.asarray(h.getSolution().col_value, dtype=np.float64))
    done = status == highspy.HighsModelStatus.kOptimal
    return MilpResult(units, "optimal" if done else "feasible", lower)


@dataclass(slots=True)
class Relaxation:
    """The LP relaxation's optimum: fractional units per pair and capacity shadow prices."""

    units: list[FloatArray]
    """Per workload, aligned with ``inst.cand[w]``."""
    capacity_prices: FloatArray
    """$/h one more free unit of each offer would save the fractional plan."""


def relax(inst: Instance, time_limit_s: float = 2.0) -> Relaxation | None:
    """Solve the grouped model's LP relaxation (``None`` when it has no optimum in time).

    A group's fractional units are spread over its offers in proportion to what
    the LP draws from each, so the heuristic sees per-offer units."""
    if not inst.workloads:
        return None
    m = build_group_model(inst, SUPPLIER_WEIGHT, KEEP_WEIGHT)
    m.lp.integrality_ = [highspy.HighsVarType.kContinuous] * m.lp.num_col_
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.passModel(m.lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    sol = h.getSolution()
    col = np.asarray(sol.col_value, dtype=np.float64)
    drawn = np.zeros(len(inst.offers))
    drawn[m.q_offers] = col[m.q_col0: m.q_col0 + len(m.q_offers)]
    share = drawn / np.maximum(np.bincount(inst.group, weights=drawn)[inst.group], 1e-12)
    units = [np.zeros(len(c)) for c in inst.cand]
    where = [{o: i for i, o in enumerate(c.tolist())} for c in inst.cand]
    for j in np.flatnonzero(col[: m.n_units] > 1e-9).tolist():
        w, r = int(m.col_w[j]), int(m.col_ref[j])
        if not m.col_grouped[j]:
            units[w][where[w][r]] += col[j]
            continue
        for o in m.members[r]:
            if share[o] > 0:
                units[w][where[w][o]] += col[j] * share[o]
    prices = np.zeros(len(inst.offers))
    duals = np.asarray(sol.row_dual[: len(m.cap_rows)], dtype=np.float64)
    prices[m.cap_rows] = np.maximum(0.0, -duals)
    return Relaxation(units, prices)
