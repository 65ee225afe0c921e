"""The MILP over offer groups: integers per (workload, group), not per (workload, offer).

Offers of one group (:attr:`Instance.group`: same SKU, GPU count, supplier,
region and privacy tiers) are interchangeable for every workload without a
budget: same throughput, same eligibility, same supplier. Only price and units
differ, so an optimal plan fills each group cheapest offer first. The model
therefore has an integer ``z[w,g]`` per workload and group, and a continuous
``q[o]`` per offer with ``sum_{o in g} q[o] = sum_w z[w,g]``: the LP fills the
cheapest ``q`` first and, the breakpoints being whole units, a whole total
fills whole units. On the simulated market this cuts the integer columns about
tenfold (1,000 offers fall into about 240 groups).

A workload with a budget needs its own cost, so it keeps one integer column
per offer (``x[w,o]``, sharing the offers' capacity rows with ``q``).

Tightening, all valid for integer columns: the throughput row uses
``min(t, demand)`` for each unit (one unit that alone covers the demand counts
as covering it, which the LP otherwise splits); the replica count is bounded
below by ``ceil(demand / best unit)``; a workload without a supplier cap uses
at most ``max(ceil(demand / t), min_replicas)`` units of a group (more could
be dropped at no extra cost).

With ``strengthen`` (the MILP; the LP relaxation the heuristic reads keeps the
plain model) two more valid tightenings:

- a workload with a supplier share cap ``c < 1`` needs ``n`` units with
  ``n <= S * floor(c * n)`` (each of its ``S`` suppliers holds at most
  ``floor(c * n)`` whole units), so its ``n`` is bounded below by the least
  such ``n`` (at least 2: one unit alone is a share of 1);
- Chvatal-Gomory rounds of the throughput row: for each distinct unit
  throughput ``alpha < demand`` of the workload, dividing the row by ``alpha``
  and rounding coefficients and right-hand side up gives
  ``sum ceil(a_j / alpha) units_j >= ceil(demand / alpha)``, valid for
  non-negative integers (the left side is an integer at least ``demand / alpha``).
  They forbid the LP's fractional units of a small offer where a whole one
  is needed; the root bound on the benchmark market rises by about 2%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import highspy
import numpy as np

from cambist.placement.instance import FloatArray, Instance, IntArray

__all__ = ["GroupModel", "build_group_model"]


@dataclass(slots=True)
class GroupModel:
    """The HiGHS model and how to read its columns back as units per (workload, offer)."""

    lp: highspy.HighsLp
    col_w: IntArray
    """Per unit column (the first ``n_units``): its workload."""
    col_ref: IntArray
    """Per unit column: its group (grouped workload) or offer (budgeted workload)."""
    col_grouped: np.ndarray
    """Per unit column: whether ``col_ref`` is a group."""
    n_col0: int
    y_col0: int
    q_col0: int
    k_col0: int
    keep: list[tuple[int, int]]
    """Per keep column: the unit column it caps and the units held now."""
    q_offers: IntArray
    """Offers with a ``q`` column, in column order."""
    members: dict[int, list[int]] = field(default_factory=dict)
    """Group -> its offers, cheapest first (then those held now, then by index)."""
    cap_rows: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """The offer of each capacity row (rows ``0..len-1``)."""

    @property
    def n_units(self) -> int:
        return len(self.col_w)


class _Rows:
    """Row blocks in coordinate form."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, cols: list[int], vals: list[float], lo: float, hi: float) -> None:
        row = len(self.lo)
        self.r += [row] * len(cols)
        self.c += cols
        self.v += vals
        self.lo.append(lo)
        self.hi.append(hi)


def _members(inst: Instance) -> dict[int, list[int]]:
    held = {o for cur in inst.current for o in cur}
    out: dict[int, list[int]] = {}
    not_held = np.array([0 if o in held else 1 for o in range(len(inst.offers))])
    order = np.lexsort((np.arange(len(inst.offers)), not_held, inst.price))
    for o in order.tolist():
        out.setdefault(int(inst.group[o]), []).append(o)
    return out


