"""The fast solver: workloads one at a time on shortlists, then re-placement moves.

Workloads are placed scarcest first (fewest candidate units, then largest
demand), each on a shortlist of its offers that still have free units: the
best by $/token until they hold ``coverage`` times the demand, the cheapest
by $/h (for minimum replicas), the best of every supplier (for the share cap)
and the offers it holds now (fewer moves). :func:`cambist.placement.local.solve_sub`
places it. Then, until nothing improves: each workload is taken out and placed
again against everyone else's units; and pairs of workloads contending for a
used-up offer are placed again together, in both orders. ``THOROUGH`` effort
(small problems) also tries other workload orders and a start that adds the
LP relaxation's shadow price of capacity to every offer's price, so contested
offers go to the workloads that gain most from them; the best plan wins.
``FAST`` effort (large problems) places each workload once. Restarts after
the second construct on noisy prices (``NOISE``), so contested offers land
elsewhere and the search leaves the first local optimum.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import numpy as np

from cambist.placement.instance import FloatArray, Instance, IntArray
from cambist.placement.local import SubProblem, solve_sub
from cambist.placement.milp import Relaxation, relax

__all__ = ["BALANCED", "FAST", "THOROUGH", "TINY", "Effort", "HeuristicResult", "effort_for",
           "solve_heuristic"]


@dataclass(frozen=True, slots=True)
class Effort:
    """How hard the heuristic works: shortlist sizes, constructions kept, moves tried."""

    ratio_min: int
    price_short: int
    coverage: float
    tries: int
    add_tries: int
    passes: int
    pair_moves: int
    restarts: int
    lp_start: bool


TINY = Effort(ratio_min=24, price_short=8, coverage=2.0, tries=2, add_tries=8, passes=3,
              pair_moves=300, restarts=24, lp_start=True)
THOROUGH = Effort(ratio_min=24, price_short=8, coverage=2.0, tries=2, add_tries=8, passes=3,
                  pair_moves=300, restarts=2, lp_start=True)
BALANCED = Effort(ratio_min=16, price_short=6, coverage=1.5, tries=2, add_tries=6, passes=2,
                  pair_moves=100, restarts=3, lp_start=True)
FAST = Effort(ratio_min=12, price_short=4, coverage=1.5, tries=1, add_tries=0, passes=1,
              pair_moves=0, restarts=0, lp_start=False)


def effort_for(inst: Instance) -> Effort:
    """``TINY`` (many workload orders) for a handful of workloads on a few hundred pairs,
    ``THOROUGH`` for small problems, ``BALANCED`` up to 300,000 pairs (without
    restarts beyond 300 workloads), else ``FAST``."""
    if len(inst.workloads) <= 8 and inst.pairs <= 400:
        return TINY
    if len(inst.workloads) <= 30 and inst.pairs <= 20_000:
        return THOROUGH
    if inst.pairs > 300_000:
        return FAST
    # Restarts pay on a hundred contended workloads, not on a thousand (time).
    return BALANCED if len(inst.workloads) <= 300 else replace(BALANCED, restarts=0)


SHORTLIST_MAX = 48
"""Most offers taken by $/token (units per offer make up the coverage beyond it)."""
CURRENT_DISCOUNT = 1e-7
"""Relative price cut on units a workload already holds: breaks ties toward fewer moves."""

NOISE = 0.5
"""Relative price noise in restarts after the first two (``Effort.restarts``)."""

HeuristicResult = tuple[list[dict[int, int] | None], dict[int, str]]
"""Per workload: offer index -> units (``None`` when it failed), and why it failed."""


class _Search:
    """The heuristic's state: the instance, the effort, free units and the plan so far."""

    def __init__(self, inst: Instance, effort: Effort) -> None:
        self.inst, self.effort = inst, effort
        self.left = inst.avail.copy()
        self.shift: FloatArray | None = None
        """Shadow prices added to offer prices while constructing (LP-guided start)."""
        self.plan: list[dict[int, int] | None] = [None] * len(inst.workloads)

    def _window(self, w: int) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
        """The shortest prefix of ``cand[w]`` whose free units cover the demand with margin:
        live positions, free units, and their cumulative throughput and units."""
        inst, e = self.inst, self.effort
        cand, tput, wl = inst.cand[w], inst.tput[w], inst.workloads[w]
        n = len(cand)
        window = min(n, 4 * (e.ratio_min + e.price_short) + 64)
        while True:
            free = self.left[cand[:window]]
            live = np.flatnonzero(free > 0).astype(np.int64)
            cum_t = np.cumsum(free[live] * tput[live])
            cum_n = np.cumsum(free[live])
            if window == n or (len(live) >= e.ratio_min
                               and cum_t[-1] >= e.coverage * wl.tokens_per_s
                               and cum_n[-1] >= e.coverage * wl.min_replicas):
                return live, free, cum_t, cum_n
            window = min(n, window * 4)

    def shortlist(self, w: int) -> IntArray:
        """Positions into ``inst.cand[w]`` worth considering, in $/token order."""
        inst, e = self.inst, self.effort
        cand, wl = inst.cand[w], inst.workloads[w]
        live, _, cum_t, cum_n = self._window(w)
        if len(live) <= e.ratio_min + e.price_short and len(live) == len(cand):
            return live
        k = max(e.ratio_min, int(np.searchsorted(cum_t, e.coverage * wl.tokens_per_s)) + 1,
                int(np.searchsorted(cum_n, e.coverage * wl.min_replicas)) + 1)
        k = min(k, SHORTLIST_MAX)
        parts = [live[:k]]
        by_price = inst.by_price[w][: 8 * e.price_short + 64]
        parts.append(by_price[self.left[cand[by_price]] > 0][: e.price_short])
        if wl.max_supplier_share < 1:
            rest = live[k:]
            _, first = np.unique(inst.supplier[cand[rest]], return_index=True)
            if len(first) < 3:
                rest = np.flatnonzero(self.left[cand] > 0)
                _, first = np.unique(inst.supplier[cand[rest]], return_index=True)
            parts.append(rest[first])
        if inst.current[w]:
            free = self.left[cand] > 0
            parts.append(np.flatnonzero(np.isin(cand, list(inst.current[w])) & free))
        return np.array(sorted(set(np.concatenate(parts).tolist())), dtype=np.int64)

    def place(self, w: int) -> dict[int, int] | None:
        """A placement of ``w`` on the units still free (``None``: none found)."""
        inst = self.inst
        if inst.workloads[w].tokens_per_s <= 0 and inst.workloads[w].min_replicas == 0:
            return {}
        pos = self.shortlist(w)
        if not len(pos):
            return None
        wl = inst.workloads[w]
        offers = inst.cand[w][pos]
        p = inst.price[offers].copy()
        if self.shift is not None and (wl.budget_per_hour is None or self.shift.min() >= 0):
            # A budget is checked on the sub-problem's prices: never on prices cut.
            p += self.shift[offers]
        if inst.current[w]:
            p[np.isin(offers, list(inst.current[w]))] *= 1 - CURRENT_DISCOUNT
        renumber: dict[int, int] = {}
        sup = [renumber.setdefault(g, len(renumber)) for g in inst.supplier[offers].tolist()]
        budget = math.inf if wl.budget_per_hour is None else float(wl.budget_per_hour)
        sp = SubProblem(p=p.tolist(), t=inst.tput[w][pos].tolist(), s=sup,
                        cap=self.left[offers].tolist(), demand=wl.tokens_per_s,
                        min_replicas=wl.min_replicas, share=wl.max_supplier_share,
                        budget=budget, add_tries=self.effort.add_tries)
        x = solve_sub(sp, self.effort.tries)
        if x is None:
            return None
        ids = offers.tolist()
        return {ids[i]: u for i, u in enumerate(x) if u}

    def cost(self, w: int, units: dict[int, int] | None) -> float:
        if units is None:
            return math.inf
        held = self.inst.current[w]
        return sum(self.inst.price[o] * u * (1 - CURRENT_DISCOUNT if o in held else 1)
                   for o, u in units.items())

    def apply(self, units: dict[int, int] | None, sign: int) -> None:
        for o, u in (units or {}).items():
            self.left[o] -= sign * u

    def blocking_pairs(self) -> list[tuple[int, int]]:
        """(a, b): ``b`` holds a used-up offer among ``a``'s best by $/token."""
        holders: dict[int, list[int]] = {}
        for b, units in enumerate(self.plan):
            for o in units or {}:
                if self.left[o] == 0:
                    holders.setdefault(o, []).append(b)
        pairs: dict[tuple[int, int], None] = {}
        for a in range(len(self.inst.workloads)):
            top = self.inst.cand[a][: self.effort.ratio_min]
            for o in top[self.left[top] == 0].tolist():
                for b in holders.get(o, ()):
                    if b != a:
                        pairs[(min(a, b), max(a, b))] = None
        return list(pairs)

    def replace_pair(self, a: int, b: int) -> bool:
        """Place ``a`` and ``b`` again, in both orders; keep the cheapest. Whether it changed."""
        plan = self.plan
        old = self.cost(a, plan[a]) + self.cost(b, plan[b])
        self.apply(plan[a], -1)
        self.apply(plan[b], -1)
        best, best_cost = (plan[a], plan[b]), old - 1e-9
        for first, second in ((b, a), (a, b)):
            got: dict[int, dict[int, int] | None] = {}
            for w in (first, second):
                got[w] = self.place(w)
                self.apply(got[w], +1)
            self.apply(got[first], -1)
            self.apply(got[second], -1)
            c = self.cost(a, got[a]) + self.cost(b, got[b])
            if c < best_cost:
                best, best_cost = (got[a], got[b]), c
        changed = best != (plan[a], plan[b])
        plan[a], plan[b] = best
        self.apply(plan[a], +1)
        self.apply(plan[b], +1)
        return changed

    def single_pass(self, order: list[int]) -> bool:
        """Take each workload out and place it again; whether any got cheaper."""
        changed = False
        for w in order:
            self.apply(self.plan[w], -1)
            again = self.place(w)
            if self.cost(w, again) < self.cost(w, self.plan[w]) - 1e-9:
                self.plan[w], changed = again, True
            self.apply(self.plan[w], +1)
        return changed


