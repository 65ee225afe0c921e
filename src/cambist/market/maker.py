"""The market-maker book's decisions: what capacity to reserve, when, how much.

The book buys *term* capacity (a unit held for a day or a week at a discount
to the on-demand price, locked for the term) ahead of forecast surges, so the
platform's own deployments run on it instead of paying surge prices or being
refused sold-out units; the hours its deployments leave unused are resold on
the exchange at the market price. This module is the pure decision logic: no
I/O, no clock, no supplier; the simulator (:mod:`cambist.sim.maker`) and,
later, the live exchange feed it quotes and observations and carry out its
orders.

A **surge forecast** per SKU comes from the real market code:

- the glut/surge detector (:func:`cambist.market.signals.detect`) run over
  the SKU's recent bars gives the surges seen and whether one is open now; the
  rate of surges per day, taken as a Poisson rate, gives the probability of
  at least one surge within a term;
- the price forecaster (:func:`cambist.market.forecast.forecast_prices`, once
  four days of bars exist) gives the expected price level over the term, so
  a term price is only taken below what the spot market is expected to cost.

The **decision** (:func:`decide`), for each unit class (SKU x GPUs per unit)
the platform's deployments use:

1. never while a surge of the SKU is open (term prices are set from the
   current, inflated price: buy ahead of surges, not into them);
2. only terms no longer than ``max_term_s`` whose surge probability is at
   least ``min_surge_probability`` (no forecast surge, no reservation) and
   whose price per GPU-hour is below the forecast level;
3. up to ``cover`` x the class's base load (the fewest units the deployments
   held over the last day, a conservative forecast of what they will surely
   use) minus the units already reserved, cheapest quote per hour first, no
   more than the quote's free units;
4. while the book's committed money (the unexpired hours of every
   reservation at its price) stays within ``max_inventory_usd``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from cambist.market.forecast import SEASON, forecast_prices
from cambist.market.signals import DetectorConfig, Observation, detect

__all__ = [
    "BookConfig",
    "Holding",
    "Order",
    "SurgeOutlook",
    "TermQuote",
    "committed",
    "decide",
    "surge_outlook",
    "unit_class",
]

_HOUR = Decimal(3600)
_DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class BookConfig:
    """The book's switches and risk limits (parsed from the scenario or live config)."""

    enabled: bool = False
    max_inventory_usd: Decimal = Decimal(5000)
    """Most money committed at once: unexpired reserved hours x their price."""
    max_term_s: float = 7 * _DAY_S
    """Longest term the book may buy."""
    min_surge_probability: float = 0.5
    """Reserve only when a surge within the term is at least this likely."""
    cover: float = 1.0
    """Share of the deployments' base load to hold in reserved units."""
    lookback_s: float = 4 * _DAY_S
    """Bars the detector and the forecaster look back over (the forecaster needs 4 days)."""
    resale_fill: float = 0.5
    """Share of idle reserved time that finds a buyer at the market price (no surge)."""
    surge_resale_fill: float = 1.0
    """The same during a detected surge of the SKU (buyers queue for scarce units)."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_inventory_usd, Decimal) or self.max_inventory_usd < 0:
            raise ValueError("max_inventory_usd must be a Decimal >= 0")
        if self.max_term_s <= 0 or self.lookback_s < 12 * 3600:
            raise ValueError("max_term_s must be > 0 and lookback_s at least 12 hours")
        for name in ("min_surge_probability", "resale_fill", "surge_resale_fill"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if not 0.0 <= self.cover <= 4.0:
            raise ValueError("cover must be in [0, 4]")


@dataclass(frozen=True, slots=True)
class TermQuote:
    """A supplier's price for one unit of an offer held for ``term_s`` seconds."""

    offer_id: str
    supplier: str
    sku: str
    gpu_count: int
    term_s: float
    price_per_hour: Decimal
    """Whole unit, locked for the term."""
    available: int
    """Units of the offer free now."""

    @property
    def unit_class(self) -> str:
        return unit_class(self.sku, self.gpu_count)

    @property
    def cost(self) -> Decimal:
        """What one unit costs for the whole term."""
        return self.price_per_hour * Decimal(repr(self.term_s)) / _HOUR