def _unit_columns(inst: Instance) -> tuple[list[int], list[int], list[bool], list[float],
                                           list[float], list[float]]:
    """Workload, ref, grouped?, throughput, upper bound and price of every unit column."""
    cw: list[int] = []
    ref: list[int] = []
    grouped: list[bool] = []
    tput: list[float] = []
    upper: list[float] = []
    price: list[float] = []

    def column(w: int, r: int, g: bool, tt: float, up: float, p: float) -> None:
        cw.append(w)
        ref.append(r)
        grouped.append(g)
        tput.append(tt)
        upper.append(up)
        price.append(p)

    for w, wl in enumerate(inst.workloads):
        cand, t = inst.cand[w], inst.tput[w]
        if wl.budget_per_hour is not None:
            for o, tt in zip(cand.tolist(), t.tolist(), strict=True):
                column(w, o, False, tt, float(inst.avail[o]), float(inst.price[o]))
            continue
        groups = inst.group[cand]
        units = np.bincount(groups, weights=inst.avail[cand])
        _, first = np.unique(groups, return_index=True)
        for i in first.tolist():
            g, tt = int(groups[i]), float(t[i])
            cap = float(units[g])
            if wl.max_supplier_share >= 1:
                need = math.ceil(wl.tokens_per_s / tt - 1e-9) if tt > 0 else 0
                cap = min(cap, float(max(need, wl.min_replicas)))
            column(w, g, True, tt, cap, 0.0)
    return cw, ref, grouped, tput, upper, price


def _share_floor(n: int, share: float, n_suppliers: int) -> int:
    """The least ``m >= n`` with ``m <= n_suppliers * floor(share * m)`` (``n`` if none
    within 64 more units: the model then proves infeasibility itself)."""
    for m in range(n, n + 64):
        if m <= n_suppliers * math.floor(share * m + 1e-9):
            return m
    return n


def _cg_rows(rows: _Rows, cols: list[int], a: list[float], d: float, up: list[float]) -> None:
    """Chvatal-Gomory rounds of ``sum a_j x_j >= d`` (see the module docstring)."""
    for alpha in sorted({x for x, u in zip(a, up, strict=True) if u > 0 and 0 < x < d}):
        coef = [float(math.ceil(x / alpha - 1e-9)) for x in a]
        rows.add(cols, coef, float(math.ceil(d / alpha - 1e-9)), math.inf)


