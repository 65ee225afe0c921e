"""Sharing contested offers out well: price-and-branch over whole workload placements.

The heuristic places workloads one at a time, so when many of them want the
same few cheap offers, whoever comes first takes them. Here every workload
gets a pool of whole placements ("columns": units per offer group that meet
its demand, replicas and supplier share on their own), and a master program
picks one placement per workload so that together they fit the offers'
capacity at least cost (groups as in :mod:`cambist.placement.grouped`: the
master has a continuous ``q`` per offer, filled cheapest first, and a balance
row per group).

The pool grows by column generation. The master's LP relaxation prices each
group's units (the dual of its balance row) and every workload is placed
again against those prices; a placement cheaper than its workload's dual
value joins the pool. Cheap rounds price with :func:`cambist.placement.local.solve_sub`
(tries 1, no add-drop: about 1 ms a workload); once they stall, an exact
round solves every workload's pricing problem as a small MIP
(:func:`cambist.placement.bound.lagrangian_bound`), which also gives a proven
lower bound on every plan's $/h. When the LP is within a fraction of the
target gap of that bound (or the exact round adds nothing, or time is up),
the master is solved as a MILP (a binary per placement) from the start
plans' placements, with at least a fifth of the time. Cheap rounds get at
most ``CHEAP_SHARE`` of the rest, so an exact round always runs. The result
is a plan and a proven bound; the bound comes from the exact rounds only,
never from the master.

Workloads with a budget are priced per offer (their budget is on list prices)
and join the pool from the exact rounds and the start plans. Ties: a unit
kept where the workload holds it now earns the MILP's ``KEEP_WEIGHT``; fewer
suppliers are not sought here (the MILP does that).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np

from cambist.placement.bound import lagrangian_bound
from cambist.placement.instance import FloatArray, Instance, IntArray
from cambist.placement.local import SubProblem, solve_sub

__all__ = ["Decomposition", "decompose"]

Units = dict[int, int]
"""Offer (budgeted workloads) or group (the others) -> units."""

SHORTLIST = 28
"""Groups (best $/token at the current duals first) a cheap pricing sees."""
RC_EPS = 1e-6
"""A placement joins the pool only when it beats its workload's dual by this ($/h)."""
ARTIFICIAL = 1e6
"""$/h of the placeholder column of a workload no start places: keeps the LP
feasible; a master MILP that still picks one has no plan."""
KEEP_WEIGHT = 1e-5
"""$/h credited per unit kept from the current placement (as in the MILP)."""
STALL = 1e-3
"""Cheap rounds stop when the LP improves by less than this fraction."""
CHEAP_SHARE = 0.4
"""Cheap rounds stop after this share of the time (an exact round, the only source
of a bound, then runs even on markets where the cheap rounds converge slowly)."""


@dataclass(slots=True)
class _Groups:
    """Per group: its offers cheapest first, supplier and units; per workload its groups."""

    members: list[list[int]]
    supplier: IntArray
    units: IntArray
    cheapest: FloatArray
    w_groups: list[IntArray] = field(default_factory=list)
    """Per workload: its candidate groups, best $/token (at list price) first."""
    w_tput: list[FloatArray] = field(default_factory=list)
    """Per workload: output tok/s of one unit of each of its groups."""


def _groups(inst: Instance) -> _Groups:
    n_g = int(inst.group.max()) + 1 if len(inst.group) else 0
    members: list[list[int]] = [[] for _ in range(n_g)]
    for o in np.lexsort((np.arange(len(inst.price)), inst.price)).tolist():
        members[int(inst.group[o])].append(o)
    supplier = np.zeros(n_g, dtype=np.int64)
    cheapest = np.zeros(n_g)
    for g, ms in enumerate(members):
        if ms:
            supplier[g], cheapest[g] = inst.supplier[ms[0]], inst.price[ms[0]]
    units = np.bincount(inst.group, weights=inst.avail, minlength=n_g).astype(np.int64)
    gs = _Groups(members, supplier, units, cheapest)
    for w in range(len(inst.workloads)):
        groups = inst.group[inst.cand[w]]
        _, first = np.unique(groups, return_index=True)
        first.sort()
        gs.w_groups.append(groups[first].astype(np.int64))
        gs.w_tput.append(inst.tput[w][first])
    return gs


