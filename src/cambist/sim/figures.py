"""The figures of a run: per-policy economics, the capture ratio, daily series.

Money is summed in floats inside the simulation and becomes ``Decimal`` here,
at the reporting boundary (rounded to the micro-dollar). Margins use the
analytics layer's definitions and code (:mod:`cambist.analytics.margins`):
``compute_margin`` charges only the busy share of capacity (what the metered
tokens cost), ``effective_margin`` charges every leased hour, idle included.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np

from cambist.analytics.margins import allocate_idle, margin_total
from cambist.analytics.rows import UsageRow
from cambist.domain.money import to_micros
from cambist.sim.baselines import Outcome
from cambist.sim.run import START, SimRun

__all__ = ["capture_ratio", "dollars", "run_figures"]

_MICRO = Decimal("0.000001")


def dollars(x: float | Decimal) -> Decimal:
    """A float amount as exact dollars, rounded once to the micro-dollar."""
    d = x if isinstance(x, Decimal) else Decimal(repr(float(x)))
    return Decimal(to_micros(d)) * _MICRO


def capture_ratio(single: Decimal, cambist: Decimal, oracle: Decimal) -> float | None:
    """(single - cambist) / (single - oracle): the share of the hindsight saving captured."""
    gap = single - oracle
    return float((single - cambist) / gap) if gap > 0 else None


def _margins(run: SimRun, outcome: Outcome) -> tuple[float | None, float | None]:
    """(compute margin, effective margin) of a policy via the analytics code."""
    d = run.demand
    rows = []
    busy_total = outcome.cost * outcome.utilization
    metered: dict[str, Decimal] = {}
    if outcome.name == "cambist":
        for model, hour, _tokens, cost in run.driver.metered:
            if hour >= run.options.warmup_hours:
                metered[model] = metered.get(model, Decimal(0)) + cost
    out_all = float(d.output.astype(np.float64).sum())
    for model, idx in d.by_model().items():
        out = float(d.output[idx].astype(np.float64).sum())
        busy = metered.get(model) if outcome.name == "cambist" else \
            dollars(busy_total * out / out_all if out_all else 0.0)
        rows.append(UsageRow(
            tenant_id=model, model=model, endpoint_id=None, supplier=None,
            prompt_tokens=round(float(d.prompt[idx].astype(np.float64).sum())),
            completion_tokens=round(out),
            reasoning_tokens=round(float(d.reasoning[idx].astype(np.float64).sum())),
            price=run.revenue[model], compute_cost=busy or Decimal(0), created_at=0.0))
    lease = dollars(outcome.cost)
    idle = lease - sum((r.compute_cost for r in rows), Decimal(0))
    total = margin_total(rows, allocate_idle(rows, idle))
    cm, em = total.compute_margin, total.effective_margin
    return (float(cm) if cm is not None else None, float(em) if em is not None else None)


def _daily(run: SimRun) -> dict[str, list[float]]:
    """Cambist day by day: utilization, compute and effective margin."""
    c = run.outcomes["cambist"]
    warm = run.options.warmup_hours
    days = run.demand.minutes // 1440
    util, cm, em = [], [], []
    served = np.sum([s[warm * 60:] for s in run.driver.served.values()], axis=0)
    cap = np.sum([x[warm * 60:] for x in run.driver.capacity.values()], axis=0)
    metered = np.zeros(days)
    for _m, hour, _t, cost in run.driver.metered:
        day = (hour - warm) // 24
        if 0 <= day < days:
            metered[day] += float(cost)
    for day in range(days):
        lo, hi = day * 1440, (day + 1) * 1440
        rev = 0.0
        for model, idx in run.demand.by_model().items():
            p_in, p_out = run.scenario.prices[model]
            rev += (float(p_in) * float(run.demand.prompt[idx, lo:hi].sum())
                    + float(p_out) * float(run.demand.output[idx, lo:hi].sum())) / 1e6
        lease = float(c.hourly_cost[day * 24:(day + 1) * 24].sum())
        capacity = float(cap[lo:hi].sum()) * 60.0
        util.append(float(served[lo:hi].sum()) / capacity if capacity else 0.0)
        cm.append((rev - metered[day]) / rev if rev else 0.0)
        em.append((rev - lease) / rev if rev else 0.0)
    return {"utilization": util, "compute_margin": cm, "effective_margin": em}


def _preemptions(run: SimRun) -> dict[str, Any]:
    """Units lost to preemption in the measured window and the time to restore
    capacity after each (over losses of planned units restored before the end)."""
    recs = [p for p in run.driver.fleet.preemptions if p.lost_at >= START]
    planned = [p for p in recs if p.planned]
    ttr = np.array([p.restore_s for p in planned if p.restore_s is not None])
    by_supplier: dict[str, int] = {}
    for p in recs:
        by_supplier[p.supplier] = by_supplier.get(p.supplier, 0) + 1

    def q(x: float) -> float | None:
        return round(float(np.quantile(ttr, x)), 1) if len(ttr) else None

    return {
        "preemption_per_hour": run.scenario.market.preemption_per_hour,
        "count": len(recs), "by_supplier": dict(sorted(by_supplier.items())),
        "of_retiring_units": len(recs) - len(planned),
        "replaced": sum(1 for p in planned if p.replaced_by),
        "unrestored_at_end": sum(1 for p in planned if p.restored_at is None),
        "time_to_restore_s": {"p50": q(0.5), "p90": q(0.9), "max": q(1.0),
                              "mean": round(float(ttr.mean()), 1) if len(ttr) else None},
    }


def run_figures(run: SimRun) -> dict[str, Any]:
    """Every figure of ``run`` as JSON-ready data (money as strings)."""
    revenue = sum(run.revenue.values(), Decimal(0))
    slo_s = run.scenario.ttft_slo_ms / 1000.0
    policies: dict[str, dict[str, Any]] = {}
    for name, o in run.outcomes.items():
        cost = dollars(o.cost)
        cm, em = _margins(run, o)
        policies[name] = {
            "cost": str(cost),
            "cost_per_mtok": str(dollars(o.cost * 1e6 / o.served)) if o.served else None,
            "output_tokens": round(o.served),
            "utilization": round(o.utilization, 4),
            "ttft_p99_s": round(o.samples.quantile(0.99), 3),
            "slo_attainment": round(o.samples.attainment(slo_s), 5),
            "compute_margin": None if cm is None else round(cm, 4),
            "effective_margin": None if em is None else round(em, 4),
            "detail": o.detail,
        }
    out: dict[str, Any] = {
        "scenario": run.scenario.name, "scenario_version": run.scenario.version,
        "days": run.options.days, "tenants": run.options.tenants, "seed": run.options.seed,
        "traffic": "per-request" if run.options.per_request else "cohort",
        "wall_s": round(run.wall_s, 2), "simulated_s": run.simulated_s,
        "speedup": round(run.speedup, 1), "cpu_s": round(run.cpu_s, 2),
        "speedup_cpu": round(run.simulated_s / run.cpu_s, 1) if run.cpu_s > 0 else None,
        "timings_s": {k: round(v, 2) for k, v in
                                                        run.timings.items()},
        "revenue": str(dollars(revenue)), "ttft_slo_ms": run.scenario.ttft_slo_ms,
        "ledger": {"revenue": str(run.books.revenue), "compute_cost": str(run.books.compute_cost),
                   "tenant_credit": str(run.books.tenant_credit), "entries": run.books.entries,
                   "problems": run.books.problems},
        "policies": policies,
        "hourly_cost": {n: [round(float(x), 4) for x in o.hourly_cost]
                        for n, o in run.outcomes.items()},
        "daily_cambist": _daily(run),
        "preemptions": _preemptions(run),
    }
    if {"single-supplier", "oracle"} <= run.outcomes.keys():
        out["capture_ratio"] = capture_ratio(
            dollars(run.outcomes["single-supplier"].cost), dollars(run.outcomes["cambist"].cost),
            dollars(run.outcomes["oracle"].cost))
        ded = run.outcomes["dedicated"].detail.get("tenant_utilization", [])
        assert isinstance(ded, list)
        out["dedicated_tenant_utilization"] = [round(float(u), 4) for u in ded]
    return out
