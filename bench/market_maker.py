"""The market-maker book on the surge scenario: P&L and price smoothing.

Runs the same scenario, seed and demand twice, without and with the book
(baselines off: they do not depend on the book), and prints the book's P&L
and the volatility of the effective $/GPU-hour the deployments paid.

    python bench/market_maker.py --days 30 --tenants 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace

from cambist.sim.book_figures import book_figures
from cambist.sim.run import RunOptions, simulate
from cambist.sim.scenario import load_scenario


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="surge")
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--tenants", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    opts = RunOptions(days=args.days, tenants=args.tenants,
                      seed=sc.seed if args.seed is None else args.seed, baselines=False)
    plain = await simulate(replace(sc, book=replace(sc.book, enabled=False)), opts)
    booked = await simulate(replace(sc, book=replace(sc.book, enabled=True)), opts)
    fig = book_figures(booked, plain)
    print(f"{sc.name}: {args.tenants} tenants, {args.days:g} days, seed {opts.seed}; "
          f"wall {plain.wall_s:.0f} s + {booked.wall_s:.0f} s")
    p = fig["pnl"]
    print(f"reservations {fig['reservations']} ({fig['reserved_unit_hours']:,.0f} unit-h), "
          f"served leases {fig['served_leases']}, own use {fig['own_use_hours']:,.0f} h, "
          f"idle {fig['idle_hours']:,.0f} h (resold {fig['resold_hours']:,.0f} h)")
    for k in ("cost_in_run", "own_use_at_cost", "own_use_at_market", "resale_revenue",
              "idle_cost", "overrun_cost", "inventory_left", "net"):
        print(f"  {k:18s} ${float(p[k]):>12,.2f}")
    print(f"ledger {fig['ledger']}; problems {booked.books.problems}")
    print(f"{'':16s} {'mean $/GPU-h':>12s} {'std dlog':>9s} {'peak/med':>9s} "
          f"{'run-up':>8s} {'deploy cost':>12s}")
    for key in ("without_book", "with_book"):
        s = fig["smoothing"][key]
        print(f"{key:16s} {s['mean']:>12.4f} {s['std_log_change']:>9.4f} "
              f"{s['peak_ratio']:>9.3f} {s['max_run_up']:>8.1%} "
              f"${float(fig['deployment_cost'][key]):>11,.2f}")
    for name, run in (("without_book", plain), ("with_book", booked)):
        c = run.outcomes["cambist"]
        print(f"{name}: $/Mtok {c.cost * 1e6 / c.served:.4f}, "
              f"SLO {c.samples.attainment(sc.ttft_slo_ms / 1000):.4f}, "
              f"leases refused {c.detail['leases_refused']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(fig, f, indent=1)


if __name__ == "__main__":
    asyncio.run(main())
