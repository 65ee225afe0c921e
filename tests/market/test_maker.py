"""The market-maker book's pure decisions: risk limits, surge forecasts."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.market.maker import (
    BookConfig,
    Holding,
    SurgeOutlook,
    TermQuote,
    committed,
    decide,
    surge_outlook,
    unit_class,
)
from cambist.market.signals import Observation
from cambist.market.synth import BarParams, synth_bars

DAY = 86400.0
NOW = 1_767_225_600.0
SKUS = ("H100-80GB-SXM", "L40S-48GB")

quotes_st = st.lists(st.builds(
    TermQuote,
    offer_id=st.sampled_from(["a:1", "a:2", "b:1", "b:2"]),
    supplier=st.sampled_from(["a", "b"]),
    sku=st.sampled_from(SKUS),
    gpu_count=st.sampled_from([1, 2]),
    term_s=st.sampled_from([DAY / 2, DAY, 7 * DAY, 30 * DAY]),
    price_per_hour=st.decimals(min_value=Decimal("0.5"), max_value=Decimal(40), places=4),
    available=st.integers(0, 6),
), max_size=8)
outlook_st = st.builds(
    SurgeOutlook, sku=st.just(""), surges_per_day=st.floats(0, 3), open=st.booleans(),
    level_per_gpu_hour=st.one_of(st.none(), st.decimals(min_value=Decimal(1),
                                                       max_value=Decimal(30), places=2)))
holdings_st = st.lists(st.builds(
    Holding, unit_class=st.sampled_from([unit_class(s, n) for s in SKUS for n in (1, 2)]),
    start=st.floats(NOW - 7 * DAY, NOW), end=st.floats(NOW - DAY, NOW + 7 * DAY),
    price_per_hour=st.decimals(min_value=Decimal(1), max_value=Decimal(20), places=2)),
    max_size=5)
config_st = st.builds(
    BookConfig, enabled=st.just(True),
    max_inventory_usd=st.decimals(min_value=Decimal(0), max_value=Decimal(20000), places=2),
    max_term_s=st.sampled_from([DAY / 2, DAY, 7 * DAY]),
    min_surge_probability=st.floats(0, 1), cover=st.floats(0, 2))
base_st = st.dictionaries(st.sampled_from([unit_class(s, n) for s in SKUS for n in (1, 2)]),
                          st.integers(0, 8), max_size=4)


@settings(max_examples=300, deadline=None)
@given(quotes_st, st.tuples(outlook_st, outlook_st), holdings_st, base_st, config_st)
def test_orders_keep_every_risk_limit(quotes: list[TermQuote],
                                      looks: tuple[SurgeOutlook, SurgeOutlook],
                                      holdings: list[Holding], base: dict[str, int],
                                      cfg: BookConfig) -> None:
    outlooks = {sku: SurgeOutlook(sku, o.surges_per_day, o.open, o.level_per_gpu_hour)
                for sku, o in zip(SKUS, looks, strict=True)}
    before = committed(holdings, NOW)
    orders = decide(NOW, quotes, outlooks, holdings, base, cfg)
    spent = sum((o.cost for o in orders), Decimal(0))
    if orders:  # within the money limit, counting what was already committed
        assert before + spent <= cfg.max_inventory_usd
    held: dict[str, int] = {}
    for h in holdings:
        if h.start <= NOW < h.end:
            held[h.unit_class] = held.get(h.unit_class, 0) + 1
    by_class: dict[str, int] = {}
    for o in orders:
        q, look = o.quote, outlooks[o.quote.sku]
        assert o.units >= 1 and o.units <= q.available
        assert q.term_s <= cfg.max_term_s
        # Never without a forecast surge, never into an open one, never above the level.
        assert not look.open and look.probability(q.term_s) >= cfg.min_surge_probability
        assert look.level_per_gpu_hour is not None
        assert q.price_per_hour / q.gpu_count < look.level_per_gpu_hour
        by_class[q.unit_class] = by_class.get(q.unit_class, 0) + o.units
    for cls, n in by_class.items():
        assert held.get(cls, 0) + n <= int(base.get(cls, 0) * cfg.cover + 1e-9)


@given(quotes_st, holdings_st, base_st)
def test_a_disabled_book_never_trades(quotes: list[TermQuote], holdings: list[Holding],
                                      base: dict[str, int]) -> None:
    outlooks = {s: SurgeOutlook(s, 3.0, False, Decimal(100)) for s in SKUS}
    assert decide(NOW, quotes, outlooks, holdings, base, BookConfig(enabled=False)) == []


def _quote(term_s: float, price: str, available: int = 5) -> TermQuote:
    return TermQuote("a:1", "a", "H100-80GB-SXM", 1, term_s, Decimal(price), available)


def test_the_cheapest_term_fills_the_base_load_up_to_the_money_limit() -> None:
    cfg = BookConfig(enabled=True, max_inventory_usd=Decimal(1000), max_term_s=7 * DAY)
    look = {"H100-80GB-SXM": SurgeOutlook("H100-80GB-SXM", 1.0, False, Decimal("3.00"))}
    base = {unit_class("H100-80GB-SXM", 1): 4}
    day, week = _quote(DAY, "2.50"), _quote(7 * DAY, "2.00")
    orders = decide(NOW, [day, week], look, [], base, cfg)
    # A week at $2/h is $336 a unit: two fit in $1,000, the third is a day at $60.
    assert [(o.quote.term_s, o.units) for o in orders] == [(7 * DAY, 2), (DAY, 2)]
    assert sum((o.cost for o in orders), Decimal(0)) == Decimal(672 + 120)
    # A surge in progress inflates the term price: buy ahead of surges, not into them.
    opened = {"H100-80GB-SXM": SurgeOutlook("H100-80GB-SXM", 1.0, True, Decimal("3.00"))}
    assert decide(NOW, [day, week], opened, [], base, cfg) == []
    # No surge seen, none forecast: no reservation.
    calm = {"H100-80GB-SXM": SurgeOutlook("H100-80GB-SXM", 0.0, False, Decimal("3.00"))}
    assert decide(NOW, [day, week], calm, [], base, cfg) == []
    # Units already reserved count against the base load.
    held = [Holding(unit_class("H100-80GB-SXM", 1), NOW - DAY, NOW + DAY, Decimal(1))] * 4
    assert decide(NOW, [day, week], look, held, base, BookConfig(
        enabled=True, max_inventory_usd=Decimal(10**6))) == []


def test_the_outlook_counts_the_detectors_surges() -> None:
    params = BarParams(bars=24 * 6, episodes_per_100_bars=6.0)
    bars, truth = synth_bars("H100-80GB-SXM", params, random.Random(4), t0=NOW - 6 * DAY)
    surges = [e for e in truth if e.kind == "surge"]
    assert surges, "the synthetic history has no surge; pick another seed"
    look = surge_outlook("H100-80GB-SXM", bars, bars[-1].t)
    assert look.surges_per_day > 0
    assert 0 < look.probability(DAY) < look.probability(7 * DAY) <= 1
    assert look.level_per_gpu_hour is not None and look.level_per_gpu_hour > 0
    flat = [Observation(NOW - (100 - i) * 3600.0, Decimal("2.00"), 400) for i in range(100)]
    calm = surge_outlook("H100-80GB-SXM", flat, NOW)
    assert calm.surges_per_day == 0 and calm.probability(7 * DAY) == 0
    assert calm.level_per_gpu_hour == Decimal("2.0000")  # the forecast of a flat price
