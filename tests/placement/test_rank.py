"""$/Mtok ranking: property tests over random offer books."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.perf import PerfModel
from cambist.placement import quote, rank_for_model

SKUS = ["H100-80GB-SXM", "H100-80GB-PCIe", "A100-80GB", "L40S-48GB", "L4-24GB", "A10G-24GB",
        "H200-141GB-SXM", "RTX4090-24GB", None]


def _offer(i: int, sku: str | None, count: int, cents: int) -> Offer:
    return Offer(id=f"s:{i}", supplier="s", gpu_name=sku or "H100", sku=sku, gpu_count=count,
                 vram_gib=80, region="us", jurisdiction="US",
                 price_per_gpu_hour=Decimal(cents) / 100, spot=False, available=1,
                 expires_at=1e12, sku_note="" if sku else "ambiguous")


offers_st = st.lists(
    st.tuples(st.sampled_from(SKUS), st.sampled_from([1, 2, 4, 8]), st.integers(10, 2000)),
    max_size=25,
).map(lambda xs: [_offer(i, *x) for i, x in enumerate(xs)])


@settings(max_examples=60, deadline=None)
@given(offers=offers_st, model=st.sampled_from(sorted(MODEL_CATALOG)))
def test_ranking_is_sorted_feasible_and_complete(offers: list[Offer], model: str) -> None:
    spec = MODEL_CATALOG[model]
    pm = PerfModel()
    ranked = rank_for_model(offers, spec, pm)
    costs = [q.cost_per_mtok for q in ranked]
    assert all(c is not None and c > 0 for c in costs)
    assert costs == sorted(costs)  # type: ignore[type-var]
    feasible = {o.id for o in offers if quote(o, spec, pm).feasible}
    assert {q.offer.id for q in ranked} == feasible
    assert all(q.offer.sku is not None for q in ranked)  # unmapped GPUs are never quoted


@settings(max_examples=40, deadline=None)
@given(offers=offers_st, cap=st.integers(1, 500))
def test_price_cap_only_removes(offers: list[Offer], cap: int) -> None:
    spec = MODEL_CATALOG["llama-3.1-8b"]
    pm = PerfModel()
    everything = rank_for_model(offers, spec, pm)
    capped = rank_for_model(offers, spec, pm, max_cost_per_mtok=Decimal(cap) / 100)
    assert [q.offer.id for q in capped] == [q.offer.id for q in everything
                                            if q.cost_per_mtok <= Decimal(cap) / 100]


def test_cheaper_per_hour_is_not_always_cheaper_per_token() -> None:
    spec = MODEL_CATALOG["llama-3.1-8b"]
    slow_cheap = _offer(1, "L4-24GB", 1, 40)
    fast_dear = _offer(2, "H100-80GB-SXM", 1, 200)
    ranked = rank_for_model([slow_cheap, fast_dear], spec, PerfModel())
    assert ranked[0].offer.id == "s:2"