class _Master:
    """The restricted master in HiGHS: rows ``[convexity per workload | balance per
    group | capacity per offer]``, columns ``[q per offer | one per placement]``."""

    def __init__(self, inst: Instance, gs: _Groups) -> None:
        self.inst, self.gs = inst, gs
        W, G, N = len(inst.workloads), len(gs.members), len(inst.price)
        self.W, self.G, self.O = W, G, N
        self.cols: list[tuple[int, Units]] = []
        self.index: dict[tuple[int, tuple[tuple[int, int], ...]], int] = {}
        self.pool: list[list[int]] = [[] for _ in range(W)]
        self.artificial: set[int] = set()
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("threads", 1)
        inf = highspy.kHighsInf
        lo = np.concatenate([np.ones(W), np.zeros(G), np.full(N, -inf)])
        hi = np.concatenate([np.ones(W), np.zeros(G), inst.avail.astype(np.float64)])
        h.addRows(W + G + N, lo, hi, 0, np.zeros(0, dtype=np.int32),
                  np.zeros(0, dtype=np.int32), np.zeros(0))
        # q[o]: -1 in its group's balance row, +1 in its capacity row.
        starts = np.arange(0, 2 * N, 2, dtype=np.int32)
        index = np.empty(2 * N, dtype=np.int32)
        index[0::2] = W + inst.group
        index[1::2] = W + G + np.arange(N)
        value = np.tile([-1.0, 1.0], N)
        h.addCols(N, inst.price, np.zeros(N), np.full(N, inf), 2 * N, starts, index, value)
        self.h = h

    def has(self, w: int) -> bool:
        """Whether ``w`` has a real placement in the pool."""
        return bool(self.pool[w])

    def add(self, w: int, units: Units, credit: float = 0.0) -> bool:
        """Add a placement of ``w`` (``credit`` $/h off its cost: kept units) to the
        pool (``False``: it is there already)."""
        key = (w, _key(units))
        if key in self.index:
            return False
        self.index[key] = len(self.cols)
        self.pool[w].append(len(self.cols))
        self.cols.append((w, units))
        budgeted = self.inst.workloads[w].budget_per_hour is not None
        rows = [w]
        vals = [1.0]
        cost = credit
        for r, u in sorted(units.items()):
            if budgeted:
                rows.append(self.W + self.G + r)
                cost += float(self.inst.price[r]) * u
            else:
                rows.append(self.W + r)
            vals.append(float(u))
        self.h.addCol(cost, 0.0, 1.0, len(rows), np.array(rows, dtype=np.int32),
                      np.array(vals))
        return True

    def add_artificial(self, w: int) -> None:
        """A placeholder for ``w`` that uses nothing and costs ``ARTIFICIAL``."""
        self.cols.append((w, {}))
        self.artificial.add(len(self.cols) - 1)
        self.h.addCol(ARTIFICIAL, 0.0, 1.0, 1, np.array([w], dtype=np.int32),
                      np.array([1.0]))

    def solve_lp(self) -> tuple[FloatArray, FloatArray] | None:
        """Duals of the LP: per workload (convexity) and per group (unit price)."""
        self.h.run()
        if self.h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        dual = np.asarray(self.h.getSolution().row_dual, dtype=np.float64)
        return dual[: self.W], -dual[self.W: self.W + self.G]

    def solve_mip(self, time_limit_s: float, starts: Sequence[Sequence[int]]) \
            -> list[int] | None:
        """Index into ``cols`` of the placement chosen per workload (``None``: no plan
        without a placeholder), started from the cheapest of ``starts``."""
        h, n = self.h, self.O + len(self.cols)
        kinds = [highspy.HighsVarType.kContinuous] * self.O + \
            [highspy.HighsVarType.kInteger] * len(self.cols)
        h.changeColsIntegrality(n, np.arange(n, dtype=np.int32), np.array(kinds))
        h.setOptionValue("time_limit", float(max(time_limit_s, 0.01)))
        h.setOptionValue("mip_rel_gap", 1e-4)
        best: FloatArray | None = None
        for start in starts:
            x = np.zeros(n)
            x[[self.O + k for k in start]] = 1.0
            x[: self.O] = self._q(start)
            if best is None or self._cost(x) < self._cost(best):
                best = x
        if best is not None:
            sol = highspy.HighsSolution()
            sol.col_value = best.tolist()
            sol.value_valid = True
            h.setSolution(sol)
        h.run()
        if h.getInfo().primal_solution_status != 2:
            return None
        val = np.asarray(h.getSolution().col_value, dtype=np.float64)[self.O:]
        chosen = [-1] * self.W
        for k in np.flatnonzero(val > 0.5).tolist():
            chosen[self.cols[k][0]] = k
        if min(chosen, default=0) < 0 or self.artificial.intersection(chosen):
            return None
        return chosen

    def _cost(self, x: FloatArray) -> float:
        return float(np.dot(np.asarray(self.h.getLp().col_cost_, dtype=np.float64), x))

    def _q(self, chosen: Sequence[int]) -> FloatArray:
        """Offer units that supply the groups' totals of ``chosen``, cheapest first."""
        left = self.inst.avail.astype(np.float64)
        want = np.zeros(self.G)
        for k in chosen:
            w, units = self.cols[k]
            for r, u in units.items():
                if self.inst.workloads[w].budget_per_hour is not None:
                    left[r] -= u
                else:
                    want[r] += u
        q = np.zeros(self.O)
        for g in np.flatnonzero(want > 0).tolist():
            need = want[g]
            for o in self.gs.members[g]:
                take = min(need, max(left[o], 0.0))
                q[o], need = take, need - take
                if need <= 0:
                    break
        return q


