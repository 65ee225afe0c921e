"""The hindsight oracle: realized prices and demand known, capacity placed hour by hour.

For every hour and model (decomposed by model, models taking units in a fixed
order so they never share one) the oracle solves exactly, with HiGHS, the
integer program

    min  sum_o p_o x_o + sum_o p_o (spin_o / 3600) y_o
    s.t. sum_o c_o x_o >= need            (the hour's realized peak / target utilization)
         y_o >= x_o - prev_o              (units new this hour pay their spin-up)
         0 <= x_o <= avail_o, x integer   (what the market offered that hour)

(solved with ``y`` eliminated and interchangeable units grouped, see
:func:`solve_hour`)
with ``p`` the hour's realized price per unit-hour, ``c`` the unit's
throughput for the model, ``prev`` the oracle's units in the previous hour.
The constraints are Cambist's: same offers and availability, same spin-up,
same target utilization; billing minimums (at most an hour in the shipped
scenarios) never bind on hourly decisions. Only the knowledge differs.
"""

from __future__ import annotations

import math

import highspy
import numpy as np
import numpy.typing as npt

from cambist.sim.baselines import Outcome, peak_rate
from cambist.sim.capacity import ModelShape
from cambist.sim.demand import Demand
from cambist.sim.market import MarketTape
from cambist.sim.traffic import TtftSamples, serve_series

__all__ = ["hourly_oracle", "solve_hour"]

F64 = npt.NDArray[np.float64]


def _unit_classes(price: F64, cap: F64, avail: F64, spin: F64, prev: F64) \
        -> dict[float, list[tuple[float, int]]]:
    """Every rentable unit as ``(cost, offer)``, grouped by throughput and
    sorted cheapest first. A unit kept from last hour costs ``p``; a new one
    also pays its spin-up (``p * spin / 3600``) while it is not serving yet."""
    classes: dict[float, list[tuple[float, int]]] = {}
    kept = np.minimum(prev, avail)
    for o in range(len(price)):
        units = classes.setdefault(float(cap[o]), [])
        units += [(float(price[o]), o)] * int(kept[o])
        units += [(float(price[o] * (1.0 + spin[o] / 3600.0)), o)] * int(avail[o] - kept[o])
    for units in classes.values():
        units.sort()
    return classes


def solve_hour(price: F64, cap: F64, avail: F64, spin: F64, prev: F64, need: float) \
        -> tuple[F64, bool]:
    """Units per offer minimizing the hour's cost (see the module docstring);
    ``(units, feasible)``. Infeasible hours take every available unit.

    Units of equal throughput are interchangeable, so an optimal plan takes
    the cheapest ``k_g`` of each throughput class ``g``: the program is solved
    with one integer ``k_g`` per class and continuous ``z`` per run of
    equal-cost units (``sum z = k_g``; the class's cost is convex, so the LP
    fills its cheapest units first). Same optimum, a handful of integers."""
    n = len(price)
    if need <= 0 or n == 0:
        return np.zeros(n), True
    if float((cap * avail).sum()) < need:
        return avail.copy(), False
    classes = _unit_classes(price, cap, avail, spin, prev)
    caps = list(classes)
    for g in caps:  # no optimum takes more of a class than covers the need alone
        del classes[g][math.ceil(need / g):]
    # Runs of equal-cost units (one offer, kept or new) become one column.
    runs: list[list[tuple[float, int]]] = []
    for g in caps:
        row: list[tuple[float, int]] = []
        for c, _ in classes[g]:
            if row and row[-1][0] == c:
                row[-1] = (c, row[-1][1] + 1)
            else:
                row.append((c, 1))
        runs.append(row)
    n_z = sum(len(r) for r in runs)
    n_col, n_row = n_z + len(caps), len(caps) + 1
    cost = np.array([c for r in runs for c, _ in r] + [0.0] * len(caps))
    upper = np.array([float(m) for r in runs for _, m in r]
                     + [float(len(classes[g])) for g in caps])
    starts, index, value = [0], [], []
    for gi, r in enumerate(runs):  # z columns of class g: in row 1 + gi
        for _ in r:
            index.append(1 + gi)
            value.append(1.0)
            starts.append(len(index))
    for gi, g in enumerate(caps):  # k_g: the covering row 0, and -1 in its class row
        index += [0, 1 + gi]
        value += [g, -1.0]
        starts.append(len(index))
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_col, n_row
    lp.col_cost_ = cost
    lp.col_lower_ = np.zeros(n_col)
    lp.col_upper_ = upper
    lp.row_lower_ = np.concatenate(([need], np.zeros(len(caps))))
    lp.row_upper_ = np.concatenate(([highspy.kHighsInf], np.zeros(len(caps))))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(value, dtype=np.float64)
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n_col, n_row
    lp.integrality_ = [highspy.HighsVarType.kContinuous] * n_z + \
        [highspy.HighsVarType.kInteger] * len(caps)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("mip_rel_gap", 1e-6)
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return avail.copy(), False
    k = np.asarray(h.getSolution().col_value, dtype=np.float64)[n_z:].round()
    units = np.zeros(n)
    for g, take in zip(caps, k.tolist(), strict=True):
        for _, o in classes[g][:int(take)]:
            units[o] += 1
    return units, True


