"""Capacity arithmetic of an autoscaled deployment: what to lease for a deficit,
what to release from a surplus.

An autoscaled deployment is sized in output tokens/s, not in replicas: its
units differ (one L40S next to eight H100s), so a replica count says little
about what it serves or costs. Both decisions are made per token:

* **A deficit** is placed over a short list: the few cheapest $/Mtok offers
  with free units that fit the model, its regions, spot rule and TTFT SLO
  (:func:`shortlist`), solved by the placement heuristic (:func:`cover`).
  Dearer offers cannot enter the cheapest cover while cheaper units are free,
  and a short list keeps each decision to about a millisecond; the full
  re-placement stays periodic (:mod:`cambist.deploy.placing`).
* **A surplus** is released dearest $/Mtok first (:func:`surplus`), only units
  past their billing minimum (an earlier release saves nothing: the minimum is
  paid anyway), only while what stays still covers the level to keep; at
  equal $/Mtok healthy units go before still-provisioning ones and older
  before newer (the newest was the latest to be needed, and its spin-up is
  already paid), so a provisioning unit goes only when no healthy one as dear
  or dearer could go instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from cambist.deploy.spec import DeploySpec
from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import ModelSpec
from cambist.domain.offer import Offer
from cambist.perf.model import PerfEstimate, PerfModel
from cambist.placement import Policy, WorkloadDemand, solve

__all__ = ["SHORTLIST", "HeldUnit", "UnitQuote", "cover", "estimate", "shortlist", "surplus"]

SHORTLIST = 16
"""Offers a deficit is placed over (the simulator's capacity policy uses 16 too)."""


@dataclass(frozen=True, slots=True)
class HeldUnit:
    """One live replica's unit, as sizing sees it."""

    id: str
    tok_s: float
    """Output tokens/s it serves at full batch."""
    price_per_hour: Decimal
    age_s: float
    """Seconds since its billing began."""
    billing_minimum_s: float
    serving: bool
    """Healthy and routed (``False``: still leasing, provisioning or launching)."""

    @property
    def cost_per_mtok(self) -> Decimal:
        """$ per million output tokens at full batch."""
        if self.tok_s <= 0:
            return Decimal("Infinity")
        return self.price_per_hour * Decimal(1_000_000) / Decimal(repr(self.tok_s * 3600.0))


@dataclass(frozen=True, slots=True)
class UnitQuote:
    """One unit of an offer priced for a model."""

    offer: Offer
    tok_s: float
    cost_per_mtok: Decimal


def surplus(units: Sequence[HeldUnit], keep_tok_s: float, *, min_units: int = 1) -> list[str]:
    """Ids of units to release so that what stays still serves ``keep_tok_s``
    and counts at least ``min_units`` (see the module docstring for the order)."""
    spare = sum(u.tok_s for u in units) - keep_tok_s
    left = len(units)
    free = [u for u in units if u.age_s >= u.billing_minimum_s]
    # Dearest per token first; at equal cost serving units before provisioning
    # ones and older before newer (the newest was the latest to be needed).
    free.sort(key=lambda u: (-u.cost_per_mtok, not u.serving, -u.age_s, u.id))
    out: list[str] = []
    for u in free:
        if left <= min_units or spare <= 0:
            break
        if u.tok_s > spare + 1e-9:
            continue
        out.append(u.id)
        spare -= u.tok_s
        left -= 1
    return out


def estimate(perf: PerfModel, model: ModelSpec, sku: str, gpu_count: int,
             cache: dict[tuple[str, str, int], PerfEstimate | None]) -> PerfEstimate | None:
    """The perf estimate of ``gpu_count`` x ``sku`` for ``model`` (``None``:
    unquotable), memoized in ``cache`` (the market lists many offers of the same
    few GPU shapes)."""
    key = (model.name, sku, gpu_count)
    if key not in cache:
        try:
            cache[key] = perf.estimate(model, sku, gpu_count)
        except UnquotableOffer:
            cache[key] = None
    return cache[key]


def shortlist(offers: Iterable[Offer], model: ModelSpec, perf: PerfModel, spec: DeploySpec,
              max_price_per_mtok: Decimal | None,
              cache: dict[tuple[str, str, int], PerfEstimate | None],
              n: int = SHORTLIST) -> list[UnitQuote]:
    """The ``n`` cheapest $/Mtok offers with free units the deployment may use:
    the model fits, the region and spot rules and the TTFT SLO hold, under the
    $/Mtok cap."""
    out = []
    for o in offers:
        if o.available <= 0 or (o.spot and not spec.spot):
            continue
        if spec.regions and not any(o.region.startswith(p) for p in spec.regions):
            continue
        est = estimate(perf, model, o.sku, o.gpu_count, cache) if o.sku is not None else None
        if est is None or not est.fits or est.throughput_tok_s <= 0:
            continue
        if spec.ttft_ms is not None and est.ttft_s(spec.prompt_tokens) * 1000.0 > spec.ttft_ms:
            continue
        per_mtok = est.cost_per_mtok(o.price_per_hour)
        if max_price_per_mtok is not None and per_mtok > max_price_per_mtok:
            continue
        out.append(UnitQuote(o, est.throughput_tok_s, per_mtok))
    out.sort(key=lambda q: (q.cost_per_mtok, q.offer.price_per_hour, q.offer.id))
    return out[:n]


def cover(name: str, model: ModelSpec, spec: DeploySpec, deficit_tok_s: float,
          quotes: Sequence[UnitQuote], perf: PerfModel) -> list[Offer]:
    """The units (one offer per unit) that serve ``deficit_tok_s`` cheapest, from
    ``quotes`` (the placement heuristic; empty when nothing can)."""
    if deficit_tok_s <= 0 or not quotes:
        return []
    demand = WorkloadDemand(name=name, model=model, tokens_per_s=deficit_tok_s,
                            ttft_ms=spec.ttft_ms, prompt_tokens=spec.prompt_tokens,
                            regions=spec.regions)
    plan = solve([demand], [q.offer for q in quotes], Policy(solver="heuristic", perf=perf))
    wp = plan.workloads[name]
    if not wp.feasible:
        return []
    by_id = {q.offer.id: q.offer for q in quotes}
    return [by_id[a.offer_id] for a in wp.assignments for _ in range(a.units)]