def _improve(search: _Search, order: list[int], pairs: bool = False) -> _Search:
    """Re-placement passes (and, with ``pairs``, pair moves) until nothing improves."""
    budget = search.effort.pair_moves if pairs else 0
    for _ in range(max(0, search.effort.passes - 1)):
        changed = search.single_pass(order)
        for a, b in search.blocking_pairs()[:budget]:
            budget -= 1
            changed = search.replace_pair(a, b) or changed
        if not changed:
            break
    return search


def _run(inst: Instance, effort: Effort, order: list[int],
         shift: FloatArray | None = None) -> _Search:
    search = _Search(inst, effort)
    search.shift = shift
    for w in order:
        search.plan[w] = search.place(w)
        search.apply(search.plan[w], +1)
    search.shift = None
    return _improve(search, order)


def _complete(inst: Instance, w: int, units: dict[int, int]) -> bool:
    wl = inst.workloads[w]
    pos = {o: i for i, o in enumerate(inst.cand[w].tolist()) if o in units}
    n = sum(units.values())
    served = sum(float(inst.tput[w][pos[o]]) * u for o, u in units.items())
    if served < wl.tokens_per_s - 1e-6 or n < wl.min_replicas:
        return False
    if wl.max_supplier_share < 1 and n:
        per: dict[int, int] = {}
        for o, u in units.items():
            per[int(inst.supplier[o])] = per.get(int(inst.supplier[o]), 0) + u
        if max(per.values()) > math.floor(wl.max_supplier_share * n + 1e-9):
            return False
    cost = sum(inst.price[o] * u for o, u in units.items())
    return wl.budget_per_hour is None or cost <= float(wl.budget_per_hour) + 1e-6


