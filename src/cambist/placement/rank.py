"""Ranking offers for a model by $/Mtok.

A GPU-hour is only cheap if it serves many tokens, so offers are compared by
what a million output tokens cost on them at full batch (the performance
model's throughput), not by their hourly price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import ModelSpec
from cambist.domain.offer import Offer
from cambist.perf.model import PerfEstimate, PerfModel

__all__ = ["Quote", "quote", "rank_for_model"]


@dataclass(frozen=True, slots=True)
class Quote:
    """An offer priced for a model: ``cost_per_mtok`` is ``None`` when the model
    does not fit or the GPU cannot be quoted (``reason`` says which)."""

    offer: Offer
    estimate: PerfEstimate | None
    cost_per_mtok: Decimal | None
    reason: str = ""

    @property
    def feasible(self) -> bool:
        return self.cost_per_mtok is not None


def quote(offer: Offer, model: ModelSpec, perf: PerfModel) -> Quote:
    """Price one offer for ``model`` in $ per million output tokens."""
    if offer.sku is None:
        return Quote(offer, None, None, offer.sku_note or f"GPU {offer.gpu_name!r} is not mapped")
    try:
        est = perf.estimate(model, offer.sku, offer.gpu_count)
    except UnquotableOffer as exc:
        return Quote(offer, None, None, exc.message)
    if not est.fits:
        return Quote(offer, est, None, est.reason)
    return Quote(offer, est, est.cost_per_mtok(offer.price_per_hour))


def rank_for_model(
    offers: Iterable[Offer],
    model: ModelSpec,
    perf: PerfModel,
    *,
    max_cost_per_mtok: Decimal | None = None,
) -> list[Quote]:
    """Feasible quotes, cheapest $/Mtok first (ties: cheaper hour, then id)."""
    quotes = [q for q in (quote(o, model, perf) for o in offers) if q.cost_per_mtok is not None]
    if max_cost_per_mtok is not None:
        quotes = [q for q in quotes if q.cost_per_mtok is not None
                  and q.cost_per_mtok <= max_cost_per_mtok]
    quotes.sort(key=lambda q: (q.cost_per_mtok, q.offer.price_per_hour, q.offer.id))
    return quotes
