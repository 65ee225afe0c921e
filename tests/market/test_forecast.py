"""The price forecast: a small rolling-origin backtest on unseen seeds, and the
Decimal boundary."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from cambist.market.backtest import METHODS, Tally, backtest
from cambist.market.forecast import forecast_prices, predict
from cambist.market.synth import PROCESSES, price_index

DAY = 24


@pytest.mark.parametrize("horizon", [24, 168])
def test_beats_naive_baselines_with_calibrated_intervals(horizon: int) -> None:
    tallies = {m: Tally() for m in METHODS}
    origins = [d * DAY for d in (21, 23, 25, 27)] if horizon == 24 else [21 * DAY]
    for family in PROCESSES:
        for k in range(4 if horizon == 24 else 3):
            rng = random.Random(f"test:{family}:{k}")
            series = price_index(family, 29 * DAY, rng.uniform(0.3, 12.0), rng,
                                 volatility=rng.uniform(0.6, 1.4))
            backtest(series, origins, horizon, tallies)
    model = tallies["model"]
    assert model.mape < tallies["naive"].mape
    assert model.mape < tallies["seasonal_naive"].mape
    assert abs(model.coverage80 - 80) <= 10, model.coverage80
    assert abs(model.coverage95 - 95) <= 10, model.coverage95


def test_forecast_prices_is_decimal_ordered_and_aligned() -> None:
    t0 = 1_767_225_600.0 + 5 * 3600  # starts at 05:00: the profile must still line up
    values = price_index("mean_reverting", 10 * DAY, 2.5, random.Random(3))
    times = [t0 + i * 3600 for i in range(len(values))]
    points = forecast_prices(times, [Decimal(f"{v:.4f}") for v in values], 24)
    assert [p.t for p in points] == [times[-1] + (h + 1) * 3600 for h in range(24)]
    for p in points:
        assert isinstance(p.price, Decimal)
        assert p.lower95 <= p.lower80 <= p.price <= p.upper80 <= p.upper95
    widths = [float(p.upper80 - p.lower80) for p in points]
    assert widths[-1] >= widths[0]


def test_rejects_short_or_bad_history() -> None:
    with pytest.raises(ValueError):
        predict([1.0] * 10, 24)
    with pytest.raises(ValueError):
        predict([1.0] * 100 + [0.0], 24)
    with pytest.raises(ValueError):
        predict([1.0] * 100, 0)
