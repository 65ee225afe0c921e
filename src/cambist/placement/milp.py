"""The exact solver: one mixed-integer program, solved by HiGHS.

Columns: integer units ``x[w,o]`` per feasible (workload, offer) pair, the
replica count ``n[w]`` (bounded below by the minimum replicas), a binary
``y[s]`` per supplier used, and ``k[w,o] <= min(x[w,o], current units)`` for
the units a workload keeps where it is. Rows: offer capacity, throughput,
``sum x = n``, the supplier share ``sum_{o in s} x - share * n <= 0``
(linear because ``n`` is a column), budget, and ``sum_{o in s} x <= M y[s]``.
The objective is the $/h plus tiny tie-breaking terms (a supplier costs
``SUPPLIER_WEIGHT``, a kept unit earns ``KEEP_WEIGHT``), so the proven bound
on cost is HiGHS's dual bound less the most those terms can take off.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np

from cambist.placement.instance import FloatArray, Instance, IntArray

__all__ = ["KEEP_WEIGHT", "SUPPLIER_WEIGHT", "MilpResult", "Relaxation", "relax", "solve_milp"]

SUPPLIER_WEIGHT = 1e-4
"""$/h charged per distinct supplier: breaks ties toward fewer suppliers."""
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


@dataclass(slots=True)
class _Model:
    inst: Instance
    pw: IntArray
    po: IntArray
    pt: FloatArray
    rows: list[IntArray]
    cols: list[IntArray]
    vals: list[FloatArray]
    lo: list[FloatArray]
    hi: list[FloatArray]
    n_rows: int = 0

    @property
    def n_pairs(self) -> int:
        return len(self.pw)

    def add(self, rows: IntArray, cols: IntArray, vals: FloatArray, n: int,
            lo: FloatArray | float, hi: FloatArray | float) -> None:
        """Append ``n`` rows; ``rows`` are 0-based within the block."""
        self.rows.append(rows + self.n_rows)
        self.cols.append(cols)
        self.vals.append(vals)
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (n,)))
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,)))
        self.n_rows += n


def _keep_pairs(inst: Instance, pw: IntArray, po: IntArray) -> tuple[IntArray, FloatArray]:
    """Pair indices held in the current placement and their units."""
    idx, units = [], []
    for j, (w, o) in enumerate(zip(pw.tolist(), po.tolist(), strict=True)):
        u = inst.current[w].get(o)
        if u:
            idx.append(j)
            units.append(float(u))
    return np.array(idx, dtype=np.int64), np.array(units, dtype=np.float64)


def _rows(m: _Model, n_col0: int, y_col0: int, keep: IntArray, k_col0: int) -> None:
    inst = m.inst
    P, W = m.n_pairs, len(inst.workloads)
    j = np.arange(P, dtype=np.int64)
    ones = np.ones(P)
    m.add(m.po, j, ones, len(inst.offers), -np.inf, inst.avail.astype(np.float64))
    dem = np.array([w.tokens_per_s for w in inst.workloads])
    m.add(m.pw, j, m.pt, W, dem, np.inf)
    m.add(np.concatenate([m.pw, np.arange(W)]), np.concatenate([j, n_col0 + np.arange(W)]),
          np.concatenate([ones, -np.ones(W)]), W, 0.0, 0.0)
    S = len(inst.suppliers)
    share = np.array([w.max_supplier_share for w in inst.workloads])
    capped = np.flatnonzero(share < 1)
    if len(capped):
        sel = j[np.isin(m.pw, capped)]
        rid = m.pw[sel] * S + inst.supplier[m.po[sel]]
        cw = np.repeat(capped, S)
        cs = np.tile(np.arange(S), len(capped))
        m.add(np.concatenate([rid, cw * S + cs]), np.concatenate([sel, n_col0 + cw]),
              np.concatenate([np.ones(len(sel)), -share[cw]]), W * S, -np.inf, 0.0)
    budget = np.array([np.inf if w.budget_per_hour is None else float(w.budget_per_hour)
                       for w in inst.workloads])
    m.add(m.pw, j, inst.price[m.po], W, -np.inf, budget)
    big = np.bincount(inst.supplier, weights=inst.avail, minlength=S)
    m.add(np.concatenate([inst.supplier[m.po], np.arange(S)]),
          np.concatenate([j, y_col0 + np.arange(S)]),
          np.concatenate([ones, -big]), S, -np.inf, 0.0)
    if len(keep):
        r = np.arange(len(keep))
        m.add(np.concatenate([r, r]), np.concatenate([k_col0 + r, keep]),
              np.concatenate([np.ones(len(keep)), -np.ones(len(keep))]), len(keep), -np.inf, 0.0)


def _lp(inst: Instance) -> tuple[highspy.HighsLp, _Model, IntArray]:
    pw = np.concatenate([np.full(len(c), w, dtype=np.int64) for w, c in enumerate(inst.cand)])
    po = np.concatenate(inst.cand).astype(np.int64)
    pt = np.concatenate(inst.tput).astype(np.float64)
    m = _Model(inst, pw, po, pt, [], [], [], [], [])
    W, S, P = len(inst.workloads), len(inst.suppliers), len(pw)
    keep, keep_units = _keep_pairs(inst, pw, po)
    n_col0, y_col0, k_col0 = P, P + W, P + W + S
    _rows(m, n_col0, y_col0, keep, k_col0)
    n_col = k_col0 + len(keep)
    cost = np.concatenate([inst.price[po], np.zeros(W), np.full(S, SUPPLIER_WEIGHT),
                           np.full(len(keep), -KEEP_WEIGHT)])
    lower = np.zeros(n_col)
    lower[n_col0:y_col0] = [w.min_replicas for w in inst.workloads]
    upper = np.concatenate([inst.avail[po].astype(np.float64), np.full(W, np.inf),
                            np.ones(S), keep_units])
    rows, cols, vals = (np.concatenate(a) for a in (m.rows, m.cols, m.vals))
    order = np.lexsort((cols, rows))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_col, m.n_rows
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lower, upper
    lp.row_lower_ = np.concatenate(m.lo)
    lp.row_upper_ = np.concatenate(m.hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.searchsorted(rows[order], np.arange(m.n_rows + 1)).astype(np.int32)
    lp.a_matrix_.index_ = cols[order].astype(np.int32)
    lp.a_matrix_.value_ = np.asarray(vals[order], dtype=np.float64)
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n_col, m.n_rows
    kinds = np.full(n_col, highspy.HighsVarType.kContinuous)
    kinds[:P] = highspy.HighsVarType.kInteger
    kinds[y_col0:k_col0] = highspy.HighsVarType.kInteger
    lp.integrality_ = kinds.tolist()
    return lp, m, keep


def _start(inst: Instance, m: _Model, keep: IntArray, start: list[dict[int, int] | None],
           n_col: int) -> FloatArray | None:
    """The heuristic's plan as a full column vector (``None`` if it left a workload out)."""
    if any(s is None for s in start):
        return None
    P, W, S = m.n_pairs, len(inst.workloads), len(inst.suppliers)
    x = np.zeros(n_col)
    pos = {(w, o): j for j, (w, o) in enumerate(zip(m.pw.tolist(), m.po.tolist(), strict=True))}
    for w, units in enumerate(start):
        for o, u in (units or {}).items():
            x[pos[(w, o)]] = u
            x[P + w] += u
            x[P + W + inst.supplier[o]] = 1
    for i, jj in enumerate(keep.tolist()):
        x[P + W + S + i] = min(x[jj], inst.current[int(m.pw[jj])][int(m.po[jj])])
    return x