@dataclass(frozen=True, slots=True)
class SurgeOutlook:
    """What the market data says about a SKU's surges and price ahead."""

    sku: str
    surges_per_day: float
    """Surges the detector found per day of the lookback."""
    open: bool
    """A surge of the SKU is in progress now."""
    level_per_gpu_hour: Decimal | None
    """Expected price level over the coming day (forecast; else the latest level)."""

    def probability(self, horizon_s: float) -> float:
        """Chance of at least one surge within ``horizon_s`` (Poisson at the seen rate)."""
        if self.open:
            return 1.0
        return 1.0 - math.exp(-self.surges_per_day * max(0.0, horizon_s) / _DAY_S)


@dataclass(frozen=True, slots=True)
class Holding:
    """A reservation the book holds: one unit of a class until ``end``."""

    unit_class: str
    start: float
    end: float
    price_per_hour: Decimal

    def committed(self, now: float) -> Decimal:
        """Money still committed at ``now``: its unexpired hours at its price."""
        left = max(0.0, self.end - max(now, self.start))
        return self.price_per_hour * Decimal(repr(left)) / _HOUR


@dataclass(frozen=True, slots=True)
class Order:
    """Reserve ``units`` units on ``quote``'s terms."""

    quote: TermQuote
    units: int

    @property
    def cost(self) -> Decimal:
        return self.quote.cost * self.units


def unit_class(sku: str, gpu_count: int) -> str:
    """The class of interchangeable units: same SKU, same GPUs per unit."""
    return f"{sku}x{gpu_count}"


def committed(holdings: Sequence[Holding], now: float) -> Decimal:
    """Money the book has committed at ``now``."""
    return sum((h.committed(now) for h in holdings), Decimal(0))


def surge_outlook(sku: str, bars: Sequence[Observation], now: float,
                  detector: DetectorConfig | None = None) -> SurgeOutlook:
    """The SKU's surge rate and expected price from its hourly ``bars`` up to
    ``now`` (the real detector and, with four days of bars, the forecaster)."""
    if not bars:
        return SurgeOutlook(sku, 0.0, False, None)
    surges = [s for s in detect(sku, bars, detector) if s.kind == "surge"]
    span_days = max((now - bars[0].t) / _DAY_S, 1.0 / 24)
    is_open = any(s.end is None for s in surges)
    priced = [(b.t, b.price) for b in bars if b.price is not None and b.price > 0]
    level: Decimal | None = priced[-1][1] if priced else None
    # The forecaster needs three whole days once the series is rotated to midnight.
    if len(priced) >= 4 * SEASON:
        ahead = forecast_prices([t for t, _ in priced], [p for _, p in priced], SEASON)
        level = sum((p.price for p in ahead), Decimal(0)) / len(ahead)
    return SurgeOutlook(sku, len(surges) / span_days, is_open, level)


def _worth(q: TermQuote, outlook: SurgeOutlook, cfg: BookConfig) -> bool:
    if q.term_s > cfg.max_term_s or q.available <= 0 or outlook.open:
        return False
    if outlook.probability(q.term_s) < cfg.min_surge_probability:
        return False
    level = outlook.level_per_gpu_hour
    return level is not None and q.price_per_hour / q.gpu_count < level


def decide(now: float, quotes: Sequence[TermQuote], outlooks: Mapping[str, SurgeOutlook],
           holdings: Sequence[Holding], base_units: Mapping[str, int],
           cfg: BookConfig) -> list[Order]:
    """The reservations to make at ``now`` (see the module docstring).

    ``base_units``: unit class -> units the deployments surely use;
    ``holdings``: the book's reservations (expired ones are ignored)."""
    if not cfg.enabled:
        return []
    budget = cfg.max_inventory_usd - committed(holdings, now)
    held: dict[str, int] = {}
    for h in holdings:
        if h.start <= now < h.end:
            held[h.unit_class] = held.get(h.unit_class, 0) + 1
    orders: list[Order] = []
    for cls in sorted(base_units, key=lambda c: (-base_units[c], c)):
        want = math.floor(base_units[cls] * cfg.cover + 1e-9) - held.get(cls, 0)
        if want <= 0:
            continue
        fit = [q for q in quotes if q.unit_class == cls and q.sku in outlooks
               and _worth(q, outlooks[q.sku], cfg)]
        # Cheapest per hour first; a shorter term breaks a tie (less committed).
        for q in sorted(fit, key=lambda q: (q.price_per_hour, q.term_s, q.offer_id)):
            if want <= 0:
                break
            n = min(want, q.available, int(budget // q.cost) if budget > 0 < q.cost else 0)
            if n <= 0:
                continue
            orders.append(Order(q, n))
            budget -= q.cost * n
            want -= n
    return orders
