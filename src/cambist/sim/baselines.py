"""What the same demand would cost without Cambist: two conventional baselines.

- **Dedicated**: each tenant alone, on GPUs of one offer sized for its own
  peak (5-minute mean, at the target utilization), for the whole run.
- **Single supplier**: everyone pooled on the one supplier whose cheapest
  placement of the pooled peak costs least at the start (placement by the real
  solver, on that supplier's offers only), held for the whole run.

Both pay each offer's realized price hour by hour from the market tape, and
their traffic is served by the same fluid model as Cambist's
(:func:`cambist.sim.traffic.serve_series`). The single supplier must fit in
what it listed at the start; once rented, units are kept whatever the market
does later. Dedicated tenants each rent in a world of their own (no shared
availability limit), which flatters that baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.placement.problem import Policy, WorkloadDemand
from cambist.placement.solve import solve
from cambist.sim.capacity import ModelShape
from cambist.sim.demand import Demand
from cambist.sim.market import MarketTape
from cambist.sim.traffic import TtftSamples, serve_series

__all__ = ["Outcome", "dedicated", "peak_rate", "single_supplier"]

F64 = npt.NDArray[np.float64]


@dataclass(slots=True)
class Outcome:
    """One policy's result over the measured window."""

    name: str
    cost: float
    """Dollars of leased capacity (converted to Decimal when reported)."""
    served: float
    """Output tokens served."""
    capacity_tokens: float
    """Tokens the ready capacity could have served (throughput x seconds)."""
    samples: TtftSamples
    hourly_cost: F64
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def utilization(self) -> float:
        return self.served / self.capacity_tokens if self.capacity_tokens > 0 else 0.0


def peak_rate(rate_per_min: F64) -> float:
    """Largest 5-minute mean of a per-minute rate series."""
    if len(rate_per_min) < 5:
        return float(rate_per_min.mean()) if len(rate_per_min) else 0.0
    c = np.cumsum(np.concatenate(([0.0], rate_per_min)))
    return float(((c[5:] - c[:-5]) / 5.0).max())


def _hours(minutes: int) -> int:
    return minutes // 60  # demand always spans whole hours


def dedicated(demand: Demand, tape: MarketTape, shapes: dict[str, ModelShape],
              hour0: int, target: float) -> Outcome:
    """Each tenant on its own peak-sized units of its cheapest offer at the start."""
    price, _ = tape.arrays()
    hours = _hours(demand.minutes)
    prices = price[hour0:hour0 + hours]
    start = {o.id: float(prices[0, i]) for i, o in enumerate(tape.offers)}
    samples = TtftSamples()
    cost, served, capacity = 0.0, 0.0, 0.0
    hourly = np.zeros(hours)
    per_tenant: list[float] = []
    out = demand.output.astype(np.float64)
    for i, tenant in enumerate(demand.tenants):
        shape = shapes[tenant.model]
        need = max(peak_rate(out[i] / 60.0) / target, 1e-6)
        best: tuple[float, int, int] | None = None
        for j, o in enumerate(tape.offers):
            unit = shape.unit(o)
            if unit is None:
                continue
            n = max(1, math.ceil(need / unit.tokens_per_s))
            if best is None or n * start[o.id] < best[0]:
                best = (n * start[o.id], j, n)
        if best is None:
            continue
        _, j, n = best
        unit = shape.unit(tape.offers[j])
        assert unit is not None
        cap = np.full(demand.minutes, n * unit.tokens_per_s)
        s = serve_series(out[i], demand.requests[i].astype(np.float64), cap,
                         np.full(demand.minutes, unit.ttft0_s), samples)
        hourly += n * prices[:, j]
        cost += n * float(prices[:, j].sum())
        served += float(s.sum())
        capacity += float(cap.sum()) * 60.0
        per_tenant.append(float(s.sum()) / (float(cap.sum()) * 60.0))
    return Outcome("dedicated", cost, served, capacity, samples, hourly,
                   {"tenant_utilization": per_tenant})


def _supplier_plan(supplier: str, needs: dict[str, float], offers: list[Offer],
                   shapes: dict[str, ModelShape]) -> tuple[float, dict[str, dict[str, int]]] | None:
    """Cheapest placement of every model's peak on one supplier's offers, within
    what it had available at the start (None: it cannot host everyone)."""
    mine = [o for o in offers if o.supplier == supplier]
    total, units = 0.0, {}
    for model, need in needs.items():
        shape = shapes[model]
        usable = [o for o in mine if shape.unit(o) is not None]
        if not usable:
            return None
        wl = WorkloadDemand(model, MODEL_CATALOG[model], need, prompt_tokens=shape.prompt_tokens)
        plan = solve([wl], usable, Policy(perf=shape.perf, solver="heuristic"))
        if not plan.workloads[model].feasible:
            return None
        total += float(plan.total_per_hour)
        units[model] = {a.offer_id: a.units for a in plan.workloads[model].assignments}
        taken = units[model]
        mine = [replace(o, available=o.available - taken.get(o.id, 0)) for o in mine]
    return total, units


def single_supplier(demand: Demand, tape: MarketTape, shapes: dict[str, ModelShape],
                    hour0: int, target: float) -> Outcome:
    """Everyone pooled on the supplier that places the pooled peak cheapest at the start."""
    price, avail = tape.arrays()
    hours = _hours(demand.minutes)
    prices = price[hour0:hour0 + hours]
    start_offers = [replace(o, price_per_gpu_hour=Decimal(repr(float(prices[0, i])
                                                               / o.gpu_count)),
                            available=int(avail[hour0, i]))
                    for i, o in enumerate(tape.offers)]
    out = demand.output.astype(np.float64)
    by_model = demand.by_model()
    needs = {m: peak_rate(out[idx].sum(axis=0) / 60.0) / target for m, idx in by_model.items()}
    best: tuple[float, str, dict[str, dict[str, int]]] | None = None
    for supplier in sorted({o.supplier for o in tape.offers}):
        got = _supplier_plan(supplier, needs, start_offers, shapes)
        if got is not None and (best is None or got[0] < best[0]):
            best = (got[0], supplier, got[1])
    if best is None:
        raise ValueError("no single supplier of the scenario can host the pooled peak of every "
                         "model; add suppliers, raise their capacity_scale or use fewer tenants")
    _, supplier, units = best
    samples = TtftSamples()
    cost, served, capacity = 0.0, 0.0, 0.0
    hourly = np.zeros(hours)
    for model, idx in by_model.items():
        cap_total, ttft_w = 0.0, 0.0
        for oid, n in units[model].items():
            j = tape.index(oid)
            unit = shapes[model].unit(tape.offers[j])
            assert unit is not None
            cap_total += n * unit.tokens_per_s
            ttft_w += n * unit.tokens_per_s * unit.ttft0_s
            hourly += n * prices[:, j]
        cap = np.full(demand.minutes, cap_total)
        s = serve_series(out[idx].sum(axis=0), demand.requests[idx].sum(axis=0).astype(
            np.float64), cap, np.full(demand.minutes, ttft_w / cap_total), samples)
        served += float(s.sum())
        capacity += cap_total * demand.minutes * 60.0
    cost = float(hourly.sum())
    return Outcome("single-supplier", cost, served, capacity, samples, hourly,
                   {"supplier": supplier})