def build_group_model(inst: Instance, supplier_weight: float,
                      keep_weight: float, *, strengthen: bool = False) -> GroupModel:
    """The grouped MILP of ``inst`` (see the module docstring)."""
    W, S = len(inst.workloads), len(inst.suppliers)
    cw, ref, grouped, tput, upper, price = _unit_columns(inst)
    P = len(cw)
    n_col0, y_col0 = P, P + W
    members = _members(inst)
    used_groups = sorted({r for r, g in zip(ref, grouped, strict=True) if g})
    q_offers = [o for g in used_groups for o in members[g]]
    q_col0 = y_col0 + S
    q_pos = {o: q_col0 + i for i, o in enumerate(q_offers)}
    rows = _Rows()
    # Offer capacity: grouped units (q) and budgeted workloads' own units share it.
    per_offer: dict[int, list[int]] = {o: [q_pos[o]] for o in q_offers}
    for j in range(P):
        if not grouped[j]:
            per_offer.setdefault(ref[j], []).append(j)
    for o, cols in per_offer.items():
        rows.add(cols, [1.0] * len(cols), -math.inf, float(inst.avail[o]))
    # Group balance: what the group's offers supply equals what its workloads take.
    takers: dict[int, list[int]] = {}
    for j in range(P):
        if grouped[j]:
            takers.setdefault(ref[j], []).append(j)
    for g in used_groups:
        cols = [q_pos[o] for o in members[g]] + takers[g]
        rows.add(cols, [1.0] * len(members[g]) + [-1.0] * len(takers[g]), 0.0, 0.0)
    by_w: list[list[int]] = [[] for _ in range(W)]
    for j in range(P):
        by_w[cw[j]].append(j)
    sup_of = [int(inst.supplier[members[ref[j]][0]] if grouped[j] else inst.supplier[ref[j]])
              for j in range(P)]
    n_lower = []
    for w, wl in enumerate(inst.workloads):
        cols, d = by_w[w], wl.tokens_per_s
        if d > 0:
            rows.add(cols, [min(tput[j], d) for j in cols], d, math.inf)
            if strengthen:
                _cg_rows(rows, cols, [min(tput[j], d) for j in cols], d,
                         [upper[j] for j in cols])
        rows.add([*cols, n_col0 + w], [1.0] * len(cols) + [-1.0], 0.0, 0.0)
        best = max((tput[j] for j in cols), default=0.0)
        n_low = max(wl.min_replicas, math.ceil(d / best - 1e-9) if best > 0 else 0)
        if strengthen and wl.max_supplier_share < 1 and n_low > 0:
            n_sup = len({sup_of[j] for j in cols})
            n_low = _share_floor(n_low, wl.max_supplier_share, n_sup)
        n_lower.append(n_low)
        if wl.max_supplier_share < 1:
            per_sup: dict[int, list[int]] = {}
            for j in cols:
                per_sup.setdefault(sup_of[j], []).append(j)
            for js in per_sup.values():
                rows.add([*js, n_col0 + w], [1.0] * len(js) + [-wl.max_supplier_share],
                         -math.inf, 0.0)
        if wl.budget_per_hour is not None:
            rows.add(cols, [price[j] for j in cols], -math.inf, float(wl.budget_per_hour))
    big = np.bincount(inst.supplier, weights=inst.avail, minlength=S)
    per_s: list[list[int]] = [[] for _ in range(S)]
    for j in range(P):
        per_s[sup_of[j]].append(j)
    for s in range(S):
        if per_s[s]:
            rows.add(per_s[s] + [y_col0 + s], [1.0] * len(per_s[s]) + [-float(big[s])],
                     -math.inf, 0.0)
    k_col0 = q_col0 + len(q_offers)
    keep = _keep(inst, cw, ref, grouped)
    for i, (j, _) in enumerate(keep):
        rows.add([k_col0 + i, j], [1.0, -1.0], -math.inf, 0.0)
    n_col = k_col0 + len(keep)
    cost = np.concatenate([price, np.zeros(W), np.full(S, supplier_weight),
                           inst.price[np.array(q_offers, dtype=np.int64)],
                           np.full(len(keep), -keep_weight)])
    lower = np.zeros(n_col)
    lower[n_col0:y_col0] = n_lower
    # q has no upper bound of its own: its capacity row carries it, so that row's
    # dual is the offer's shadow price (the heuristic's LP-guided start reads it).
    col_upper = np.concatenate([upper, np.full(W, np.inf), np.ones(S),
                                np.full(len(q_offers), np.inf), [float(u) for _, u in keep]])
    lp = _highs_lp(rows, n_col, cost, lower, col_upper)
    kinds = np.full(n_col, highspy.HighsVarType.kContinuous)
    kinds[:P] = highspy.HighsVarType.kInteger
    kinds[y_col0:q_col0] = highspy.HighsVarType.kInteger
    lp.integrality_ = kinds.tolist()
    return GroupModel(lp, np.array(cw, dtype=np.int64), np.array(ref, dtype=np.int64),
                      np.array(grouped, dtype=bool), n_col0, y_col0, q_col0, k_col0, keep,
                      np.array(q_offers, dtype=np.int64), members,
                      np.array(list(per_offer), dtype=np.int64))


def _keep(inst: Instance, cw: list[int], ref: list[int],
          grouped: list[bool]) -> list[tuple[int, int]]:
    out = []
    for j, (w, r, g) in enumerate(zip(cw, ref, grouped, strict=True)):
        cur = inst.current[w]
        held = (sum(u for o, u in cur.items() if int(inst.group[o]) == r) if g
                else cur.get(r, 0))
        if held:
            out.append((j, held))
    return out


def _highs_lp(rows: _Rows, n_col: int, cost: FloatArray, lower: FloatArray,
              upper: FloatArray) -> highspy.HighsLp:
    r = np.array(rows.r, dtype=np.int64)
    c = np.array(rows.c, dtype=np.int64)
    v = np.array(rows.v, dtype=np.float64)
    order = np.lexsort((c, r))
    n_row = len(rows.lo)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_col, n_row
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lower, upper
    lp.row_lower_ = np.array(rows.lo, dtype=np.float64)
    lp.row_upper_ = np.array(rows.hi, dtype=np.float64)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.searchsorted(r[order], np.arange(n_row + 1)).astype(np.int32)
    lp.a_matrix_.index_ = c[order].astype(np.int32)
    lp.a_matrix_.value_ = v[order]
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n_col, n_row
    return lp


