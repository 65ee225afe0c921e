"""The market-maker book in a run's figures and report: P&L and price smoothing.

*Price smoothing* compares the effective price the platform's deployments
paid for compute, hour by hour: what their capacity cost that hour (spot
leases at realized prices, the book's units at their locked term price)
divided by the GPU-hours it held. Tenants pay a fixed price list per token,
so this is the price a deployment's owner would pay for its GPUs and the
cost that list must cover. Its volatility is measured three ways on the
hourly series: the standard deviation of hourly log changes, the highest
hour over the median hour (peak ratio), and the largest rise from a trough
to a later peak (max run-up). With the book, covered hours are at a price
fixed for a day or a week, so the series should move less.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from cambist.sim.book_ledger import unit_gpu_hours
from cambist.sim.figures import dollars
from cambist.sim.run import START, SimRun

__all__ = ["book_figures", "book_lines", "effective_price", "price_path"]

F64 = npt.NDArray[np.float64]


def effective_price(run: SimRun) -> F64:
    """The deployments' $/GPU-hour, hour by hour (NaN where nothing was held)."""
    warm, hours = run.options.warmup_hours, run.demand.minutes // 60
    units = run.driver.fleet.units
    book = run.book
    if book is not None:
        units = [u for u in units if u.lease_id not in book.served]
    gpu_h = unit_gpu_hours(units, START - warm * 3600.0, warm, hours)
    if book is not None:
        gpu_h = gpu_h + book.hourly_gpu_hours
    cost = run.outcomes["cambist"].hourly_cost
    out = np.full(hours, np.nan)
    held = gpu_h > 1e-9
    out[held] = cost[held] / gpu_h[held]
    return out


def price_path(p: F64) -> dict[str, float | None]:
    """Volatility of an hourly price series (NaN hours skipped)."""
    x = p[np.isfinite(p) & (p > 0)]
    if len(x) < 2:
        return {"mean": None, "std_log_change": None, "peak_ratio": None, "max_run_up": None}
    steps = np.diff(np.log(x))
    trough = np.minimum.accumulate(x)
    return {"mean": round(float(x.mean()), 4),
            "std_log_change": round(float(steps.std()), 5),
            "peak_ratio": round(float(x.max() / np.median(x)), 4),
            "max_run_up": round(float((x / trough).max() - 1.0), 4)}


def book_figures(run: SimRun, without: SimRun | None = None) -> dict[str, Any]:
    """The book's P&L, ledger balances and the smoothing figures of ``run``
    (compared with ``without``, the same run without the book, when given)."""
    b = run.book
    assert b is not None, "the run had no market-maker book"
    cfg = run.scenario.book
    smoothing: dict[str, Any] = {"with_book": price_path(effective_price(run))}
    cost: dict[str, Any] = {"with_book": str(dollars(run.outcomes["cambist"].cost))}
    if without is not None:
        smoothing["without_book"] = price_path(effective_price(without))
        cost["without_book"] = str(dollars(without.outcomes["cambist"].cost))
    return {
        "config": {"max_inventory_usd": str(cfg.max_inventory_usd),
                   "max_term_h": cfg.max_term_s / 3600,
                   "min_surge_probability": cfg.min_surge_probability, "cover": cfg.cover,
                   "resale_fill": cfg.resale_fill, "surge_resale_fill": cfg.surge_resale_fill},
        "reservations": b.reservations, "refused": b.refused, "served_leases": len(b.served),
        "reserved_unit_hours": round(b.reserved_unit_hours, 1),
        "own_use_hours": round(b.own_use_hours, 1), "idle_hours": round(b.idle_hours, 1),
        "resold_hours": round(b.resold_hours, 1),
        "pnl": {"reservation_cost": str(dollars(b.reservation_cost)),
                "cost_in_run": str(dollars(b.cost_in_run)),
                "inventory_left": str(dollars(b.inventory_left)),
                "own_use_at_cost": str(dollars(b.own_use_at_cost)),
                "own_use_at_market": str(dollars(b.own_use_at_market)),
                "resale_revenue": str(dollars(b.resale_revenue)),
                "idle_cost": str(dollars(b.idle_cost)),
                "overrun_cost": str(dollars(b.overrun_cost)),
                "net": str(dollars(b.net))},
        "ledger": {a: str(v) for a, v in run.books.balances.items()},
        "deployment_cost": cost,
        "smoothing": smoothing,
    }


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def book_lines(fig: dict[str, Any]) -> list[str]:
    """The report's Markdown section on the book (none when the run had none)."""
    b = fig.get("book")
    if not b:
        return []
    p, c = b["pnl"], b["config"]
    lines = ["", "## Market-maker book", "",
             f"Risk limits: at most ${float(c['max_inventory_usd']):,.0f} committed, terms up "
             f"to {c['max_term_h']:g} h; reserves only when a surge within the term has a "
             f"probability of at least {c['min_surge_probability']:.0%}. "
             f"{b['reservations']} units reserved ({b['reserved_unit_hours']:,.0f} unit-hours), "
             f"{b['served_leases']} deployment leases served from them.", "",
             "| reservation cost (in run) | own use at cost | own use at market | resale "
             "revenue | idle at cost | inventory left | **net P&L** |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| ${float(p['cost_in_run']):,.2f} | ${float(p['own_use_at_cost']):,.2f} | "
             f"${float(p['own_use_at_market']):,.2f} | ${float(p['resale_revenue']):,.2f} | "
             f"${float(p['idle_cost']):,.2f} | ${float(p['inventory_left']):,.2f} | "
             f"**${float(p['net']):,.2f}** |", "",
             "Net P&L = resale revenue + own use valued at the market price - reserved hours "
             "inside the run at cost. Ledger balances: " + ", ".join(
                 f"`{a}` {v}" for a, v in b["ledger"].items()) + ".", "",
             "Effective $/GPU-hour the deployments paid, hour by hour:", "",
             "| | mean $/GPU-h | std of hourly log change | peak / median | max run-up | "
             "deployment cost |", "|---|---:|---:|---:|---:|---:|"]
    for key, name in (("without_book", "without the book"), ("with_book", "with the book")):
        s = b["smoothing"].get(key)
        if s is None:
            continue
        lines.append(f"| {name} | {_f(s['mean'], '.4f')} | {_f(s['std_log_change'], '.4f')} | "
                     f"{_f(s['peak_ratio'], '.3f')} | {_f(s['max_run_up'], '.1%')} | "
                     f"${float(b['deployment_cost'][key]):,.2f} |")
    return lines
