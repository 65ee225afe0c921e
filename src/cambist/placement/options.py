"""The cheapest ways to serve a model now: one row per offer, sized for a demand.

For every offer that can hold the model (and meets the TTFT SLO and region),
how many replicas the demanded output rate needs, what they cost per hour
and per million tokens, and the spare capacity left (headroom). Offers
without the units to host those replicas are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from cambist.domain.models import ModelSpec
from cambist.domain.offer import Offer
from cambist.perf.model import PerfModel
from cambist.placement.rank import quote

__all__ = ["ServingOption", "serving_options"]


@dataclass(frozen=True, slots=True)
class ServingOption:
    """``replicas`` units of ``offer`` serving the model."""

    offer: Offer
    replicas: int
    tokens_per_s: float
    """Output tokens/s of one replica at full batch."""
    ttft_ms: float
    cost_per_mtok: Decimal
    headroom: float | None
    """Capacity over demand, minus one (``None`` without a demand)."""

    @property
    def cost_per_hour(self) -> Decimal:
        return self.offer.price_per_hour * self.replicas


def serving_options(offers: Iterable[Offer], model: ModelSpec, perf: PerfModel, *,
                    tokens_per_s: float | None = None, ttft_ms: float | None = None,
                    region: str | None = None, prompt_tokens: int = 1000) \
        -> list[ServingOption]:
    """Options cheapest per hour for the demand first (per $/Mtok without one)."""
    out = []
    for o in offers:
        if region and not o.region.startswith(region):
            continue
        q = quote(o, model, perf)
        if q.cost_per_mtok is None or q.estimate is None:
            continue
        est = q.estimate
        ttft = est.ttft_s(prompt_tokens) * 1000.0
        if ttft_ms is not None and ttft > ttft_ms:
            continue
        need = max(1, math.ceil(tokens_per_s / est.throughput_tok_s - 1e-9)) \
            if tokens_per_s else 1
        if need > o.available:
            continue
        headroom = need * est.throughput_tok_s / tokens_per_s - 1 if tokens_per_s else None
        out.append(ServingOption(o, need, est.throughput_tok_s, ttft, q.cost_per_mtok,
                                 headroom))
    out.sort(key=lambda s: (s.cost_per_hour if tokens_per_s else s.cost_per_mtok,
                            s.cost_per_mtok, s.offer.id))
    return out
