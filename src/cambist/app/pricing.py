"""The first price list: expected compute cost per Mtok plus the markup.

Expected cost of a model is the median $/Mtok over the offers that can serve
it (the performance model's full-batch throughput), for output tokens; input
tokens are priced from prefill throughput on the same offers. Prices change
only deliberately, as a new version with an effective time.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from statistics import median

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.perf.model import PerfModel
from cambist.placement.rank import rank_for_model

__all__ = ["initial_prices"]

_CENT = Decimal("0.0001")


def initial_prices(offers: list[Offer], perf: PerfModel, markup: Decimal,
                   tier: str = "standard") -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
    """(model, tier) -> (input $/Mtok, output $/Mtok) for every catalog model
    that at least one offer can serve."""
    out: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for model in MODEL_CATALOG.values():
        quotes = rank_for_model(offers, model, perf)
        if not quotes:
            continue
        out_costs = [q.cost_per_mtok for q in quotes if q.cost_per_mtok is not None]
        in_costs = []
        for q in quotes:
            assert q.estimate is not None
            per_hour_tokens = Decimal(str(round(q.estimate.prefill_tok_s * 3600, 3)))
            in_costs.append(q.offer.price_per_hour * Decimal(1_000_000) / per_hour_tokens)
        factor = 1 + markup
        price_out = (Decimal(median(out_costs)) * factor).quantize(_CENT, ROUND_HALF_UP)
        price_in = (Decimal(median(in_costs)) * factor).quantize(_CENT, ROUND_HALF_UP)
        out[(model.name, tier)] = (max(price_in, _CENT), max(price_out, _CENT))
    return out
