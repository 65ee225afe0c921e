"""Price forecasts per SKU: an hourly price index 24 hours or 7 days ahead.

The model is our own, small and documented, rather than a library: the
candidates (statsforecast, statsmodels) pull numpy, scipy, pandas and numba
(hundreds of MB) into an exchange that otherwise needs none of them, for one
seasonal exponential-smoothing model we can write in ~200 lines and test.

Model (on the log of the price, so errors are relative and bands positive):

1. **Daily profile.** The last up-to-7 days are detrended by a centred 24-hour
   moving average; the profile is the median detrended value per hour of day,
   centred to mean zero. Medians, so one spike does not print a daily pattern.
2. **Damped-trend exponential smoothing** (Gardner & McKenzie) on the
   deseasonalized series: level ``l`` and trend ``b`` with smoothing ``alpha``,
   ``beta`` and damping ``phi``; the ``h``-step forecast is
   ``l + (phi + ... + phi^h) b`` plus the profile. Damping keeps a trend from
   running away over a week; ``alpha`` small averages noise away, large
   follows a random walk.
3. **Parameters chosen for the horizon asked.** Every (alpha, beta, phi) of a
   small grid is run over the history and scored by its mean absolute error
   at horizons 1..H from many in-sample origins, so a 7-day forecast picks
   the parameters that forecast well 7 days out, not one hour out.
4. **Prediction intervals from the model's own errors** (empirical, not
   Gaussian): the chosen model's in-sample ``h``-step errors, pooled over
   neighbouring horizons, give the 10/90 and 2.5/97.5% quantiles, widened by
   20% because in-sample errors flatter a model fitted on the same hours;
   beyond the longest horizon the history can check they widen with sqrt(h).

``bench/forecast.py`` backtests it against naive and seasonal-naive forecasts.
Inputs and outputs at the boundary are ``Decimal`` prices; floats inside.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "SEASON",
    "FloatForecast",
    "ForecastPoint",
    "forecast_prices",
    "naive",
    "predict",
    "seasonal_naive",
]

SEASON = 24
"""Hours per daily cycle."""
_ALPHAS = (0.03, 0.08, 0.2, 0.4, 0.7)
_BETAS = (0.0, 0.03, 0.1)
_PHIS = (0.7, 0.85, 0.95)
_WARM = 2 * SEASON
_WIDEN = 1.2
"""In-sample errors understate out-of-sample ones (the profile and the
parameters were fitted on the same hours): quantiles are widened by this."""
_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class FloatForecast:
    """Point forecast and bands for steps 1..H (floats: estimates)."""

    mean: list[float]
    lower80: list[float]
    upper80: list[float]
    lower95: list[float]
    upper95: list[float]
    params: tuple[float, float, float]
    """(alpha, beta, phi) chosen."""


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """One forecast hour of a SKU's price index, with its 80% and 95% bands."""

    t: float
    price: Decimal
    lower80: Decimal
    upper80: Decimal
    lower95: Decimal
    upper95: Decimal