def _to_columns(inst: Instance, plan: Sequence[dict[int, int] | None]) -> list[Units | None]:
    """A plan (offer units per workload) as placements (``None`` where it has none)."""
    out: list[Units | None] = []
    for w, units in enumerate(plan):
        if units is None or inst.workloads[w].budget_per_hour is not None:
            out.append(None if units is None else dict(units))
            continue
        z: Units = {}
        for o, u in units.items():
            g = int(inst.group[o])
            z[g] = z.get(g, 0) + u
        out.append(z)
    return out


def _price(inst: Instance, gs: _Groups, w: int, unit_price: FloatArray) -> Units | None:
    """The cheapest placement of ``w`` that :func:`solve_sub` finds at ``unit_price``."""
    wl = inst.workloads[w]
    groups, tput = gs.w_groups[w], gs.w_tput[w]
    p = unit_price[groups]
    ratio = p / np.maximum(np.minimum(tput, max(wl.tokens_per_s, 1e-9)), 1e-12)
    pick = [np.argsort(ratio, kind="stable")[:SHORTLIST], np.argsort(p, kind="stable")[:6]]
    if wl.max_supplier_share < 1:
        order = np.argsort(ratio, kind="stable")
        _, first = np.unique(gs.supplier[groups[order]], return_index=True)
        pick.append(order[first])
    pos = np.array(sorted(set(np.concatenate(pick).tolist())), dtype=np.int64)
    pos = pos[np.argsort(ratio[pos], kind="stable")]
    renumber: dict[int, int] = {}
    sup = [renumber.setdefault(s, len(renumber)) for s in gs.supplier[groups[pos]].tolist()]
    sp = SubProblem(p=p[pos].tolist(), t=tput[pos].tolist(), s=sup,
                    cap=gs.units[groups[pos]].tolist(), demand=wl.tokens_per_s,
                    min_replicas=wl.min_replicas, share=wl.max_supplier_share,
                    budget=math.inf, add_tries=0)
    x = solve_sub(sp, 1)
    if x is None:
        return None
    ids = groups[pos].tolist()
    return {ids[i]: u for i, u in enumerate(x) if u}


@dataclass(slots=True)
class Decomposition:
    """The plan chosen (offer units per workload) and a proven lower bound on any plan."""

    plan: list[dict[int, int]]
    cost: float
    lower_bound: float | None
    """The best Lagrangian bound of the exact rounds ($/h; ``None`` without one)."""
    rounds: int
    exact_rounds: int
    columns: int

    @property
    def gap(self) -> float | None:
        """Cost over the proven bound, minus one."""
        if self.lower_bound is None or self.lower_bound <= 0:
            return None
        return self.cost / self.lower_bound - 1


def _kept(inst: Instance, gs: _Groups, w: int, units: Units) -> int:
    """Units of ``units`` that can stay where ``w`` holds them now."""
    cur = inst.current[w]
    if not cur:
        return 0
    if inst.workloads[w].budget_per_hour is not None:
        return sum(min(u, cur.get(o, 0)) for o, u in units.items())
    held: dict[int, int] = {}
    for o, u in cur.items():
        held[int(inst.group[o])] = held.get(int(inst.group[o]), 0) + u
    return sum(min(u, held.get(g, 0)) for g, u in units.items())


