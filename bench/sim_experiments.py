"""The simulator's three experiments, with every ratio computed in the same run.

    python bench/sim_experiments.py                     # 30 days x 100 tenants, 4 scenarios
    python bench/sim_experiments.py --days 2 --tenants 20 --scenarios steady
    python bench/sim_experiments.py --capacity controller   # the real deploy controller

(1) pooled platform utilization vs dedicated per-tenant utilization at equal
    SLO; (2) Cambist's cost per Mtok vs the single-supplier baseline and the
    hindsight oracle across the scenarios, with the capture ratio; (3) effective
    margin vs compute margin as utilization varies (Cambist day by day, and the
    four policies). Each scenario's full report (report.md, PNGs, figures.json)
    goes to ``--out/<scenario>``; ``--img`` also saves the first scenario's cost
    chart (the README's figure).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

from cambist.sim.driver import CapacityMode
from cambist.sim.figures import run_figures
from cambist.sim.report import plot_cost_per_mtok, write_report
from cambist.sim.run import RunOptions, simulate
from cambist.sim.scenario import load_scenario, shipped_scenarios

ORDER = ("dedicated", "single-supplier", "cambist", "oracle")
"""The four policies every run has (``single-elastic`` is extra, bench only)."""


def _preemption_line(pre: dict[str, Any]) -> str:
    t = pre["time_to_restore_s"]
    line = f"{pre['count']} preemptions, {pre['replaced']} replaced"
    if t["p50"] is not None:
        line += (f", time to restore capacity p50 {t['p50']:.0f} s / p90 {t['p90']:.0f} s / "
                 f"max {t['max']:.0f} s")
    return line


def _run(name: str, days: float, tenants: int, seed: int | None, out: Path,
         capacity: CapacityMode = "policy") -> dict[str, Any]:
    sc = load_scenario(name)
    run = asyncio.run(simulate(sc, RunOptions(days=days, tenants=tenants,
                                              seed=sc.seed if seed is None else seed,
                                              elastic_single=True, capacity=capacity)))
    fig = run_figures(run)
    write_report(fig, out / name)
    p = fig["policies"]
    print(f"  {name}: {fig['simulated_s'] / 86400:.0f} simulated days in {fig['wall_s']:.1f} s "
          f"wall ({fig['speedup']:,.0f}x), {fig['cpu_s']:.1f} s CPU ({fig['speedup_cpu']:,.0f}x); "
          f"capture {fig.get('capture_ratio') or float('nan'):.3f}; cambist "
          f"${float(p['cambist']['cost_per_mtok']):.4f}/Mtok; "
          f"{_preemption_line(fig['preemptions'])}", flush=True)
    return fig


def _experiment_1(figs: dict[str, dict[str, Any]]) -> None:
    print("\n(1) Pooled vs dedicated utilization at equal SLO")
    print("| scenario | pooled (Cambist) | dedicated, mean per tenant | dedicated, aggregate "
          "| pooled / dedicated | SLO met pooled | SLO met dedicated | TTFT p99 pooled / "
          "dedicated (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in figs.items():
        c, d = f["policies"]["cambist"], f["policies"]["dedicated"]
        per = statistics.fmean(f["dedicated_tenant_utilization"])
        print(f"| {name} | {c['utilization']:.1%} | {per:.1%} | {d['utilization']:.1%} | "
              f"{c['utilization'] / per:.2f}x | {c['slo_attainment']:.2%} | "
              f"{d['slo_attainment']:.2%} | {c['ttft_p99_s']:.2f} / {d['ttft_p99_s']:.2f} |")


def _experiment_2(figs: dict[str, dict[str, Any]]) -> None:
    print("\n(2) Cost per Mtok (output tokens, reasoning included) and capture ratio")
    print("| scenario | dedicated | single supplier | Cambist | oracle | Cambist / single "
          "| Cambist / oracle | capture ratio | single, elastic with hindsight | capture vs it |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in figs.items():
        v = {n: float(p["cost_per_mtok"]) for n, p in f["policies"].items()}
        cap = f.get("capture_ratio")
        el = v.get("single-elastic")
        el_cap = (el - v["cambist"]) / (el - v["oracle"]) if el and el > v["oracle"] else None
        print(f"| {name} | ${v['dedicated']:.4f} | ${v['single-supplier']:.4f} | "
              f"${v['cambist']:.4f} | ${v['oracle']:.4f} | "
              f"{v['cambist'] / v['single-supplier']:.3f} | {v['cambist'] / v['oracle']:.3f} | "
              f"{'n/a' if cap is None else f'{cap:.3f}'} | "
              f"{'n/a' if el is None else f'${el:.4f}'} | "
              f"{'n/a' if el_cap is None else f'{el_cap:.3f}'} |")


def _experiment_3(figs: dict[str, dict[str, Any]]) -> None:
    print("\n(3) Effective vs compute margin as utilization varies")
    print("| scenario | policy | utilization | compute margin | effective margin |")
    print("|---|---|---:|---:|---:|")
    for name, f in figs.items():
        for n in ORDER:
            p = f["policies"][n]
            print(f"| {name} | {n} | {p['utilization']:.1%} | {p['compute_margin']:.1%} | "
                  f"{p['effective_margin']:.1%} |")
    print("\nCambist day by day, binned by that day's utilization (all scenarios):")
    points = [(u, cm, em) for f in figs.values()
              for u, cm, em in zip(f["daily_cambist"]["utilization"],
                                   f["daily_cambist"]["compute_margin"],
                                   f["daily_cambist"]["effective_margin"], strict=True)]
    points.sort()
    print("| utilization (mean of bin) | days | compute margin | effective margin |")
    print("|---:|---:|---:|---:|")
    bins = max(1, min(5, len(points) // 4))
    for b in range(bins):
        chunk = points[b * len(points) // bins:(b + 1) * len(points) // bins]
        if chunk:
            print(f"| {statistics.fmean(p[0] for p in chunk):.1%} | {len(chunk)} | "
                  f"{statistics.fmean(p[1] for p in chunk):.1%} | "
                  f"{statistics.fmean(p[2] for p in chunk):.1%} |")


def main(argv: list[str] | None = None) -> int:
    """Run the experiments and print their tables (Markdown)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None, help="default: each scenario's own")
    ap.add_argument("--scenarios", default=",".join(("steady", "glut", "surge", "agentic")))
    ap.add_argument("--out", type=Path, default=Path("sim-bench"))
    ap.add_argument("--capacity", choices=("policy", "controller"), default="policy",
                    help="who leases the fleet (see 'cambist sim --help')")
    ap.add_argument("--img", type=Path, default=None,
                    help="also save the first scenario's cost chart here")
    args = ap.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in shipped_scenarios()]
    if unknown:
        print(f"unknown scenario {unknown[0]!r}; use some of {', '.join(shipped_scenarios())}",
              file=sys.stderr)
        return 1
    print(f"Simulating {', '.join(names)}: {args.tenants} tenants, {args.days:g} days each, "
          f"capacity: {args.capacity}")
    figs = {n: _run(n, args.days, args.tenants, args.seed, args.out, args.capacity)
            for n in names}
    _experiment_1(figs)
    _experiment_2(figs)
    _experiment_3(figs)
    if args.img is not None:
        args.img.parent.mkdir(parents=True, exist_ok=True)
        plot_cost_per_mtok(figs[names[0]], args.img)
        print(f"\nsaved {args.img}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
