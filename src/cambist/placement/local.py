"""One workload on a shortlist of offers: construct, repair, improve.

The sub-problem: choose integer units ``x`` of a few offers (price ``p``,
throughput ``t``, supplier ``s``, free units ``cap``) so that ``t . x`` meets
the demand, ``sum(x)`` meets the minimum replicas and no supplier holds more
than ``floor(share * n)`` of the ``n`` replicas, at least cost. Constructions
are greedy by $/token with the cheapest single-unit completion tried at every
step (the knapsack-cover fix for the last, overshooting unit); repairs add or
swap units; improvement drops redundant units, swaps a unit for a cheaper
one, and adds a unit when that lets dearer ones go, until no move helps.

Shortlists hold a few dozen offers, so this is plain Python over lists: at
that size it is several times faster than NumPy's per-call overhead.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

__all__ = ["SubProblem", "solve_sub"]

EPS = 1e-6
ADD_TRIES = 12
"""Unused offers (best $/token first) tried by the add-then-drop move."""


@dataclass(slots=True)
class SubProblem:
    """A workload's shortlist; lists are aligned, cheapest $/token first."""

    p: list[float]
    t: list[float]
    s: list[int]
    """Supplier, renumbered 0..S-1 within the shortlist."""
    cap: list[int]
    demand: float
    min_replicas: int
    share: float
    budget: float
    add_tries: int = ADD_TRIES
    """Unused offers the add-then-drop move tries (0: the move is off)."""
    by_price: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_price = sorted(range(len(self.p)), key=self.p.__getitem__)

    def limit(self, n: int) -> int:
        """Most replicas one supplier may hold out of ``n``."""
        return n if self.share >= 1 else math.floor(self.share * n + 1e-9)

    def counts(self, x: list[int]) -> list[int]:
        cnt = [0] * (max(self.s) + 1)
        for i, u in enumerate(x):
            if u:
                cnt[self.s[i]] += u
        return cnt

    def cost(self, x: list[int]) -> float:
        return sum(p * u for p, u in zip(self.p, x, strict=True) if u)

    def served(self, x: list[int]) -> float:
        return sum(t * u for t, u in zip(self.t, x, strict=True) if u)

    def feasible(self, x: list[int]) -> bool:
        n = sum(x)
        return (self.served(x) >= self.demand - EPS and n >= self.min_replicas
                and all(u <= c for u, c in zip(x, self.cap, strict=True))
                and self.cost(x) <= self.budget + EPS
                and (n == 0 or max(self.counts(x)) <= self.limit(n)))


