"""Write a run's report: ``report.md``, PNG plots and ``figures.json`` in a folder.

Plots use matplotlib's Agg backend (no display needed). Every number in the
Markdown comes from the same figures dictionary that is written as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cambist.sim.book_figures import book_lines

__all__ = ["plot_cost_per_mtok", "write_report"]

_ORDER = ("dedicated", "single-supplier", "single-elastic", "cambist", "oracle")
_COLORS = {"dedicated": "#9e9e9e", "single-supplier": "#e07b39", "single-elastic": "#d69e2e",
           "cambist": "#2b6cb0", "oracle": "#38a169"}


def _names(fig: dict[str, Any]) -> list[str]:
    return [n for n in _ORDER if n in fig["policies"]]


def _save(f: Any, path: Path) -> None:
    """Lay out, write and close one figure."""
    f.tight_layout()
    f.savefig(path)
    plt.close(f)


def plot_cost_per_mtok(fig: dict[str, Any], path: Path) -> None:
    """Bar chart of $/Mtok per policy, with the capture ratio in the title."""
    names = _names(fig)
    values = [float(fig["policies"][n]["cost_per_mtok"] or 0) for n in names]
    f, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    bars = ax.bar(names, values, color=[_COLORS[n] for n in names])
    for b, v in zip(bars, values, strict=True):
        ax.annotate(f"${v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=9)
    cap = fig.get("capture_ratio")
    title = f"{fig['scenario']}: cost per million output tokens"
    if cap is not None:
        title += f" (capture ratio {cap:.2f})"
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("$ / Mtok")
    ax.spines[["top", "right"]].set_visible(False)
    _save(f, path)


def _plot_hourly(fig: dict[str, Any], path: Path) -> None:
    f, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    for n in _names(fig):
        ax.plot(fig["hourly_cost"][n], label=n, color=_COLORS[n], lw=1)
    ax.set_xlabel("hour")
    ax.set_ylabel("$ per hour")
    ax.set_title(f"{fig['scenario']}: compute spend per hour", fontsize=10)
    ax.legend(fontsize=8)
    _save(f, path)


def _plot_utilization(fig: dict[str, Any], path: Path) -> None:
    f, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ded = fig.get("dedicated_tenant_utilization", [])
    if ded:
        ax.hist(ded, bins=20, range=(0, 1), color=_COLORS["dedicated"],
                label="dedicated, per tenant")
    pooled = fig["policies"]["cambist"]["utilization"]
    ax.axvline(pooled, color=_COLORS["cambist"], lw=2, label=f"Cambist pool ({pooled:.0%})")
    ax.set_xlabel("utilization (served / capacity)")
    ax.set_ylabel("tenants")
    ax.set_title(f"{fig['scenario']}: pooled vs dedicated utilization", fontsize=10)
    ax.legend(fontsize=8)
    _save(f, path)


def _plot_margins(fig: dict[str, Any], path: Path) -> None:
    d = fig["daily_cambist"]
    f, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    ax.scatter(d["utilization"], d["compute_margin"], s=12, label="compute margin (daily)",
               color="#805ad5")
    ax.scatter(d["utilization"], d["effective_margin"], s=12, label="effective margin (daily)",
               color=_COLORS["cambist"])
    for n in _names(fig):
        p = fig["policies"][n]
        if p["effective_margin"] is not None:
            ax.scatter([p["utilization"]], [p["effective_margin"]], marker="D", s=40,
                       color=_COLORS[n], label=f"{n} (run)")
    ax.set_xlabel("utilization")
    ax.set_ylabel("margin")
    ax.set_title(f"{fig['scenario']}: effective vs compute margin", fontsize=10)
    ax.legend(fontsize=7)
    _save(f, path)


def _table(fig: dict[str, Any]) -> list[str]:
    lines = ["| policy | cost | $/Mtok | utilization | TTFT p99 (s) | SLO met | "
             "compute margin | effective margin |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in _names(fig):
        p = fig["policies"][n]

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.1%}"

        lines.append(f"| {n} | ${float(p['cost']):,.2f} | ${float(p['cost_per_mtok']):.4f} | "
                     f"{p['utilization']:.1%} | {p['ttft_p99_s']:.2f} | "
                     f"{p['slo_attainment']:.2%} | {pct(p['compute_margin'])} | "
                     f"{pct(p['effective_margin'])} |")
    return lines


def _preemption_lines(fig: dict[str, Any]) -> list[str]:
    pre = fig.get("preemptions")
    if not pre:
        return []
    t = pre["time_to_restore_s"]
    lines = ["", "## Preemptions", ""]
    if not pre["count"]:
        lines.append(f"No unit was preempted (rate {pre['preemption_per_hour']:.2%} per "
                     "unit-hour, before per-supplier overrides).")
        return lines
    lines.append(
        f"{pre['count']} leased units were taken back by their supplier (scenario rate "
        f"{pre['preemption_per_hour']:.2%} per unit-hour, before per-supplier overrides); "
        f"{pre['replaced']} were replaced at once by the capacity policy (already being "
        f"retired, so not replaced: {pre['of_retiring_units']}; capacity not yet restored "
        f"when the run ended: {pre['unrestored_at_end']}).")
    if t["p50"] is not None:
        lines += ["", f"Time to restore full capacity: **p50 {t['p50']:.0f} s, p90 "
                  f"{t['p90']:.0f} s, max {t['max']:.0f} s** (mean {t['mean']:.0f} s), from "
                  "the loss until the units serving the model add up to its planned capacity "
                  "before the loss (or the policy's planned capacity, if lower), on the "
                  "minute grid; it includes up to a minute to notice the loss and the "
                  "replacement's spin-up."]
    return lines


def write_report(fig: dict[str, Any], out: Path) -> list[Path]:
    """Write ``report.md``, ``figures.json`` and the PNGs into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = {"cost-per-mtok.png": plot_cost_per_mtok, "hourly-cost.png": _plot_hourly,
            "utilization.png": _plot_utilization, "margins.png": _plot_margins}
    written = []
    for name, draw in pngs.items():
        draw(fig, out / name)
        written.append(out / name)
    (out / "figures.json").write_text(json.dumps(fig, indent=1, default=str), encoding="utf-8")
    written.append(out / "figures.json")
    cap = fig.get("capture_ratio")
    md = [f"# Simulation: {fig['scenario']} (scenario version {fig['scenario_version']})", "",
          f"{fig['tenants']} tenants, {fig['days']} simulated days (after a warm-up day), "
          f"seed {fig['seed']}, {fig['traffic']} traffic. Wall time {fig['wall_s']:.1f} s: "
          f"**{fig['speedup']:,.0f}x faster than real time**. TTFT SLO "
          f"{fig['ttft_slo_ms']:.0f} ms. Revenue ${float(fig['revenue']):,.2f}.", ""]
    md += _table(fig)
    if cap is not None:
        md += ["", f"**Capture ratio: {cap:.3f}** = (single-supplier cost - Cambist cost) / "
               "(single-supplier cost - oracle cost)."]
    md += _preemption_lines(fig)
    md += book_lines(fig)
    md += ["", "![cost per Mtok](cost-per-mtok.png)", "", "![hourly cost](hourly-cost.png)", "",
           "![utilization](utilization.png)", "", "![margins](margins.png)", "",
           "Policies: *dedicated* = each tenant alone on one offer sized for its own peak; "
           "*single-supplier* = everyone pooled on the supplier that hosts the pooled peak "
           "cheapest at the start, held all run; *single-elastic* (when run) = that supplier "
           "only, placed hour by hour with hindsight; *cambist* = the real placement, routing and "
           "metering code with the forecast-aware capacity policy; *oracle* = exact hourly "
           "placement knowing realized prices and demand (HiGHS). Cost per Mtok counts output "
           "tokens, reasoning included.", ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    written.append(out / "report.md")
    return written