def _rounded(inst: Instance, effort: Effort, order: list[int], lp: Relaxation) -> _Search:
    """Start from the LP optimum: its whole units, then its fractional units rounded up
    where capacity allows; workloads still short are placed on LP-shadow prices."""
    search = _Search(inst, effort)
    for w in range(len(inst.workloads)):
        x = lp.units[w]
        whole = np.flatnonzero(x >= 1 - 1e-6)
        search.plan[w] = {int(inst.cand[w][i]): math.floor(x[i] + 1e-6) for i in whole}
        search.apply(search.plan[w], +1)
    short = []
    for w in order:
        units = search.plan[w] or {}
        x = lp.units[w]
        frac = x - np.floor(x + 1e-6)
        for i in np.argsort(-frac)[: int((frac > 1e-6).sum())].tolist():
            if _complete(inst, w, units):
                break
            o = int(inst.cand[w][i])
            if search.left[o] > 0:
                units[o] = units.get(o, 0) + 1
                search.left[o] -= 1
        search.plan[w] = units
        if not _complete(inst, w, units):
            short.append(w)
    search.shift = lp.capacity_prices
    for w in short:
        search.apply(search.plan[w], -1)
        search.plan[w] = search.place(w)
        search.apply(search.plan[w], +1)
    search.shift = None
    return _improve(search, order)


def _score(search: _Search) -> tuple[int, float]:
    """Fewest failed workloads, then cheapest."""
    plan = search.plan
    return (sum(x is None for x in plan),
            sum(search.cost(w, x) for w, x in enumerate(plan) if x is not None))


def solve_heuristic(inst: Instance, effort: Effort | None = None) -> HeuristicResult:
    """Place every workload of ``inst``; see the module docstring.

    With ``effort.restarts``, more workload orders are tried (the first by
    demand, the rest shuffled with a fixed seed; from the third on, constructed
    on prices with seeded noise) and the best plan is kept.
    """
    effort = effort or effort_for(inst)
    order = sorted(range(len(inst.workloads)), key=lambda w: (
        int(inst.avail[inst.cand[w]].sum()), -inst.workloads[w].tokens_per_s, w))
    best = _run(inst, effort, order)
    rng = random.Random(0)
    noise = np.random.default_rng(0)
    for r in range(effort.restarts if len(order) > 1 else 0):
        shift = None
        if r == 0:
            order = sorted(order, key=lambda w: -inst.workloads[w].tokens_per_s)
        else:
            rng.shuffle(order)
        if r >= 2:
            # Perturbed prices while constructing: contested offers land with other
            # workloads, so restarts reach other local optima, not the same one.
            shift = inst.price * noise.uniform(-NOISE, NOISE, len(inst.price))
        other = _run(inst, effort, order, shift)
        if _score(other) < _score(best):
            best = other
    lp = relax(inst) if effort.lp_start else None
    if lp is not None:
        for other in (_run(inst, effort, order, lp.capacity_prices),
                      _rounded(inst, effort, order, lp)):
            if _score(other) < _score(best):
                best = other
    if effort.pair_moves:
        best = _improve(best, order, pairs=True)
    failed = {w: "the heuristic found no placement meeting every constraint "
                 "against the other workloads" for w, x in enumerate(best.plan) if x is None}
    return best.plan, failed
