"""OHLC bars: pure arithmetic on price observations and leased GPU time.

Definitions (the price history is built on them):

- **Market key**: ``(sku, region, supplier)``; the SKU overall is the key
  ``(sku, ALL, ALL)``. Offers whose SKU could not be resolved are left out:
  a price series needs a comparable unit.
- **Price of a key at an instant**: the best (lowest) on-demand price per
  GPU-hour among that key's offers that are available then (not expired,
  ``available > 0``). Spot offers are left out: they are a different quote.
  A key with no such offer has no price at that instant (no observation).
- **Bar**: for one key and one aligned interval ``[start, start + interval_s)``
  (UTC minute, hour or day: epoch seconds are UTC, so flooring to a multiple
  of 60, 3600 or 86400 gives UTC boundaries), ``open`` is the first price
  observed in it, ``close`` the last (taken at ``close_at``), ``high`` and
  ``low`` the extremes; ``available_gpus`` is the available on-demand GPU count
  at the close. A bar with volume but no observation has no prices.
- **Volume**: GPU-seconds leased during the bar (every lease of the key,
  spot included, counted for the part of its running time that falls in the
  bar, times its GPU count), exposed as GPU-hours; ``trades`` counts the
  leases that started running in the bar.

Bars of a coarser interval equal the roll-up of the finer ones
(:func:`rollup`), which the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

__all__ = [
    "ALL",
    "DAY",
    "HOUR",
    "INTERVALS",
    "MINUTE",
    "Bar",
    "add_volume",
    "aggregate",
    "bar_start",
    "observe",
    "rollup",
    "split_span",
]

MINUTE, HOUR, DAY = 60, 3600, 86400
INTERVALS: dict[str, int] = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
ALL = "*"  # region and supplier of a SKU's overall series


@dataclass(frozen=True, slots=True)
class Bar:
    """One interval of one market key's price and volume history."""

    start: float
    interval_s: int
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    close_at: float | None = None
    observations: int = 0
    available_gpus: int = 0
    volume_gpu_s: float = 0.0
    trades: int = 0

    @property
    def end(self) -> float:
        """The first instant after this bar."""
        return self.start + self.interval_s

    @property
    def volume_gpu_hours(self) -> float:
        """GPU-hours leased during the bar."""
        return self.volume_gpu_s / 3600.0


def bar_start(t: float, interval_s: int) -> float:
    """Start of the aligned (UTC) interval of ``interval_s`` seconds holding ``t``."""
    s = math.floor(t / interval_s) * interval_s
    # t / interval_s can round up to the next integer just below a boundary
    return float(s - interval_s if s > t else s)


def observe(bar: Bar, price: Decimal, available_gpus: int, at: float) -> Bar:
    """``bar`` after a price observation at ``at`` (observations come in time order)."""
    # Bar(...) rather than dataclasses.replace: this runs for every key at every step
    first = bar.high is None or bar.low is None
    return Bar(
        start=bar.start, interval_s=bar.interval_s, open=price if first else bar.open,
        high=price if bar.high is None else max(bar.high, price),
        low=price if bar.low is None else min(bar.low, price), close=price, close_at=at,
        observations=bar.observations + 1, available_gpus=available_gpus,
        volume_gpu_s=bar.volume_gpu_s, trades=bar.trades)


def add_volume(bar: Bar, gpu_s: float, trades: int = 0) -> Bar:
    """``bar`` with ``gpu_s`` more GPU-seconds leased and ``trades`` more trades."""
    return replace(bar, volume_gpu_s=bar.volume_gpu_s + gpu_s, trades=bar.trades + trades)


def _combine(acc: Bar, later: Bar) -> Bar:
    """Fold a later bar into an earlier one (both inside ``acc``'s interval)."""
    volume, trades = acc.volume_gpu_s + later.volume_gpu_s, acc.trades + later.trades
    if later.high is None or later.low is None:
        return replace(acc, volume_gpu_s=volume, trades=trades)
    first = acc.high is None or acc.low is None
    return Bar(
        start=acc.start, interval_s=acc.interval_s, open=later.open if first else acc.open,
        high=later.high if acc.high is None else max(acc.high, later.high),
        low=later.low if acc.low is None else min(acc.low, later.low), close=later.close,
        close_at=later.close_at, observations=acc.observations + later.observations,
        available_gpus=later.available_gpus, volume_gpu_s=volume, trades=trades)


def rollup(bars: Iterable[Bar], interval_s: int) -> list[Bar]:
    """Bars of ``interval_s`` (a multiple of theirs) built from finer bars of one key."""
    out: dict[float, Bar] = {}
    for b in sorted(bars, key=lambda x: x.start):
        if interval_s % b.interval_s:
            raise ValueError(f"cannot roll {b.interval_s}s bars up into {interval_s}s bars")
        s = bar_start(b.start, interval_s)
        out[s] = _combine(out.get(s, Bar(start=s, interval_s=interval_s)), b)
    return list(out.values())


def aggregate(observations: Iterable[tuple[float, Decimal, int]], interval_s: int) -> list[Bar]:
    """Bars of ``interval_s`` from ``(at, price, available_gpus)`` observations."""
    out: dict[float, Bar] = {}
    for at, price, avail in sorted(observations, key=lambda o: o[0]):
        s = bar_start(at, interval_s)
        out[s] = observe(out.get(s, Bar(start=s, interval_s=interval_s)), price, avail, at)
    return sorted(out.values(), key=lambda b: b.start)


def split_span(begin: float, end: float, interval_s: int) -> list[tuple[float, float]]:
    """``[begin, end)`` cut at interval boundaries: ``(bar start, seconds)`` pieces."""
    pieces: list[tuple[float, float]] = []
    t = begin
    while t < end:
        s = bar_start(t, interval_s)
        stop = min(end, s + interval_s)
        pieces.append((s, stop - t))
        t = stop
    return pieces