def _profile(y: list[float]) -> list[float]:
    """Median detrended value per hour of day over the last <= 7 days, centred."""
    n = len(y)
    start = max(SEASON // 2, n - 7 * SEASON)
    slots: list[list[float]] = [[] for _ in range(SEASON)]
    for t in range(start, n - SEASON // 2):
        window = y[t - SEASON // 2:t + SEASON // 2]
        smooth = (sum(window) + y[t + SEASON // 2]) / (SEASON + 1)
        slots[t % SEASON].append(y[t] - smooth)
    prof = [statistics.median(s) if s else 0.0 for s in slots]
    mean = sum(prof) / SEASON
    return [p - mean for p in prof]


def _states(z: list[float], a: float, b: float, phi: float) -> list[tuple[float, float]]:
    """(level, trend) after each observation."""
    level, trend = z[0], 0.0
    out = []
    for x in z:
        prev = level
        level = a * x + (1 - a) * (level + phi * trend)
        trend = b * (level - prev) + (1 - b) * phi * trend
        out.append((level, trend))
    return out


def _damp_sums(phi: float, horizon: int) -> list[float]:
    sums, acc, p = [], 0.0, 1.0
    for _ in range(horizon):
        p *= phi
        acc += p
        sums.append(acc)
    return sums


def _errors(z: list[float], states: list[tuple[float, float]], phi: float, horizon: int,
            stride: int, steps: Sequence[int] | None = None) -> list[list[float]]:
    """In-sample errors per step (index h-1) from origins every ``stride`` hours
    (only at ``steps`` if given)."""
    sums = _damp_sums(phi, horizon)
    errs: list[list[float]] = [[] for _ in range(horizon)]
    wanted = list(steps) if steps is not None else list(range(1, horizon + 1))
    for o in range(_WARM, len(z) - 1, stride):
        level, trend = states[o]
        for h in wanted:
            if o + h < len(z):
                errs[h - 1].append(z[o + h] - (level + sums[h - 1] * trend))
    return errs


def _choose(z: list[float], horizon: int) -> tuple[float, float, float]:
    steps = sorted({max(1, round(horizon * k / 12)) for k in range(1, 13)})
    best, best_score = (0.2, 0.0, 0.95), math.inf
    stride = max(1, (len(z) - _WARM) // 40)
    for a in _ALPHAS:
        for b in _BETAS:
            for phi in _PHIS:
                errs = _errors(z, _states(z, a, b, phi), phi, horizon, stride, steps)
                pooled = [abs(e) for h in steps for e in errs[h - 1]]
                score = sum(pooled) / len(pooled) if pooled else math.inf
                if score < best_score:
                    best, best_score = (a, b, phi), score
    return best


def _quantile(s: list[float], q: float) -> float:
    """Linear-interpolated quantile of a sorted list."""
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (pos - lo)


def _bands(errs: list[list[float]], horizon: int) -> list[tuple[float, float, float, float]]:
    """(q2.5, q10, q90, q97.5) of the error at each step, widening by sqrt(h)
    past the last step with enough errors."""
    out: list[tuple[float, float, float, float]] = []
    last: tuple[tuple[float, float, float, float], int] | None = None
    for h in range(1, horizon + 1):
        lo, hi = max(1, math.floor(h * 0.8)), min(horizon, math.ceil(h * 1.25))
        pool = sorted(e for k in range(lo, hi + 1) for e in errs[k - 1])
        if len(pool) >= 30:
            q = (_WIDEN * _quantile(pool, 0.025), _WIDEN * _quantile(pool, 0.1),
                 _WIDEN * _quantile(pool, 0.9), _WIDEN * _quantile(pool, 0.975))
            last = (q, h)
        elif last is not None:
            scale = math.sqrt(h / last[1])
            q = (last[0][0] * scale, last[0][1] * scale, last[0][2] * scale,
                 last[0][3] * scale)
        else:
            raise ValueError("history too short to estimate forecast errors")
        out.append(q)
    return out


def predict(values: Sequence[float], horizon: int) -> FloatForecast:
    """Forecast ``horizon`` hourly steps after an hourly series of prices > 0.

    ``values[i]`` is hour ``i``; the hour of day of ``values[0]`` must be
    hour 0 modulo 24 for the daily profile to line up with the clock, or the
    caller must rotate (``forecast_prices`` does). Needs >= 3 days.
    """
    if horizon < 1:
        raise ValueError("horizon must be >= 1")
    if len(values) < 3 * SEASON or min(values) <= 0:
        raise ValueError(f"need at least {3 * SEASON} positive hourly values")
    y = [math.log(v) for v in values]
    prof = _profile(y)
    n = len(y)
    z = [y[t] - prof[t % SEASON] for t in range(n)]
    a, b, phi = _choose(z, horizon)
    states = _states(z, a, b, phi)
    bands = _bands(_errors(z, states, phi, horizon, max(1, (n - _WARM) // 150)), horizon)
    level, trend = states[-1]
    sums = _damp_sums(phi, horizon)
    centre = [level + sums[h] * trend + prof[(n + h) % SEASON] for h in range(horizon)]
    return FloatForecast(
        mean=[math.exp(c) for c in centre],
        lower80=[math.exp(c + q[1]) for c, q in zip(centre, bands, strict=True)],
        upper80=[math.exp(c + q[2]) for c, q in zip(centre, bands, strict=True)],
        lower95=[math.exp(c + q[0]) for c, q in zip(centre, bands, strict=True)],
        upper95=[math.exp(c + q[3]) for c, q in zip(centre, bands, strict=True)],
        params=(a, b, phi),
    )


def naive(values: Sequence[float], horizon: int) -> list[float]:
    """The last value, repeated (the random-walk forecast)."""
    return [float(values[-1])] * horizon


def seasonal_naive(values: Sequence[float], horizon: int, season: int = SEASON) -> list[float]:
    """The value one season (a day) before each forecast hour."""
    n = len(values)
    return [float(values[n - season + (h % season)]) for h in range(horizon)]


def _money(x: float) -> Decimal:
    return Decimal(f"{x:.6f}").quantize(_QUANTUM)


def forecast_prices(times: Sequence[float], prices: Sequence[Decimal], horizon: int,
                    *, step_s: float = 3600.0) -> list[ForecastPoint]:
    """Forecast an hourly price series (``times`` on multiples of ``step_s``)."""
    if len(times) != len(prices):
        raise ValueError("times and prices differ in length")
    values = [float(p) for p in prices]
    # Rotate so that index 0 is hour 0 of a day: the profile follows the clock.
    skip = (-round(times[0] / step_s)) % SEASON if times else 0
    f = predict(values[skip:], horizon)
    t_last = times[-1]
    return [
        ForecastPoint(t_last + (h + 1) * step_s, _money(f.mean[h]), _money(f.lower80[h]),
                      _money(f.upper80[h]), _money(f.lower95[h]), _money(f.upper95[h]))
        for h in range(horizon)
    ]
