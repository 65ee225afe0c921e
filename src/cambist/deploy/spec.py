"""What a deployment asks of placement, and the placement that answers it.

A deployment is either sized by the caller (``replicas``) or by demand
(``tokens_per_s``, the sustained output rate to serve). Either way the
placement solver (:func:`cambist.placement.solve`) chooses the offers: in
replica mode each replica must serve at least what one unit of the best
$/Mtok offer serves, so N replicas are N units of serving, not N of the
cheapest GPUs that merely fit. Units already leased enter the solve as
offers of their own (``held:<lease id>``, one unit at the lease's price) and
as the current placement, so re-planning prefers keeping them on ties.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from decimal import Decimal

from cambist.domain.lease import Lease
from cambist.domain.models import ModelSpec
from cambist.domain.offer import Offer
from cambist.perf.model import PerfModel
from cambist.placement import Plan, Policy, WorkloadDemand, rank_for_model, solve

__all__ = ["HELD_PREFIX", "DeploySpec", "eligible_offers", "held_offers", "plan_deployment"]

HELD_PREFIX = "held:"
"""Offer ids standing for units a deployment already leases."""


@dataclass(frozen=True, slots=True)
class DeploySpec:
    """Placement constraints of one deployment (stored as JSON with it).

    ``tokens_per_s``: serve this sustained output rate (replica count follows);
    ``None`` sizes by replicas. ``ttft_ms``: time-to-first-token SLO for
    ``prompt_tokens``. ``regions``: allowed region prefixes (empty: any).
    ``max_supplier_share``: most of the replicas on any one supplier.
    ``spot``: spot offers allowed. ``min_replicas``/``max_replicas``: the
    autoscaler's bounds (``max_replicas`` ``None``: no autoscaling).
    """

    tokens_per_s: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int = 1000
    regions: tuple[str, ...] = ()
    max_supplier_share: float = 1.0
    spot: bool = True
    min_replicas: int = 1
    max_replicas: int | None = None

    def __post_init__(self) -> None:
        if self.tokens_per_s is not None and not (0 < self.tokens_per_s < 1e9):
            raise ValueError("tokens_per_s must be positive")
        if self.ttft_ms is not None and not (0 < self.ttft_ms < 1e7):
            raise ValueError("ttft_ms must be positive")
        if not 0 < self.max_supplier_share <= 1:
            raise ValueError("max_supplier_share must be in (0, 1]")
        if self.max_replicas is not None and not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("autoscaling needs 1 <= min_replicas <= max_replicas")

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas is not None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> DeploySpec:
        """The spec stored as ``text`` (defaults for ``None``: rows before specs)."""
        if not text:
            return cls()
        raw = json.loads(text)
        raw["regions"] = tuple(raw.get("regions") or ())
        return cls(**raw)


def eligible_offers(offers: Iterable[Offer], model: ModelSpec, perf: PerfModel,
                    spec: DeploySpec, max_price_per_mtok: Decimal | None) -> list[Offer]:
    """Offers the deployment may use, cheapest $/Mtok first: the model fits, spot
    only if allowed, under the $/Mtok cap. (Regions, TTFT and the supplier
    share are the solver's constraints, so its reasons can name them.)"""
    pool = [o for o in offers if spec.spot or not o.spot]
    return [q.offer for q in rank_for_model(pool, model, perf,
                                            max_cost_per_mtok=max_price_per_mtok)]


def held_offers(leases: Sequence[Lease], book: dict[str, Offer], now: float) -> list[Offer]:
    """One single-unit offer per held lease, priced as leased."""
    out = []
    for lease in leases:
        if lease.sku is None:
            continue
        base = book.get(lease.offer_id) or Offer(
            id="", supplier=lease.supplier, gpu_name=lease.gpu_name, sku=lease.sku,
            gpu_count=lease.gpu_count, vram_gib=0.0, region=lease.region, jurisdiction="",
            price_per_gpu_hour=Decimal(0), spot=lease.spot, available=1, expires_at=0.0)
        out.append(replace(base, id=f"{HELD_PREFIX}{lease.id}", supplier=lease.supplier,
                           sku=lease.sku, gpu_count=lease.gpu_count, region=lease.region,
                           price_per_gpu_hour=lease.price_per_hour / lease.gpu_count,
                           spot=lease.spot, available=1, expires_at=now + 86_400.0))
    return out


def _reference_tok_s(offers: Sequence[Offer], model: ModelSpec, perf: PerfModel,
                     spec: DeploySpec) -> float:
    """What one unit of the best $/Mtok offer in the allowed regions serves (replica
    mode's unit of demand)."""
    for o in offers:
        if spec.regions and not any(o.region.startswith(p) for p in spec.regions):
            continue
        if o.sku is not None:
            est = perf.estimate(model, o.sku, o.gpu_count)
            if est.fits:
                return est.throughput_tok_s
    return 0.0


def plan_deployment(name: str, model: ModelSpec, spec: DeploySpec, replicas: int,
                    offers: Sequence[Offer], held: Sequence[Offer], perf: PerfModel,
                    *, solver: str = "auto", tokens_per_s: float | None = None) -> Plan:
    """Place deployment ``name`` on ``held`` units plus market ``offers`` (both already
    filtered by :func:`eligible_offers`); ``replicas`` sizes it without ``tokens_per_s``
    (the argument: an autoscaled deployment's capacity; else the spec's)."""
    pool = list(held) + list(offers)
    by_replicas = tokens_per_s is None and (spec.tokens_per_s is None or spec.autoscaled)
    if tokens_per_s is not None:
        tok_s, floor = tokens_per_s, spec.min_replicas
    elif not by_replicas:
        assert spec.tokens_per_s is not None
        tok_s, floor = spec.tokens_per_s, 1
    else:
        ref = (_reference_tok_s(offers, model, perf, spec)
               or _reference_tok_s(held, model, perf, spec))
        tok_s, floor = replicas * ref * (1 - 1e-9), replicas
    demand = WorkloadDemand(
        name=name, model=model, tokens_per_s=tok_s, ttft_ms=spec.ttft_ms,
        prompt_tokens=spec.prompt_tokens, regions=spec.regions,
        min_replicas=max(floor, math.ceil(1 / spec.max_supplier_share - 1e-9)
                         if spec.max_supplier_share < 1 else floor),
        max_supplier_share=spec.max_supplier_share)
    policy = Policy(solver=solver, perf=perf,  # type: ignore[arg-type]
                    current={name: {o.id: 1 for o in held}}, time_limit_s=2.0)
    plan = solve([demand], pool, policy)
    if by_replicas and tok_s > 0 and plan.workloads[name].replicas > replicas:
        # Replica mode asks for exactly N units: when N best-value units' throughput
        # cannot be had in N (scarcity, supplier share), take the cheapest N that
        # meet every other constraint instead.
        plan = solve([replace(demand, tokens_per_s=0.0)], pool, policy)
    return plan
