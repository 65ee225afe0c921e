"""Synthetic market histories with known answers, for tests and benchmarks.

Two generators, both pure (a seeded ``random.Random`` in, values out), so the
glut/surge detector and the price forecaster can be scored on seeds and
parameters they were never tuned on:

- :func:`synth_bars` gives one SKU's bar series ``(t, price, available)``
  with labelled episodes: a *glut* (capacity jumps up, the price sags)
  or a *surge* (capacity drains, the price spikes), each with a short
  ramp, on top of a noisy baseline (log-normal capacity noise around a slowly
  drifting level, an Ornstein-Uhlenbeck log price, and isolated one-bar
  outliers that a detector must not mistake for an episode).
- :func:`price_index` gives an hourly price index for one of four price
  processes the simulated suppliers do *not* use (they are mean-reverting
  around a fixed base): ``mean_reverting`` (fast reversion to a level that
  itself wanders), ``trending`` (a persistent drift that changes slope every
  few days), ``regime_switching`` (a two-state Markov chain between a calm and
  a tight market with different levels and volatilities) and ``jumpy``
  (a random walk with rare large jumps that decay back). Every family carries
  a daily cycle of random amplitude and phase (demand follows working hours).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from cambist.market.signals import Observation

__all__ = [
    "PROCESSES",
    "BarParams",
    "Episode",
    "Process",
    "price_index",
    "synth_bars",
]

Process = Literal["mean_reverting", "trending", "regime_switching", "jumpy"]
PROCESSES: tuple[Process, ...] = ("mean_reverting", "trending", "regime_switching", "jumpy")
_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class Episode:
    """A true glut or surge: ``kind`` is ``"glut"`` or ``"surge"``; ``end`` exclusive."""

    sku: str
    kind: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class BarParams:
    """Parameters of :func:`synth_bars`; durations are in bars."""

    bars: int = 600
    bar_s: float = 3600.0
    episodes_per_100_bars: float = 2.0
    duration: tuple[int, int] = (4, 24)
    ramp_bars: int = 1
    capacity: float = 400.0
    capacity_noise: float = 0.08
    """Per-bar log-normal standard deviation of available capacity."""
    price: float = 2.0
    price_volatility: float = 0.03
    """Stationary standard deviation of the log price."""
    price_half_life_bars: float = 12.0
    outlier_rate: float = 0.02
    """Chance per bar of a one-bar outlier (capacity x/÷2, price ±12%)."""
    glut_capacity: tuple[float, float] = (1.7, 2.6)
    glut_price: tuple[float, float] = (0.72, 0.86)
    surge_capacity: tuple[float, float] = (0.15, 0.4)
    surge_price: tuple[float, float] = (1.18, 1.45)
    gap_bars: int = 12
    """Quiet bars at least between two episodes (and before the first)."""


def _schedule(p: BarParams, rng: random.Random) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    k = p.gap_bars * 3  # a baseline to compare with before anything happens
    rate = p.episodes_per_100_bars / 100.0
    while k < p.bars:
        k += 1 + int(rng.expovariate(rate)) if rate > 0 else p.bars
        length = rng.randint(*p.duration)
        if k + length >= p.bars:
            break
        out.append((k, k + length, "glut" if rng.random() < 0.5 else "surge"))
        k += length + p.gap_bars
    return out


def _effect(p: BarParams, i: int, spans: list[tuple[int, int, str, float, float]]
            ) -> tuple[float, float]:
    """(log capacity shift, log price shift) at bar ``i``."""
    for start, end, _kind, cap, price in spans:
        if start <= i < end:
            ramp = min(1.0, (i - start + 1) / max(1, p.ramp_bars))
            return ramp * math.log(cap), ramp * math.log(price)
    return 0.0, 0.0


def synth_bars(sku: str, p: BarParams, rng: random.Random, *, t0: float = 0.0
               ) -> tuple[list[Observation], list[Episode]]:
    """A bar series for ``sku`` and its true episodes (times are bar starts)."""
    plan = _schedule(p, rng)
    spans = []
    for start, end, kind in plan:
        if kind == "glut":
            spans.append((start, end, kind, rng.uniform(*p.glut_capacity),
                          rng.uniform(*p.glut_price)))
        else:
            spans.append((start, end, kind, rng.uniform(*p.surge_capacity),
                          rng.uniform(*p.surge_price)))
    decay = math.exp(-math.log(2) / p.price_half_life_bars)
    x, level = 0.0, 0.0
    bars: list[Observation] = []
    for i in range(p.bars):
        level += rng.gauss(0.0, 0.01)  # slow drift of the capacity baseline
        x = x * decay + p.price_volatility * math.sqrt(1 - decay * decay) * rng.gauss(0, 1)
        dcap, dprice = _effect(p, i, spans)
        cap_log = level + dcap + rng.gauss(0.0, p.capacity_noise)
        price_log = x + dprice
        if rng.random() < p.outlier_rate:
            cap_log += math.log(2) * rng.choice((-1, 1))
            price_log += 0.12 * rng.choice((-1, 1))
        price = Decimal(f"{p.price * math.exp(price_log):.6f}").quantize(_QUANTUM)
        bars.append(Observation(t0 + i * p.bar_s, price,
                                max(0, round(p.capacity * math.exp(cap_log)))))
    episodes = [Episode(sku, kind, t0 + s * p.bar_s, t0 + e * p.bar_s) for s, e, kind in plan]
    return bars, episodes


def _daily(hour: int, amplitude: float, phase: float) -> float:
    day = 2 * math.pi * (hour % 24) / 24.0
    return amplitude * (math.sin(day + phase) + 0.35 * math.sin(2 * day + 2 * phase))


def price_index(process: Process, hours: int, level: float, rng: random.Random,
                *, volatility: float = 1.0) -> list[float]:
    """An hourly price index (``hours`` values) around ``level`` for ``process``.

    ``volatility`` scales every noise term (1.0: a marketplace-like GPU).
    The result is a float series: it is an estimate, not an amount of money.
    """
    if level <= 0 or hours <= 0:
        raise ValueError("level and hours must be > 0")
    v = volatility
    amplitude = rng.uniform(0.02, 0.07) * v
    phase = rng.uniform(0, 2 * math.pi)
    noise = rng.uniform(0.008, 0.02) * v
    out = []
    x, drift, state, jump, anchor = 0.0, 0.0, 0, 0.0, 0.0
    decay = math.exp(-math.log(2) / rng.uniform(6.0, 24.0))
    for h in range(hours):
        if process == "mean_reverting":
            anchor += rng.gauss(0.0, 0.002 * v)
            x = anchor + (x - anchor) * decay + rng.gauss(0.0, 0.02 * v)
        elif process == "trending":
            if h % rng.choice((72, 96, 120)) == 0:
                drift = rng.uniform(-0.0015, 0.0015) * v
            x += drift + rng.gauss(0.0, 0.006 * v)
        elif process == "regime_switching":
            if rng.random() < 1 / 60.0:
                state = 1 - state
            target = 0.18 * v if state else 0.0
            x = target + (x - target) * 0.8 + rng.gauss(0.0, (0.03 if state else 0.01) * v)
        else:  # jumpy
            if rng.random() < 1 / 80.0:
                jump += rng.choice((-1, 1)) * rng.uniform(0.08, 0.25) * v
            jump *= 0.97
            x += rng.gauss(0.0, 0.004 * v)
        x = max(-1.5, min(1.5, x))
        out.append(level * math.exp(x + jump + _daily(h, amplitude, phase)
                                    + rng.gauss(0.0, noise)))
    return out
