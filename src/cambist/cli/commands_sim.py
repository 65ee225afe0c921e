"""``cambist sim``: run a scenario on the virtual clock and write its report.

Unlike the other commands this one needs no running exchange: the simulator
assembles the real components in process (see :mod:`cambist.sim`).

The solver, the plotting library and the simulator itself are imported when
the command runs, not when the CLI starts: they would add about a second to
every other ``cambist`` command.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cambist.cli.common import console, fail
from cambist.cli.render import table
from cambist.domain.errors import CambistError, NoCapacity
from cambist.sim.scenario import ScenarioError, load_scenario, shipped_scenarios

__all__ = ["register"]

_COLUMNS = ("policy", "cost", "$/Mtok", "util", "p99 s", "SLO", "margin", "eff. margin")


class Capacity(StrEnum):
    """Who leases the simulated fleet."""

    policy = "policy"
    controller = "controller"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def register(app: typer.Typer) -> None:
    """Add ``cambist sim`` to ``app``."""

    @app.command("sim")
    def sim(
        scenario: Annotated[str, typer.Argument(
            help=f"A shipped scenario ({', '.join(shipped_scenarios())}) or a scenario YAML "
                 "file.")],
        days: Annotated[float | None, typer.Option(
            help="Simulated days (default: the scenario's).")] = None,
        tenants: Annotated[int | None, typer.Option(
            help="Number of tenants (default: the scenario's).")] = None,
        seed: Annotated[int | None, typer.Option(
            help="Random seed of demand and market (default: the scenario's).")] = None,
        out: Annotated[Path, typer.Option(
            help="Folder for report.md, the PNG plots and figures.json.")] = Path("sim-out"),
        per_request: Annotated[bool, typer.Option(
            "--per-request", help="Route every request singly (slow) instead of per "
                                  "tenant-minute cohort.")] = False,
        book: Annotated[bool, typer.Option(
            "--book", help="Run the market-maker book (reserved terms ahead of forecast "
                           "surges), and the same run without it to compare.")] = False,
        capacity: Annotated[Capacity, typer.Option(
            help="Who leases the fleet: the real deploy controller with its autoscaler "
                 "and re-placement, or the simulator's own capacity policy.")] = \
            Capacity.controller,
    ) -> None:
        """Simulate SCENARIO faster than real time; compare Cambist with the
        dedicated, single-supplier and hindsight-oracle baselines."""
        from cambist.sim.figures import run_figures
        from cambist.sim.report import write_report
        from cambist.sim.run import RunOptions, simulate

        try:
            sc = load_scenario(scenario)
        except ScenarioError as exc:
            raise fail(str(exc)) from None
        n_days = sc.days if days is None else days
        n_tenants = sc.tenants if tenants is None else tenants
        if not 0.04 <= n_days <= 365:
            raise fail("--days must be between 0.04 (one hour) and 365")
        if not 1 <= n_tenants <= 10_000:
            raise fail("--tenants must be between 1 and 10000")
        if out.exists() and not out.is_dir():
            raise fail(f"--out {out} is a file; give a folder path")
        options = RunOptions(days=n_days, tenants=n_tenants,
                             seed=sc.seed if seed is None else seed, per_request=per_request,
                             capacity=capacity.value)
        with console.status(f"simulating {sc.name}: {n_tenants} tenants, {n_days:g} days"):
            try:
                plain = None
                if book:  # the same run without the book, for the smoothing comparison
                    plain = asyncio.run(simulate(
                        replace(sc, book=replace(sc.book, enabled=False)),
                        replace(options, baselines=False)))
                    sc = replace(sc, book=replace(sc.book, enabled=True))
                run = asyncio.run(simulate(sc, options))
            except (ValueError, CambistError) as exc:  # the scenario cannot be run as written
                raise fail(f"{exc}; the scenario's market cannot run this mix as written"
                           if isinstance(exc, NoCapacity) else str(exc)) from None
            fig = run_figures(run)
            if run.book is not None:
                from cambist.sim.book_figures import book_figures
                fig["book"] = book_figures(run, plain)
            try:
                write_report(fig, out)
            except OSError as exc:
                raise fail(f"cannot write the report to {out} ({exc.strerror}); "
                           "choose a writable --out folder") from None
        rows = []
        for name in ("dedicated", "single-supplier", "cambist", "oracle"):
            p = fig["policies"].get(name)
            if p is None:
                continue
            rows.append([name, f"${float(p['cost']):,.0f}", f"{float(p['cost_per_mtok']):.4f}",
                         _pct(p["utilization"]), f"{p['ttft_p99_s']:.2f}",
                         f"{p['slo_attainment'] * 100:.2f}%", _pct(p["compute_margin"]),
                         _pct(p["effective_margin"])])
        t = table(f"{sc.name}: {n_tenants} tenants, {n_days:g} days", _COLUMNS, rows,
                  justify_right=_COLUMNS[1:])
        t.columns[0].no_wrap = True  # a narrow terminal squeezes the other columns first
        console.print(t)
        console.print("p99 s: TTFT p99; SLO: requests within the TTFT SLO; margin: compute "
                      "margin; eff. margin: effective margin (idle capacity charged)")
        cap = fig.get("capture_ratio")
        if cap is not None:
            console.print(f"capture ratio {cap:.3f}")
        pre, ttr = fig["preemptions"], fig["preemptions"]["time_to_restore_s"]
        console.print(f"preemptions {pre['count']}, {pre['replaced']} replaced" + (
            f"; time to restore capacity p50 {ttr['p50']:.0f} s, p90 {ttr['p90']:.0f} s, "
            f"max {ttr['max']:.0f} s" if ttr["p50"] is not None else ""))
        if "book" in fig:
            bp, sm = fig["book"]["pnl"], fig["book"]["smoothing"]
            console.print(f"book: {fig['book']['reservations']} reservations, net P&L "
                          f"${float(bp['net']):,.2f} (resale ${float(bp['resale_revenue']):,.2f}"
                          f", own use at market ${float(bp['own_use_at_market']):,.2f}, cost "
                          f"${float(bp['cost_in_run']):,.2f}); $/GPU-h std of hourly log change "
                          + " vs ".join(f"{sm[k]['std_log_change']} {k.replace('_', ' ')}"
                                        for k in ("without_book", "with_book") if k in sm))
        console.print(f"simulated {run.simulated_s / 86400:.1f} days in {run.wall_s:.1f} s "
                      f"({run.speedup:,.0f}x real time); report in {out}/report.md")
