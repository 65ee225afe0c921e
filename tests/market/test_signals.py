"""The glut/surge detector, scored on histories it was not tuned on.

The defaults of ``DetectorConfig`` were tuned on ``synth_bars`` with
``BarParams()`` and seeds 0-4. Here: other seeds, other parameters, and the
simulated market's own ground truth. A detected episode *matches* a true one
of the same SKU and kind when their intervals overlap; precision is the share
of detected episodes that match one, recall the share of true ones matched;
the lag of a matched true episode is the whole bars from the first bar at or
after its start to the bar at which the detector confirmed it, and the test
bounds the *maximum* lag. Simulated episodes are scored on SKUs deep enough to
be scored (``min_depth``) and after the detector's warm-up (``window`` bars).
"""

from __future__ import annotations

import random
import statistics
from decimal import Decimal
from pathlib import Path

import pytest

from cambist.market.replay import Row, aggregate
from cambist.market.signals import (
    DetectorConfig,
    Observation,
    Signal,
    detect,
    detect_market,
    score_signals,
)
from cambist.market.synth import BarParams, Episode, synth_bars
from cambist.providers.sim import SimSupplier, market_key

T0 = 1_767_225_600.0

UNSEEN = BarParams(
    bars=500, capacity=250.0, capacity_noise=0.1, price=3.1, price_volatility=0.04,
    price_half_life_bars=8.0, duration=(3, 30), outlier_rate=0.03,
    episodes_per_100_bars=3.0, glut_capacity=(1.6, 2.4), glut_price=(0.74, 0.88),
    surge_capacity=(0.2, 0.45), surge_price=(1.15, 1.4), gap_bars=10,
)


def test_synthetic_histories_with_unseen_seeds_and_parameters() -> None:
    signals: list[Signal] = []
    truth: list[Episode] = []
    for seed in range(1000, 1008):
        bars, episodes = synth_bars(f"gpu-{seed}", UNSEEN, random.Random(seed), t0=T0)
        signals += detect(f"gpu-{seed}", bars)
        truth += episodes
    score = score_signals(signals, truth, UNSEEN.bar_s)
    assert score.true >= 50
    assert score.precision >= 0.8 and score.recall >= 0.8, score
    assert score.max_lag <= 3, score.lags


async def test_simulated_market_ground_truth(tmp_path: Path) -> None:
    bar_s, days, seed = 1800.0, 14, 4242
    sims = [SimSupplier(n, tmp_path / n, seed=seed, episode_rate=1.0)
            for n in ("aws", "gcp", "lambda", "nebius")]
    series: dict[str, list[Observation]] = {}
    for k in range(int(days * 86400 / bar_s) + 1):
        now, rows = T0 + k * bar_s, []
        for sim in sims:
            await sim.step(now)
            rows += [Row.of(o) for o in await sim.list_offers(now)]
        for key, obs in aggregate(rows, now).items():
            series.setdefault(key, []).append(obs)
    cfg = DetectorConfig()
    deep = {k for k, s in series.items()
            if statistics.median(o.available for o in s) >= cfg.min_depth}
    assert len(deep) >= 5
    warm = T0 + cfg.window * bar_s  # the detector needs a baseline first
    truth = {e for sim in sims for e in sim.episodes(warm, T0 + days * 86400) if e.sku in deep}
    signals = detect_market({k: series[k] for k in deep}, cfg)
    score = score_signals(signals, truth, bar_s)
    assert score.true >= 40
    assert score.precision >= 0.8 and score.recall >= 0.8, score
    assert score.max_lag <= 3, score.lags


async def test_episodes_are_shared_deterministic_and_switchable(tmp_path: Path) -> None:
    a = SimSupplier("aws", tmp_path / "a", seed=5)
    b = SimSupplier("gcp", tmp_path / "b", seed=5)
    off = SimSupplier("aws", tmp_path / "c", seed=5, episode_rate=0)
    week = (T0, T0 + 7 * 86400)
    keys_a = {market_key(o) for o in await a.list_offers(T0)}
    keys_b = {market_key(o) for o in await b.list_offers(T0)}
    common = keys_a & keys_b
    assert common
    ea = [e for e in a.episodes(*week) if e.sku in common]
    assert ea and ea == [e for e in b.episodes(*week) if e.sku in common]
    assert ea == [e for e in SimSupplier("aws", tmp_path / "d", seed=5).episodes(*week)
                  if e.sku in common]
    assert off.episodes(*week) == []
    glut = next(e for e in a.episodes(*week) if e.kind == "glut")
    before, during = glut.start - 3600, (glut.start + glut.end) / 2
    for sim in (a, off):
        await sim.step(before)
        await sim.step(during)
    hit = [o for o in await a.list_offers(during) if market_key(o) == glut.sku]
    calm = {o.id: o for o in await off.list_offers(during)}
    assert all(o.price_per_gpu_hour < calm[o.id].price_per_gpu_hour for o in hit)
    assert sum(o.available for o in hit) > sum(calm[o.id].available for o in hit)


def test_hysteresis_ignores_one_bar_outliers() -> None:
    bars = [Observation(T0 + i * 3600, Decimal("2.00"), 400 + (i % 3)) for i in range(60)]
    bars[30] = Observation(bars[30].t, Decimal("1.40"), 1200)  # one wild bar
    assert detect("x", bars) == []
    for i in range(40, 50):
        bars[i] = Observation(bars[i].t, Decimal("2.80"), 90)
    bars[45] = Observation(bars[45].t, Decimal("2.00"), 400)  # one calm bar inside
    (surge,) = detect("x", bars)
    assert (surge.kind, surge.start, surge.end) == ("surge", bars[40].t, bars[50].t)
    assert surge.detected_at == bars[41].t and surge.peak_strength > 4


def test_thin_markets_and_config_are_checked() -> None:
    thin = [Observation(T0 + i * 3600, Decimal("1"), 3 if i % 7 else 30) for i in range(60)]
    assert detect("thin", thin) == []
    with pytest.raises(ValueError):
        DetectorConfig(window=10, min_baseline=20)
    with pytest.raises(ValueError):
        DetectorConfig(open_z=1.0, close_z=2.0)
