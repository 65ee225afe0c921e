"""Placement benchmark: solve time and optimality gap of both solvers.

    python bench/placement.py [--offers 100,1000,10000] [--workloads 10,100,1000]
                              [--time-limit 20] [--gap 0.02] [--seed 1] [--seeds 1,2,3]
                              [--compare] [--baseline]

Offers are the simulated market's own (every supplier's ``list_offers``),
replicated with prices perturbed by +-15% until there are N of them; units
available are scaled so that the market holds about three times the units
the workloads need (else the large-demand cells are simply infeasible).
Workloads draw a catalog model (small models more often), a demand of
300-30,000 output tok/s (log-uniform), sometimes a TTFT SLO, a region prefix,
a minimum of 1-3 replicas and a supplier share cap.

For each cell the heuristic runs alone, then the MILP (HiGHS on the grouped
model, from the heuristic's plan, limited to ``--time-limit`` seconds and
stopping once proven within ``--gap``). ``gap`` is cost over the MILP's proven
lower bound, minus 1; "timeout" means the MILP hit its limit (its incumbent,
never dearer than the heuristic's, and its bound are still shown).

``--compare`` also runs the MILP on the plain model (without the valid
tightenings of ``cambist.placement.grouped``, ``milp.STRENGTHEN = False``) in
the same run, as the baseline for the before/after figures.

``--baseline`` also runs the MILP path as it was before price-and-branch
(the heuristic, then HiGHS from its plan: ``solve.DECOMPOSE_MIN_WORKLOADS``
raised out of reach) on the same instance, right after the default path, so
both see the same machine load. With several ``--seeds``, each cell is solved
once per seed and a summary line gives the median and worst time to a plan
proven within ``--gap`` ("> limit" when the MILP hit its time limit first).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import random
import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.placement import Plan, Policy, WorkloadDemand, milp, solve
from cambist.providers.registry import build_default_registry

# The package exports the function ``solve``, which hides the module of that name.
solve_module = importlib.import_module("cambist.placement.solve")

MODELS = [("llama-3.1-8b", 4), ("qwen2.5-7b", 3), ("llama-3.1-70b", 2),
          ("deepseek-r1-distill-llama-70b", 1), ("llama-3.1-405b", 0.3)]


async def market_offers() -> list[Offer]:
    """Every offer of the simulated market, as ``cambist up`` would see it now."""
    with tempfile.TemporaryDirectory() as d:
        reg = build_default_registry(Path(d))
        now = time.time()
        out: list[Offer] = []
        for s in reg.all():
            out += await s.list_offers(now)
        return out


def scale_offers(base: list[Offer], n: int, units_wanted: int, rng: random.Random) -> list[Offer]:
    """``n`` offers sampled from ``base`` with perturbed prices and scaled availability."""
    pool = base[:]
    rng.shuffle(pool)
    picked = [pool[i % len(pool)] for i in range(n)]
    mean_avail = sum(o.available for o in picked) / max(1, len(picked))
    factor = max(1.0, units_wanted / (n * mean_avail))
    out = []
    for i, o in enumerate(picked):
        price = (o.price_per_gpu_hour * Decimal(str(round(rng.uniform(0.85, 1.15), 4))))
        out.append(replace(o, id=f"{o.id}#{i}",
                           price_per_gpu_hour=price.quantize(Decimal("0.0001")),
                           available=max(1, round(o.available * factor * rng.uniform(0.5, 1.5)))))
    return out


def workloads(n: int, rng: random.Random) -> list[WorkloadDemand]:
    names, weights = zip(*MODELS, strict=True)
    out = []
    for i in range(n):
        model = MODEL_CATALOG[rng.choices(names, weights)[0]]
        out.append(WorkloadDemand(
            name=f"w{i}", model=model,
            tokens_per_s=round(math.exp(rng.uniform(math.log(300), math.log(30000)))),
            ttft_ms=rng.choice([None, None, 1500.0, 3000.0]),
            regions=rng.choice([(), (), ("us",), ("eu",), ("us", "eu")]),
            min_replicas=rng.choice([1, 1, 2, 3]),
            max_supplier_share=rng.choice([1.0, 1.0, 0.67, 0.5])))
    return out


def cell(plan_h: Plan, plan_m: Plan | None) -> str:
    h = f"{plan_h.solve_time_s:.2f}s"
    if plan_h.status.value == "infeasible":
        return f"heur {h} infeasible ({len(plan_h.reasons)} workloads)"
    if plan_m is None:
        return f"heur {h} ${plan_h.total_per_hour:.0f}/h | milp skipped"
    lb = plan_m.lower_bound_per_hour
    gap_h = (f"{float(plan_h.total_per_hour / lb - 1) * 100:.2f}%" if lb else "n/a")
    m_state = "timeout" if plan_m.status.value == "feasible" else f"{plan_m.solve_time_s:.2f}s"
    gap_m = f"{float(plan_m.total_per_hour / lb - 1) * 100:.2f}%" if lb else "n/a"
    return (f"heur {h} gap {gap_h} | milp {m_state} gap {gap_m} "
            f"(${plan_m.total_per_hour:.2f}/h, {plan_m.solver})")


def old_path(wls: list[WorkloadDemand], offers: list[Offer], policy: Policy) -> Plan:
    """``solve`` without price-and-branch: the heuristic, then HiGHS from its plan."""
    keep = solve_module.DECOMPOSE_MIN_WORKLOADS
    solve_module.DECOMPOSE_MIN_WORKLOADS = 10**9
    try:
        return solve(wls, offers, policy)
    finally:
        solve_module.DECOMPOSE_MIN_WORKLOADS = keep


def time_to_gap(plans: list[Plan], limit: float) -> str:
    """Median and worst solve time of plans proven within the gap (timeouts count as
    over the limit)."""
    times = sorted(p.solve_time_s if p.status.value == "optimal" else math.inf for p in plans)
    def show(t: float) -> str:
        return f"{t:.2f}s" if math.isfinite(t) else f"> {limit:.0f}s"
    mid = times[(len(times) - 1) // 2] if len(times) % 2 else (
        (times[len(times) // 2 - 1] + times[len(times) // 2]) / 2)
    met = sum(math.isfinite(t) for t in times)
    return f"median {show(mid)}, worst {show(times[-1])}, {met}/{len(times)} within gap"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--offers", default="100,1000,10000")
    ap.add_argument("--workloads", default="10,100,1000")
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--milp-max-pairs", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", default="",
                    help="comma-separated seeds (overrides --seed); summary per cell")
    ap.add_argument("--gap", type=float, default=0.02,
                    help="the MILP's relative gap tolerance (mip_rel_gap)")
    ap.add_argument("--compare", action="store_true",
                    help="also run the MILP on the plain model (the baseline)")
    ap.add_argument("--baseline", action="store_true",
                    help="also run the MILP path without price-and-branch (the old path)")
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    base = asyncio.run(market_offers())
    print(f"{'offers':>7} {'workloads':>9}  heuristic | MILP (gap = cost / proven bound - 1)")
    for n_off in map(int, args.offers.split(",")):
        for n_w in map(int, args.workloads.split(",")):
            new: list[Plan] = []
            old: list[Plan] = []
            for seed in seeds:
                rng = random.Random(seed * 1000 + n_off + n_w)
                wls = workloads(n_w, rng)
                offers = scale_offers(base, n_off, 3 * 3 * n_w, rng)
                ph = solve(wls, offers, Policy(solver="heuristic"))
                pm = None
                policy = Policy(solver="milp", time_limit_s=args.time_limit, mip_rel_gap=args.gap)
                if n_off * n_w <= args.milp_max_pairs:
                    pm = solve(wls, offers, policy)
                    new.append(pm)
                tag = f" seed {seed}" if len(seeds) > 1 else ""
                line = f"{n_off:>7} {n_w:>9}  {cell(ph, pm)}{tag}"
                if args.baseline and pm is not None:
                    po = old_path(wls, offers, policy)
                    old.append(po)
                    line += f"\n{'':>18}old path: {cell(ph, po).split('| ')[1]}"
                if args.compare and pm is not None:
                    milp.STRENGTHEN = False
                    try:
                        pb = old_path(wls, offers, policy)
                    finally:
                        milp.STRENGTHEN = True
                    line += f"\n{'':>18}old path, plain model: {cell(ph, pb).split('| ')[1]}"
                print(line, flush=True)
            if len(seeds) > 1 and new:
                print(f"{'':>18}time to gap <= {args.gap:.0%}: "
                      f"{time_to_gap(new, args.time_limit)}", flush=True)
                if old:
                    print(f"{'':>18}old path: {time_to_gap(old, args.time_limit)}", flush=True)


if __name__ == "__main__":
    main()