def decompose(inst: Instance, starts: Sequence[Sequence[dict[int, int] | None]], *,
              time_limit_s: float, rel_gap: float) -> Decomposition | None:
    """Price-and-branch (see the module docstring) from the plans in ``starts`` (a
    workload a start leaves out, ``None``, is fine). ``None`` when the master finds
    no placement for some workload. Stops early once the LP is within a third of
    ``rel_gap`` of the proven bound."""
    t0 = time.perf_counter()
    if not inst.workloads:
        return None
    gs = _groups(inst)
    master = _Master(inst, gs)
    start_cols: list[list[int]] = []
    for plan in starts:
        cols = []
        for w, units in enumerate(_to_columns(inst, plan)):
            if units is not None:
                master.add(w, units, -KEEP_WEIGHT * _kept(inst, gs, w, units))
                cols.append(master.index[(w, _key(units))])
        if len(cols) == len(inst.workloads):
            start_cols.append(cols)
    for w in range(len(inst.workloads)):
        if not master.has(w):
            master.add_artificial(w)
    pricing = [w for w, wl in enumerate(inst.workloads) if wl.budget_per_hour is None]
    mip_s = 0.2 * time_limit_s  # kept for the master MILP (it gets whatever is left)
    rounds = exact_rounds = 0
    bound: float | None = None
    last_lp = math.inf
    cheap = True
    while time.perf_counter() - t0 < time_limit_s - mip_s:
        duals = master.solve_lp()
        if duals is None:
            break
        lp_value = master.h.getInfo().objective_function_value
        mu, nu = duals
        # An unused group's balance dual is only bounded by its members' prices; its
        # cheapest price is as dual-optimal and keeps the pricing off "free" units.
        nu = np.maximum(nu, gs.cheapest)
        rounds += 1
        if bound is not None and lp_value <= bound * (1 + rel_gap / 3):
            break
        priced: list[Units | None] = [None] * len(inst.workloads)
        added = 0
        for w in pricing:
            units = priced[w] = _price(inst, gs, w, nu)
            if units is not None and _better(inst, gs, master, w, units, nu, mu[w]):
                added += 1
        budget = time_limit_s - mip_s
        if cheap and added and lp_value < last_lp * (1 - STALL) and \
                time.perf_counter() - t0 < CHEAP_SHARE * budget:
            last_lp = lp_value
            continue
        cheap = False
        left = budget - (time.perf_counter() - t0)
        if left <= 0:
            break
        lb = lagrangian_bound(inst, nu, hints=priced, time_limit_s=left)
        exact_rounds += 1
        if math.isfinite(lb.value):
            bound = lb.value if bound is None else max(bound, lb.value)
        for w, units in enumerate(lb.placements):
            if units is not None and _better(inst, gs, master, w, units, nu, mu[w]):
                added += 1
        if not added:
            break
    left = time_limit_s - (time.perf_counter() - t0)
    chosen = master.solve_mip(max(left, 0.05), start_cols)
    if chosen is None:
        return None
    plan = _decode(inst, gs, [master.cols[k] for k in chosen])
    cost = float(sum(inst.price[o] * u for x in plan for o, u in x.items()))
    return Decomposition(plan, cost, bound, rounds, exact_rounds, len(master.cols))


def _key(units: Units) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(units.items()))


def _better(inst: Instance, gs: _Groups, master: _Master, w: int, units: Units,
            nu: FloatArray, mu: float) -> bool:
    """Add ``units`` to ``w``'s pool when its reduced cost is negative; whether it was."""
    if inst.workloads[w].budget_per_hour is not None:
        rho = np.maximum(0.0, nu[inst.group] - inst.price)
        value = sum((inst.price[o] + rho[o]) * u for o, u in units.items())
    else:
        value = sum(nu[g] * u for g, u in units.items())
    credit = KEEP_WEIGHT * _kept(inst, gs, w, units)
    return value - credit < mu - RC_EPS and master.add(w, units, -credit)


def _decode(inst: Instance, gs: _Groups, cols: Sequence[tuple[int, Units]]) \
        -> list[dict[int, int]]:
    """Offer units per workload: budgeted placements as they are; each group's total
    supplied cheapest offer first (as the master priced it), and shared out with a
    workload's current offers first (fewer moves)."""
    plan: list[dict[int, int]] = [{} for _ in inst.workloads]
    left = inst.avail.copy()
    want = np.zeros(len(gs.members), dtype=np.int64)
    for w, units in cols:
        for r, u in units.items():
            if inst.workloads[w].budget_per_hour is not None:
                plan[w][r] = u
                left[r] -= u
            else:
                want[r] += u
    supply: dict[int, int] = {}
    for g in np.flatnonzero(want > 0).tolist():
        need = int(want[g])
        for o in gs.members[g]:
            take = min(need, int(left[o]))
            if take > 0:
                supply[o], need = take, need - take
            if need <= 0:
                break
    for held_first in (True, False):
        for w, units in cols:
            if inst.workloads[w].budget_per_hour is not None:
                continue
            for g, u in units.items():
                need = u - sum(plan[w].get(o, 0) for o in gs.members[g])
                for o in gs.members[g]:
                    if need <= 0:
                        break
                    cap = supply.get(o, 0)
                    if held_first:
                        cap = min(cap, inst.current[w].get(o, 0))
                    take = min(need, cap)
                    if take > 0:
                        plan[w][o] = plan[w].get(o, 0) + take
                        supply[o] -= take
                        need -= take
    return plan