def _fill(m: GroupModel, left: IntArray, want: dict[int, int]) -> dict[int, int]:
    """Per offer, the units that supply ``want[g]`` units of each group, cheapest first."""
    out: dict[int, int] = {}
    for g, need in want.items():
        for o in m.members[g]:
            if need <= 0:
                break
            take = min(need, int(left[o]))
            if take > 0:
                out[o] = take
                need -= take
    return out


def _split(inst: Instance, m: GroupModel, units: IntArray) \
        -> tuple[list[dict[int, int]], IntArray, dict[int, list[tuple[int, int]]]]:
    """Budgeted workloads' units, what they leave free, and group -> [(workload, units)]."""
    plan: list[dict[int, int]] = [{} for _ in inst.workloads]
    left = inst.avail.copy()
    takers: dict[int, list[tuple[int, int]]] = {}
    for j in np.flatnonzero(units > 0).tolist():
        w, r, u = int(m.col_w[j]), int(m.col_ref[j]), int(units[j])
        if m.col_grouped[j]:
            takers.setdefault(r, []).append((w, u))
        else:
            plan[w][r] = plan[w].get(r, 0) + u
            left[r] -= u
    return plan, left, takers


def decode(inst: Instance, m: GroupModel, col_value: FloatArray) -> list[dict[int, int]]:
    """Units per workload and offer: each group filled cheapest first, a workload's units
    put first on the offers it holds now (fewer moves)."""
    plan, left, takers = _split(inst, m, np.rint(col_value[: m.n_units]).astype(np.int64))
    supply = _fill(m, left, {g: sum(u for _, u in ts) for g, ts in takers.items()})
    for g, ts in takers.items():
        rest = []
        for w, z in ts:
            for o in m.members[g]:
                held = min(z, inst.current[w].get(o, 0), supply.get(o, 0))
                if held > 0:
                    plan[w][o] = plan[w].get(o, 0) + held
                    supply[o] -= held
                    z -= held
            rest.append((w, z))
        for w, z in rest:
            for o in m.members[g]:
                take = min(z, supply.get(o, 0))
                if take > 0:
                    plan[w][o] = plan[w].get(o, 0) + take
                    supply[o] -= take
                    z -= take
    return plan


def start_vector(inst: Instance, m: GroupModel,
                 start: list[dict[int, int] | None]) -> FloatArray | None:
    """A plan (offer units per workload) as a column vector of ``m`` (``None`` when it
    leaves a workload out or uses a pair the model lacks). Unit bounds the plan
    exceeds are raised to it: they only serve to shrink the search, never to cut
    off a plan the caller already has."""
    if any(s is None for s in start):
        return None
    pos = {(int(w), int(r)): j for j, (w, r) in enumerate(zip(m.col_w, m.col_ref,
                                                              strict=True))}
    x = np.zeros(m.lp.num_col_)
    for w, units in enumerate(start):
        budgeted = inst.workloads[w].budget_per_hour is not None
        for o, u in (units or {}).items():
            j = pos.get((w, o if budgeted else int(inst.group[o])))
            if j is None:
                return None
            x[j] += u
            x[m.n_col0 + w] += u
            x[m.y_col0 + int(inst.supplier[o])] = 1
    upper = np.asarray(m.lp.col_upper_, dtype=np.float64)
    upper[: m.n_units] = np.maximum(upper[: m.n_units], x[: m.n_units])
    m.lp.col_upper_ = upper
    _, left, takers = _split(inst, m, np.rint(x[: m.n_units]).astype(np.int64))
    supply = _fill(m, left, {g: sum(u for _, u in ts) for g, ts in takers.items()})
    q_index = {int(o): i for i, o in enumerate(m.q_offers.tolist())}
    for o, u in supply.items():
        x[m.q_col0 + q_index[o]] = u
    for i, (j, held) in enumerate(m.keep):
        x[m.k_col0 + i] = min(x[j], held)
    return x
