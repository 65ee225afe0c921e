"""Rolling-origin backtests of the price forecast against naive baselines.

Pure and deterministic: the series come in, MAPE and interval coverage come
out. For each origin the forecaster sees only the hours before it and is
scored on the ``horizon`` hours after it. Baselines get empirical intervals
by the same rule as the model (quantiles of their own in-sample errors), so
coverage is compared like for like. Used by ``bench/forecast.py`` and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cambist.market.forecast import SEASON, naive, predict, seasonal_naive

__all__ = ["METHODS", "Tally", "backtest"]

METHODS = ("model", "naive", "seasonal_naive")

Baseline = Callable[[Sequence[float], int], list[float]]
_BASELINES: dict[str, Baseline] = {"naive": naive, "seasonal_naive": seasonal_naive}


@dataclass
class Tally:
    """Accumulated absolute percentage errors and interval hits of one method."""

    ape: list[float] = field(default_factory=list)
    in80: int = 0
    in95: int = 0

    @property
    def mape(self) -> float:
        return 100.0 * sum(self.ape) / len(self.ape) if self.ape else math.nan

    @property
    def coverage80(self) -> float:
        return 100.0 * self.in80 / len(self.ape) if self.ape else math.nan

    @property
    def coverage95(self) -> float:
        return 100.0 * self.in95 / len(self.ape) if self.ape else math.nan


def _baseline_bands(method: Baseline, train: Sequence[float], horizon: int
                    ) -> list[tuple[float, float, float, float]]:
    """Log-error quantiles (2.5, 10, 90, 97.5%) per step from in-sample origins."""
    errs: list[list[float]] = [[] for _ in range(horizon)]
    stride = max(1, (len(train) - 2 * SEASON) // 60)
    for o in range(2 * SEASON, len(train) - 1, stride):
        point = method(train[:o], horizon)
        for h in range(min(horizon, len(train) - o)):
            errs[h].append(math.log(train[o + h] / point[h]))
    out = []
    for h in range(horizon):
        lo, hi = max(0, math.floor(h * 0.8)), min(horizon - 1, math.ceil(h * 1.25))
        pool = sorted(e for k in range(lo, hi + 1) for e in errs[k])
        if len(pool) < 10:
            pool = sorted(e for k in range(horizon) for e in errs[k])

        def q(p: float, pool: list[float] = pool) -> float:
            return pool[min(len(pool) - 1, max(0, round(p * (len(pool) - 1))))]

        out.append((q(0.025), q(0.1), q(0.9), q(0.975)))
    return out


def _score(tally: Tally, actual: Sequence[float], point: Sequence[float],
           band80: Sequence[tuple[float, float]], band95: Sequence[tuple[float, float]]
           ) -> None:
    for a, p, b80, b95 in zip(actual, point, band80, band95, strict=True):
        tally.ape.append(abs(a - p) / abs(a))
        tally.in80 += b80[0] <= a <= b80[1]
        tally.in95 += b95[0] <= a <= b95[1]


def backtest(series: Sequence[float], origins: Sequence[int], horizon: int,
             tallies: dict[str, Tally] | None = None) -> dict[str, Tally]:
    """Score the model and both baselines at each origin (an index into ``series``;
    the forecast sees ``series[:origin]``); adds into ``tallies`` if given."""
    out = tallies if tallies is not None else {m: Tally() for m in METHODS}
    for o in origins:
        if o + horizon > len(series):
            raise ValueError(f"origin {o} + horizon {horizon} runs past the series")
        train, actual = series[:o], series[o:o + horizon]
        f = predict(train, horizon)
        _score(out["model"], actual, f.mean, list(zip(f.lower80, f.upper80, strict=True)),
               list(zip(f.lower95, f.upper95, strict=True)))
        for name, method in _BASELINES.items():
            point = method(train, horizon)
            qs = _baseline_bands(method, train, horizon)
            pairs = list(zip(point, qs, strict=True))
            _score(out[name], actual, point,
                   [(p * math.exp(q[1]), p * math.exp(q[2])) for p, q in pairs],
                   [(p * math.exp(q[0]), p * math.exp(q[3])) for p, q in pairs])
    return out
