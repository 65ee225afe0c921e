"""The short-horizon price forecast drawn on the dashboard's price curves.

:mod:`cambist.market.forecast` (the ``/v1/market/forecast`` model) needs three
days of hourly history for its daily profile; a chart of the last minutes or
hours of a young exchange has none. The dashboard therefore draws the
random-walk forecast (:func:`cambist.market.forecast.naive`: the last price)
with bands taken from the series' own bar-to-bar changes: the 80% and 95%
quantiles of the absolute log changes, scaled by ``sqrt(h)`` for ``h`` bars
ahead and widened like the market model's in-sample bands. Pure; no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from cambist.market.forecast import naive

__all__ = ["MIN_POINTS", "BandPoint", "short_forecast"]

MIN_POINTS = 4
"""Fewest prices a forecast is drawn from."""
_WIDEN = 1.2


@dataclass(frozen=True, slots=True)
class BandPoint:
    """A forecast step: centre and 80%/95% bands (price per GPU-hour, floats)."""

    price: float
    lower80: float
    upper80: float
    lower95: float
    upper95: float


def _quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def short_forecast(prices: Sequence[float | None], horizon: int) -> list[BandPoint]:
    """``horizon`` steps after a series of bar prices (``None``: no listing,
    skipped); empty when fewer than :data:`MIN_POINTS` positive prices exist."""
    if horizon < 1:
        raise ValueError("horizon must be >= 1")
    known = [float(p) for p in prices if p is not None and p > 0]
    if len(known) < MIN_POINTS:
        return []
    logs = [math.log(p) for p in known]
    moves = [abs(b - a) for a, b in itertools.pairwise(logs)]
    q80, q95 = _quantile(moves, 0.8) * _WIDEN, _quantile(moves, 0.95) * _WIDEN
    centre = naive(known, horizon)
    out = []
    for h, c in enumerate(centre, start=1):
        k = math.sqrt(h)
        out.append(BandPoint(c, c * math.exp(-q80 * k), c * math.exp(q80 * k),
                             c * math.exp(-q95 * k), c * math.exp(q95 * k)))
    return out