def solve_milp(inst: Instance, *, time_limit_s: float, rel_gap: float,
               start: list[dict[int, int] | None] | None = None) -> MilpResult:
    """Solve ``inst`` exactly (to ``rel_gap``) or until ``time_limit_s``; see the docstring."""
    if not inst.workloads:
        return MilpResult([], "optimal", 0.0)
    lp, m, keep = _lp(inst)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(max(time_limit_s, 0.01)))
    h.setOptionValue("mip_rel_gap", float(rel_gap))
    h.setOptionValue("random_seed", 0)
    h.setOptionValue("threads", 1)
    h.passModel(lp)
    if start is not None:
        x0 = _start(inst, m, keep, start, lp.num_col_)
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
    values = np.rint(np.asarray(h.getSolution().col_value[: m.n_pairs])).astype(np.int64)
    units: list[dict[int, int]] = [{} for _ in inst.workloads]
    for jj in np.flatnonzero(values > 0):
        units[int(m.pw[jj])][int(m.po[jj])] = int(values[jj])
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
    """Solve the LP relaxation (``None`` when it has no optimum in time)."""
    if not inst.workloads:
        return None
    lp, m, _ = _lp(inst)
    lp.integrality_ = [highspy.HighsVarType.kContinuous] * lp.num_col_
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    sol = h.getSolution()
    x = np.asarray(sol.col_value[: m.n_pairs], dtype=np.float64)
    bounds = np.cumsum([0] + [len(c) for c in inst.cand])
    duals = np.asarray(sol.row_dual[: len(inst.offers)], dtype=np.float64)
    return Relaxation([x[bounds[w]:bounds[w + 1]] for w in range(len(inst.cand))],
                      np.maximum(0.0, -duals))
