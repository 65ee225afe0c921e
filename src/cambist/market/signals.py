"""Gluts and surges: per-SKU episodes of unusual capacity and price.

For each SKU, every bar is compared with a rolling baseline of the bars before
it, using robust statistics so that the baseline is not dragged by the very
episodes it must reveal:

- capacity is scored on ``log(1 + available GPUs)`` and price on ``log(price
  level)`` (both move multiplicatively); each gets a robust z-score
  ``(x - median) / max(1.4826 * MAD, floor)`` against the baseline, where
  1.4826 makes the MAD a standard deviation for normal noise and the floors
  (15% capacity, 3% price) keep a flat baseline from turning one supplier's
  host or one repriced listing, which are not market moves, into a score;
- the *strength* of a bar is ``(z_capacity - z_price) / sqrt(2)``: positive
  when capacity is above and/or the price below baseline (a **glut**),
  negative for a **surge**; either side alone can carry it (6 sigma on one
  side is 4.2), both together reinforce. With nothing available the price
  side is missing and the capacity side decides;
- hysteresis: an episode *opens* after ``confirm_bars`` (2) consecutive bars
  of one sign with ``|strength| >= open_z`` (3.5), or at once if ``|strength|
  >= strong_z`` (off by default: isolated one-bar outliers are common) and
  *closes* after ``close_bars`` (2) consecutive bars with strength (signed
  toward the episode's kind) below ``close_z`` (1.5); ``start`` is the first bar of the
  opening run, ``end`` the first bar of the closing run, ``detected_at`` the
  bar at which the episode was confirmed (detection lag = ``detected_at`` -
  true start);
- the baseline is the last ``window`` bars not flagged (inside an episode or
  a candidate run) within ``lookback`` bars; if fewer than ``min_baseline``
  are left (a long episode, i.e. a new normal) the plain last ``window`` bars
  are used, so a permanent level shift is absorbed and its episode closes;
- thin markets are not scored: below ``min_depth`` (100) GPUs available in
  the baseline, one host arriving or leaving moves capacity by half and
  there is no market to have a glut or a surge in.

The price fed in should be a price *level* (``cambist.market.replay`` uses
the median on-demand list price): the single cheapest offer jumps whenever
that one offer sells out or is withdrawn, which is composition, not market.

Defaults were tuned on :func:`cambist.market.synth.synth_bars` with its
default parameters and seeds 0-4; the tests score other seeds and parameters.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

__all__ = [
    "DetectorConfig",
    "EpisodeLike",
    "Observation",
    "Score",
    "Signal",
    "detect",
    "detect_market",
    "score_signals",
]

_MAD_TO_SIGMA = 1.4826
_Z_CAP = 50.0


@dataclass(frozen=True, slots=True)
class Observation:
    """One bar of one SKU: its price level and the GPUs available."""

    t: float
    price: Decimal | None
    """Price level per GPU-hour (``None``: nothing listed). A robust level such
    as the median list price; the best price only suits deep markets."""
    available: int
    """GPUs available (units available x GPUs per unit), summed over offers."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A detected glut or surge of one SKU (``end is None``: still open)."""

    sku: str
    kind: str
    """``"glut"`` or ``"surge"``."""
    start: float
    end: float | None
    strength: float
    """Strength at the last bar of the episode (robust z units, sign removed)."""
    peak_strength: float
    detected_at: float


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of the detector (z units are robust standard deviations)."""

    window: int = 24
    lookback: int = 72
    min_baseline: int = 12
    open_z: float = 3.5
    strong_z: float | None = None
    """Open on one bar this strong (``None``: always wait for ``confirm_bars``)."""
    confirm_bars: int = 2
    close_z: float = 1.5
    close_bars: int = 2
    capacity_floor: float = 0.15
    price_floor: float = 0.03
    min_depth: float = 100.0
    """No scoring while the baseline median of available GPUs is below this."""

    def __post_init__(self) -> None:
        if not (0 < self.min_baseline <= self.window <= self.lookback):
            raise ValueError("need 0 < min_baseline <= window <= lookback")
        if not 0 <= self.close_z < self.open_z:
            raise ValueError("need 0 <= close_z < open_z")
        if self.strong_z is not None and self.strong_z < self.open_z:
            raise ValueError("need strong_z >= open_z")
        if self.confirm_bars < 1 or self.close_bars < 1:
            raise ValueError("confirm_bars and close_bars must be >= 1")


def _robust_z(x: float, base: list[float], floor: float) -> float:
    med = statistics.median(base)
    mad = statistics.median(abs(b - med) for b in base)
    z = (x - med) / max(_MAD_TO_SIGMA * mad, floor)
    return max(-_Z_CAP, min(_Z_CAP, z))


def _logs(obs: Observation) -> tuple[float, float | None]:
    price = math.log(float(obs.price)) if obs.price else None
    return math.log1p(max(0, obs.available)), price


def _baseline(logs: list[tuple[float, float | None]], flagged: list[bool], i: int,
              cfg: DetectorConfig) -> list[int]:
    picked: list[int] = []
    for j in range(i - 1, max(-1, i - 1 - cfg.lookback), -1):
        if not flagged[j]:
            picked.append(j)
            if len(picked) == cfg.window:
                break
    if len(picked) < cfg.min_baseline:
        picked = list(range(max(0, i - cfg.window), i))
    return picked


def _strength(logs: list[tuple[float, float | None]], idx: list[int], i: int,
              cfg: DetectorConfig) -> float:
    """Signed strength of bar ``i`` against baseline bars ``idx`` (0: too thin)."""
    cap, price = logs[i]
    if statistics.median(logs[j][0] for j in idx) < math.log1p(cfg.min_depth):
        return 0.0
    z_cap = _robust_z(cap, [logs[j][0] for j in idx], cfg.capacity_floor)
    prices = [p for j in idx if (p := logs[j][1]) is not None]
    if price is None or len(prices) < cfg.min_baseline:
        return z_cap
    z_price = _robust_z(price, prices, cfg.price_floor)
    return (z_cap - z_price) / math.sqrt(2.0)


@dataclass
class _Open:
    kind: str
    start: float
    detected_at: float
    peak: float
    last: float
    below: int = 0
    below_since: float = 0.0


def _confirmed(run: list[float], cfg: DetectorConfig) -> bool:
    last = [abs(x) for x in run[-cfg.confirm_bars:]]
    if len(last) == cfg.confirm_bars and min(last) >= cfg.open_z:
        return True
    return cfg.strong_z is not None and last[-1] >= cfg.strong_z


def detect(sku: str, bars: Sequence[Observation], cfg: DetectorConfig | None = None
           ) -> list[Signal]:
    """Episodes in one SKU's bars (in time order); the last may be open."""
    cfg = cfg or DetectorConfig()
    logs = [_logs(b) for b in bars]
    flagged = [False] * len(bars)
    out: list[Signal] = []
    run: list[float] = []  # strengths of the current candidate run (same sign)
    run_start = 0.0
    ep: _Open | None = None
    for i, bar in enumerate(bars):
        if i < cfg.min_baseline:
            continue
        s = _strength(logs, _baseline(logs, flagged, i, cfg), i, cfg)
        if ep is not None:
            signed = s if ep.kind == "glut" else -s
            flagged[i] = True
            ep.last, ep.peak = signed, max(ep.peak, signed)
            if signed < cfg.close_z:
                ep.below_since = bar.t if ep.below == 0 else ep.below_since
                ep.below += 1
                if ep.below >= cfg.close_bars:
                    out.append(Signal(sku, ep.kind, ep.start, ep.below_since, abs(signed),
                                      ep.peak, ep.detected_at))
                    ep = None
            else:
                ep.below = 0
            continue
        if abs(s) >= cfg.open_z:
            flagged[i] = True
            if run and (run[-1] > 0) != (s > 0):
                run = []
            if not run:
                run_start = bar.t
            run.append(s)
            if _confirmed(run, cfg):
                kind = "glut" if s > 0 else "surge"
                ep = _Open(kind, run_start, bar.t, max(abs(x) for x in run), abs(s))
                run = []
        else:
            run = []
    if ep is not None:
        out.append(Signal(sku, ep.kind, ep.start, None, ep.last, ep.peak, ep.detected_at))
    return out


