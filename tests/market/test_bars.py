"""Bar arithmetic: OHLC of observations, roll-ups, and leased time cut into bars."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.market.bars import (
    DAY,
    HOUR,
    MINUTE,
    Bar,
    add_volume,
    aggregate,
    bar_start,
    observe,
    rollup,
    split_span,
)

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC

price = st.integers(min_value=1, max_value=20_000_000).map(lambda m: Decimal(m) / 1_000_000)
obs = st.tuples(st.floats(min_value=T0, max_value=T0 + 3 * DAY, allow_nan=False),
                price, st.integers(min_value=0, max_value=500))
observations = st.lists(obs, min_size=1, max_size=200, unique_by=lambda o: o[0])


def _ohlc(bars: list[Bar]) -> list[tuple]:
    return [(b.start, b.open, b.high, b.low, b.close, b.close_at, b.observations,
             b.available_gpus) for b in bars]


@settings(max_examples=150, deadline=None)
@given(observations)
def test_ohlc_is_first_last_and_extremes(data: list[tuple[float, Decimal, int]]) -> None:
    ordered = sorted(data)
    for iv in (MINUTE, HOUR, DAY):
        bars = aggregate(data, iv)
        assert sum(b.observations for b in bars) == len(data)
        for b in bars:
            inside = [o for o in ordered if b.start <= o[0] < b.end]
            assert inside and b.start == bar_start(inside[0][0], iv)
            assert b.open == inside[0][1] and b.close == inside[-1][1]
            assert b.close_at == inside[-1][0] and b.available_gpus == inside[-1][2]
            assert b.high == max(o[1] for o in inside) and b.low == min(o[1] for o in inside)
            assert b.high is not None and b.low is not None
            assert b.open is not None and b.close is not None
            assert b.high >= max(b.open, b.close) and b.low <= min(b.open, b.close)
            assert b.start % iv == 0


@settings(max_examples=150, deadline=None)
@given(observations)
def test_coarser_bars_equal_rollups_of_finer(data: list[tuple[float, Decimal, int]]) -> None:
    minutes = aggregate(data, MINUTE)
    hours = aggregate(data, HOUR)
    assert _ohlc(rollup(minutes, HOUR)) == _ohlc(hours)
    assert _ohlc(rollup(hours, DAY)) == _ohlc(aggregate(data, DAY))
    assert _ohlc(rollup(minutes, DAY)) == _ohlc(aggregate(data, DAY))


spans = st.lists(st.tuples(st.floats(min_value=0, max_value=2 * DAY),
                           st.floats(min_value=0, max_value=DAY),
                           st.integers(min_value=1, max_value=8)), max_size=20)


@settings(max_examples=100, deadline=None)
@given(spans)
def test_volume_splits_and_rolls_up_without_loss(leased: list[tuple[float, float, int]]) -> None:
    by_iv: dict[int, dict[float, Bar]] = {MINUTE: {}, HOUR: {}, DAY: {}}
    total = 0.0
    for offset, length, gpus in leased:
        begin, end = T0 + offset, T0 + offset + length
        total += length * gpus
        for iv, bars in by_iv.items():
            pieces = split_span(begin, end, iv)
            assert sum(s for _, s in pieces) == pytest.approx(length, abs=1e-6)
            for start, secs in pieces:
                assert 0 < secs <= iv and start <= max(begin, start) < start + iv
                bar = bars.get(start, Bar(start=start, interval_s=iv))
                bars[start] = add_volume(bar, secs * gpus)
    # Span ends near T0 (~1.7e9 s) carry ~2.4e-7 s of float rounding each, so
    # the pieces of one span may lose about that much per GPU.
    slack = 1e-6 * (1 + sum(gpus for *_, gpus in leased))
    for bars in by_iv.values():
        assert sum(b.volume_gpu_s for b in bars.values()) == pytest.approx(total, rel=1e-9,
                                                                           abs=slack)
    for fine, coarse in ((MINUTE, HOUR), (HOUR, DAY), (MINUTE, DAY)):
        rolled = {b.start: b.volume_gpu_s for b in rollup(by_iv[fine].values(), coarse)}
        direct = {s: b.volume_gpu_s for s, b in by_iv[coarse].items()}
        assert rolled.keys() == direct.keys()
        for s, v in direct.items():
            assert rolled[s] == pytest.approx(v, rel=1e-9, abs=1e-6)


def test_bars_align_to_utc_boundaries() -> None:
    t = T0 + 3 * HOUR + 17 * MINUTE + 42.5
    assert bar_start(t, MINUTE) == T0 + 3 * HOUR + 17 * MINUTE
    assert bar_start(t, HOUR) == T0 + 3 * HOUR
    assert bar_start(t, DAY) == T0
    assert bar_start(T0 + HOUR, HOUR) == T0 + HOUR  # a boundary starts its own bar


def test_volume_only_bar_takes_prices_from_a_later_observation() -> None:
    empty = add_volume(Bar(start=T0, interval_s=MINUTE), 120.0, trades=1)
    assert empty.open is None and empty.volume_gpu_hours == pytest.approx(120 / 3600)
    seen = observe(empty, Decimal("2.5"), 16, T0 + 5)
    assert (seen.open, seen.close, seen.observations, seen.trades) == (
        Decimal("2.5"), Decimal("2.5"), 1, 1)
    rolled = rollup([empty, Bar(start=T0 + 60, interval_s=MINUTE)], HOUR)
    assert len(rolled) == 1 and rolled[0].open is None and rolled[0].trades == 1


def test_rollup_refuses_an_interval_that_is_not_a_multiple() -> None:
    with pytest.raises(ValueError, match="cannot roll"):
        rollup([Bar(start=T0, interval_s=HOUR)], 90 * MINUTE)
