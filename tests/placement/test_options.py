"""Serving options: replicas sized for the demand, cheapest per hour first."""

from __future__ import annotations

import math
from decimal import Decimal

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.perf import PerfModel
from cambist.placement.options import serving_options


def _offer(i: int, sku: str | None, count: int, cents: int, avail: int, region: str) -> Offer:
    return Offer(id=f"o{i}", supplier="s", gpu_name=sku or "H100", sku=sku, gpu_count=count,
                 vram_gib=80, region=region, jurisdiction="US",
                 price_per_gpu_hour=Decimal(cents) / 100, spot=False, available=avail,
                 expires_at=1e12)


OFFERS = [_offer(0, "H100-80GB-SXM", 1, 250, 4, "us-east-1"),
          _offer(1, "L4-24GB", 1, 40, 50, "us-west-2"),
          _offer(2, "A100-80GB", 2, 150, 1, "eu-west-1"),
          _offer(3, None, 8, 100, 9, "us-east-1"),
          _offer(4, "L40S-48GB", 1, 90, 2, "us-east-1")]


def test_options_are_sized_sorted_and_filtered() -> None:
    model, perf = MODEL_CATALOG["llama-3.1-8b"], PerfModel()
    opts = serving_options(OFFERS, model, perf, tokens_per_s=3000, region="us")
    assert opts and all(o.offer.region.startswith("us") and o.offer.sku for o in opts)
    costs = [o.cost_per_hour for o in opts]
    assert costs == sorted(costs)
    for o in opts:
        assert o.replicas == math.ceil(3000 / o.tokens_per_s) <= o.offer.available
        assert o.headroom is not None and o.headroom >= 0
    fast = serving_options(OFFERS, model, perf, ttft_ms=150)
    assert all(o.ttft_ms <= 150 for o in fast) and len(fast) < len(serving_options(
        OFFERS, model, perf))
    assert all(o.replicas == 1 and o.headroom is None for o in fast)