def detect_market(series: Mapping[str, Sequence[Observation]],
                  cfg: DetectorConfig | None = None) -> list[Signal]:
    """Episodes of every SKU, ordered by start time then SKU."""
    found = [s for sku in sorted(series) for s in detect(sku, series[sku], cfg)]
    return sorted(found, key=lambda s: (s.start, s.sku))


class EpisodeLike(Protocol):
    """A true episode to score against (``cambist.market.synth.Episode`` or the
    simulator's ground truth)."""

    @property
    def sku(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Score:
    """How detected signals compare with the truth."""

    detected: int
    true: int
    precision: float
    recall: float
    lags: tuple[float, ...]
    """Detection lag of each matched true episode (its first match), in whole
    bars from the first bar at or after its start to the confirming bar."""

    @property
    def max_lag(self) -> float:
        return max(self.lags, default=0.0)

    @property
    def median_lag(self) -> float:
        return statistics.median(self.lags) if self.lags else 0.0


def _overlaps(s: Signal, e: EpisodeLike) -> bool:
    end = math.inf if s.end is None else s.end
    return s.sku == e.sku and s.kind == e.kind and s.start < e.end and e.start < end


def score_signals(signals: Iterable[Signal], episodes: Iterable[EpisodeLike],
                  bar_s: float) -> Score:
    """Precision, recall and lags: a signal matches a true episode of the same
    SKU and kind when their intervals overlap."""
    sigs, eps = list(signals), list(episodes)
    hit = sum(1 for s in sigs if any(_overlaps(s, e) for e in eps))
    lags = []
    for e in eps:
        matched = [s for s in sigs if _overlaps(s, e)]
        if matched:
            first = min(matched, key=lambda s: s.detected_at)
            # whole bars from the first bar that could see the episode
            lags.append(float(max(0, math.floor((first.detected_at - e.start) / bar_s + 1e-9))))
    return Score(
        detected=len(sigs), true=len(eps),
        precision=hit / len(sigs) if sigs else 1.0,
        recall=len(lags) / len(eps) if eps else 1.0,
        lags=tuple(lags),
    )