def _ratio_fill(sp: SubProblem, x0: list[int]) -> list[tuple[float, int, list[int]]]:
    """Greedy by $/token from ``x0``: the full greedy and, at every step, the prefix
    completed by the cheapest single unit that covers the rest; as (cost, units, x)."""
    x = x0[:]
    got, cost, n = sp.served(x), sp.cost(x), sum(x)
    out: list[tuple[float, int, list[int]]] = []
    for i in range(len(sp.p)):
        r = sp.demand - got
        if r <= EPS:
            break
        for j in sp.by_price:
            if x[j] < sp.cap[j] and sp.t[j] >= r - EPS:
                done = x[:]
                done[j] += 1
                out.append((cost + sp.p[j], n + 1, done))
                break
        k = min(sp.cap[i] - x[i], int((r + EPS) // sp.t[i]))
        if k > 0:
            x[i] += k
            got += k * sp.t[i]
            cost += k * sp.p[i]
            n += k
    if got >= sp.demand - EPS:
        out.append((cost, n, x))
    return out


def _extra(sp: SubProblem, k: int) -> float:
    """About what ``k`` more units cost: the ``k`` cheapest prices on the shortlist."""
    total = 0.0
    for j in sp.by_price:
        if k <= 0:
            break
        take = min(k, sp.cap[j])
        total += take * sp.p[j]
        k -= take
    return total


def _cheapest_units(sp: SubProblem, x: list[int], want: int) -> list[int]:
    """Add the cheapest free units until ``x`` holds ``want`` units."""
    need = want - sum(x)
    if need <= 0:
        return x
    x = x[:]
    for j in sp.by_price:
        take = min(need, sp.cap[j] - x[j])
        if take > 0:
            x[j] += take
            need -= take
            if need == 0:
                break
    return x


def _repair_share(sp: SubProblem, x: list[int]) -> list[int] | None:
    """Drop, add or swap units until no supplier exceeds its share (``None``: cannot)."""
    if sp.share >= 1:
        return x
    x = x[:]
    for _ in range(4 * (sum(sp.cap) + 2)):
        n, cnt = sum(x), sp.counts(x)
        lim = sp.limit(n)
        if n == 0 or max(cnt) <= lim:
            return x
        worst = max(range(len(cnt)), key=lambda k: cnt[k] - lim)
        got = sp.served(x)
        if n - 1 >= sp.min_replicas:
            spare = [u for u, xu in enumerate(x) if xu and sp.s[u] == worst
                     and got - sp.t[u] >= sp.demand - EPS]
            if spare:
                x[max(spare, key=sp.p.__getitem__)] -= 1
                continue
        best, move = math.inf, None
        for v in sp.by_price:
            if x[v] >= sp.cap[v] or sp.s[v] == worst:
                continue
            if cnt[sp.s[v]] + 1 <= sp.limit(n + 1) and sp.p[v] < best:
                best, move = sp.p[v], (-1, v)
            if cnt[sp.s[v]] + 1 > lim:
                continue
            for u, xu in enumerate(x):
                if xu and sp.s[u] == worst and got - sp.t[u] + sp.t[v] >= sp.demand - EPS \
                        and sp.p[v] - sp.p[u] < best:
                    best, move = sp.p[v] - sp.p[u], (u, v)
        if move is None:
            return None
        if move[0] >= 0:
            x[move[0]] -= 1
        x[move[1]] += 1
    return None


def _drop(sp: SubProblem, x: list[int], keep: int = -1) -> bool:
    """Remove the dearest unit (not of offer ``keep``) that is not needed; whether one was."""
    n = sum(x)
    if n - 1 < sp.min_replicas:
        return False
    got = sp.served(x)
    cnt = sp.counts(x) if sp.share < 1 else []
    lim = sp.limit(n - 1)
    best, pick = -math.inf, -1
    for u, xu in enumerate(x):
        if not xu or u == keep or sp.p[u] <= best or got - sp.t[u] < sp.demand - EPS:
            continue
        if cnt:
            su = sp.s[u]
            if any(c - (k == su) > lim for k, c in enumerate(cnt)):
                continue
        best, pick = sp.p[u], u
    if pick < 0:
        return False
    x[pick] -= 1
    return True


def _swap(sp: SubProblem, x: list[int]) -> bool:
    """Replace one unit by the cheaper free unit that keeps every constraint."""
    got = sp.served(x)
    cnt = sp.counts(x) if sp.share < 1 else []
    lim = sp.limit(sum(x))
    best, move = -EPS, (-1, -1)
    for u, xu in enumerate(x):
        if not xu:
            continue
        floor = sp.demand - EPS - got + sp.t[u]
        for v in sp.by_price:
            d = sp.p[v] - sp.p[u]
            if d >= best:
                break
            if x[v] >= sp.cap[v] or sp.t[v] < floor:
                continue
            if cnt and cnt[sp.s[v]] + 1 - (sp.s[v] == sp.s[u]) > lim:
                continue
            best, move = d, (u, v)
            break
    if move[0] < 0:
        return False
    x[move[0]] -= 1
    x[move[1]] += 1
    return True


def _add_drop(sp: SubProblem, x: list[int]) -> bool:
    """Add one unit, then drop what it makes redundant; kept only when cheaper."""
    best, best_cost = None, sp.cost(x) - EPS
    tried = 0
    for v in range(len(x)):
        if x[v] >= sp.cap[v]:
            continue
        tried += 1
        if tried > sp.add_tries:
            break
        y = x[:]
        y[v] += 1
        while _drop(sp, y, keep=v):
            pass
        c = sp.cost(y)
        if c < best_cost:
            best, best_cost = y, c
    if best is None:
        return False
    x[:] = best
    return True


def _improve(sp: SubProblem, x: list[int]) -> list[int]:
    x = x[:]
    for _ in range(4 * (sum(x) + len(x)) + 20):
        if not (_drop(sp, x) or _swap(sp, x) or (sp.add_tries and _add_drop(sp, x))):
            break
    return x


def _capped_fill(sp: SubProblem, n: int) -> list[int] | None:
    """Greedy by $/token with at most ``limit(n)`` units per supplier, topped up with
    the cheapest allowed units to ``n``: a start that already respects the share."""
    lim = sp.limit(n)
    per = [0] * (max(sp.s) + 1)
    x = [0] * len(sp.p)
    got = 0.0
    for order in (range(len(sp.p)), sp.by_price):
        for i in order:
            room = min(sp.cap[i] - x[i], lim - per[sp.s[i]], n - sum(x))
            if got >= sp.demand - EPS and order is not sp.by_price:
                break
            k = room if order is sp.by_price else min(
                room, max(1, math.ceil((sp.demand - got - EPS) / sp.t[i])))
            if k > 0:
                x[i] += k
                per[sp.s[i]] += k
                got += k * sp.t[i]
    return x if got >= sp.demand - EPS else None


ANCHORS = 12
"""Offers (best $/token first) tried as the anchor of a share-capped workload."""


def _anchor_starts(sp: SubProblem) -> list[list[int]]:
    """Share-capped starts built around one offer: as many of its units as the demand
    needs, then the cheapest units of other suppliers the cap asks for. The plain
    constructions fill by $/token and miss "one big unit plus the cheapest small one
    elsewhere", which no single swap reaches from them."""
    out = []
    for a in range(min(ANCHORS, len(sp.p))):
        k = min(sp.cap[a], max(1, math.ceil((sp.demand - EPS) / sp.t[a])))
        n = max(sp.min_replicas, math.ceil(k / sp.share - 1e-9))
        x = [0] * len(sp.p)
        x[a] = k
        per = [0] * (max(sp.s) + 1)
        per[sp.s[a]] = k
        lim = sp.limit(n)
        for j in sp.by_price:
            room = min(sp.cap[j] - x[j], lim - per[sp.s[j]], n - sum(x))
            if room > 0:
                x[j] += room
                per[sp.s[j]] += room
        if sp.served(x) >= sp.demand - EPS:
            out.append(x)
    return out


def _share_starts(sp: SubProblem, hint: int) -> list[list[int]]:
    """Share-respecting starts for replica counts around ``hint``, and anchored ones."""
    if sp.share >= 1:
        return []
    low = max(sp.min_replicas, math.ceil(1 / sp.share - 1e-9), 1)
    out = []
    for n in sorted({low, low + 1, low + 2, max(low, hint), max(low, hint) + 1}):
        x = _capped_fill(sp, n)
        if x is not None:
            out.append(x)
    return out + _anchor_starts(sp)


def solve_sub(sp: SubProblem, tries: int = 2) -> list[int] | None:
    """A cheap feasible ``x`` for the sub-problem, or ``None`` when none was found.

    The ``tries`` cheapest constructions are repaired and improved.
    """
    zero = [0] * len(sp.p)
    starts = [zero]
    if sp.min_replicas > 0:
        starts.append(_cheapest_units(sp, zero, sp.min_replicas))
    built = [c for start in starts for c in _ratio_fill(sp, start)]
    ranked = heapq.nsmallest(tries, built, key=lambda c: c[0] + (
        _extra(sp, sp.min_replicas - c[1]) if c[1] < sp.min_replicas else 0.0))
    filled = [_cheapest_units(sp, x, sp.min_replicas) for _, _, x in ranked]
    if tries > 1:
        filled += _share_starts(sp, sum(filled[0]) if filled else sp.min_replicas)
    best: list[int] | None = None
    for x in filled:
        fixed = _repair_share(sp, x)
        if fixed is None:
            continue
        y = _improve(sp, fixed)
        if sp.feasible(y) and (best is None or sp.cost(y) < sp.cost(best)):
            best = y
    return best