def hourly_oracle(demand: Demand, tape: MarketTape, shapes: dict[str, ModelShape],
                  spin_up_s: dict[str, float], hour0: int, target: float,
                  only_supplier: str | None = None) -> Outcome:
    """Solve every (hour, model) exactly; serve the realized traffic on the result.

    With ``only_supplier`` the oracle may use that supplier's offers only: the
    best any single-cloud autoscaler could do with hindsight (``single-elastic``)."""
    price_all, avail_all = tape.arrays()
    hours = demand.minutes // 60
    prices, avails = price_all[hour0:hour0 + hours], avail_all[hour0:hour0 + hours]
    spin = np.array([spin_up_s.get(o.supplier, 0.0) for o in tape.offers])
    out = demand.output.astype(np.float64)
    by_model = demand.by_model()
    caps = {m: np.array([(u.tokens_per_s if (u := shapes[m].unit(o)) else 0.0)
                         for o in tape.offers]) for m in by_model}
    ttfts = {m: np.array([(u.ttft0_s if (u := shapes[m].unit(o)) else 0.0)
                          for o in tape.offers]) for m in by_model}
    mask = np.array([only_supplier is None or o.supplier == only_supplier
                     for o in tape.offers])
    prev = {m: np.zeros(len(tape.offers)) for m in by_model}
    pool_cap = {m: np.zeros(demand.minutes) for m in by_model}
    pool_ttft = {m: np.zeros(demand.minutes) for m in by_model}
    hourly = np.zeros(hours)
    infeasible = 0
    for h in range(hours):
        left = avails[h].astype(np.float64)
        for m, idx in by_model.items():
            rate = out[idx, h * 60:(h + 1) * 60].sum(axis=0) / 60.0
            use = (caps[m] > 0) & mask
            x = np.zeros(len(tape.offers))
            got, ok = solve_hour(prices[h, use], caps[m][use], left[use], spin[use],
                                 prev[m][use], peak_rate(rate) / target)
            x[use] = got
            infeasible += 0 if ok else 1
            left -= x
            new = np.maximum(x - prev[m], 0.0)
            hourly[h] += float((x * prices[h]).sum() + (new * prices[h] * spin).sum() / 3600)
            prev[m] = x
            c = float((x * caps[m]).sum())
            pool_cap[m][h * 60:(h + 1) * 60] = c
            pool_ttft[m][h * 60:(h + 1) * 60] = float((x * caps[m] * ttfts[m]).sum()) / c \
                if c > 0 else 0.0
    samples = TtftSamples()
    served, capacity = 0.0, 0.0
    for m, idx in by_model.items():
        s = serve_series(out[idx].sum(axis=0), demand.requests[idx].sum(axis=0).astype(
            np.float64), pool_cap[m], pool_ttft[m], samples)
        served += float(s.sum())
        capacity += float(pool_cap[m].sum()) * 60.0
    name = "oracle" if only_supplier is None else "single-elastic"
    detail: dict[str, object] = {"infeasible_hours": infeasible,
                                 "solves": hours * len(by_model)}
    if only_supplier is not None:
        detail["supplier"] = only_supplier
    return Outcome(name, float(hourly.sum()), served, capacity, samples, hourly, detail)
