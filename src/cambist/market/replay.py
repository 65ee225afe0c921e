"""Per-SKU bar series rebuilt from the offer book and its change events.

The offer book holds only the latest snapshot; the event log holds every
change (``offer.added`` / ``offer.changed`` with the previous price and units
/ ``offer.removed``). Walking the events of a window *backwards* from the
current book undoes them one by one, so the book's state at any bar boundary
inside the window is exact, however long an offer went without changing:
an offer with no event in the window looked then as it looks now.

Each bar aggregates the book per market SKU (:func:`market_key`): the GPUs
available (units x GPUs per unit, spot included) and the SKU's price level,
the median on-demand list price per GPU-hour (sold-out listings included).
The median, not the cheapest offer: the cheapest jumps whenever that one
offer sells out or is withdrawn, which says nothing about the market (on the
simulated market it tripled the detector's false alarms).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from cambist.domain.events import EventKind
from cambist.domain.offer import Offer
from cambist.domain.sku import family_of
from cambist.market.signals import Observation

__all__ = ["Row", "aggregate", "market_key", "replay_bars"]


def market_key(offer: Offer) -> str:
    """The SKU an offer trades under in market data: its canonical SKU, or its
    GPU family when the supplier's name could not be resolved (``"H100"``)."""
    return offer.sku or family_of(offer.gpu_name)


@dataclass(frozen=True, slots=True)
class Row:
    """What market data needs of one offer."""

    key: str
    price: Decimal
    available: int
    gpu_count: int
    spot: bool

    @classmethod
    def of(cls, offer: Offer) -> Row:
        return cls(market_key(offer), offer.price_per_gpu_hour, offer.available,
                   offer.gpu_count, offer.spot)

    @classmethod
    def from_event(cls, data: Mapping[str, Any], *, previous: bool = False) -> Row:
        """The offer as an event describes it (``previous``: before a change)."""
        sku = data.get("sku") or family_of(str(data.get("gpu_name", "")))
        price = data["previous_price_per_gpu_hour" if previous else "price_per_gpu_hour"]
        units = data["previous_available" if previous else "available"]
        return cls(str(sku), Decimal(str(price)), int(units), int(data.get("gpu_count", 1)),
                   bool(data.get("spot", False)))


def _level(prices: list[Decimal]) -> Decimal | None:
    return statistics.median(prices) if prices else None


def aggregate(rows: Iterable[Row], t: float) -> dict[str, Observation]:
    """One observation per SKU of a book state at ``t``."""
    units: dict[str, int] = {}
    listed: dict[str, list[Decimal]] = {}
    for r in rows:
        units[r.key] = units.get(r.key, 0) + max(0, r.available) * r.gpu_count
        listed.setdefault(r.key, [])
        if not r.spot:
            listed[r.key].append(r.price)
    return {k: Observation(t, _level(listed[k]), units[k]) for k in units}


def _undo(state: dict[str, Row], event: Mapping[str, Any]) -> None:
    kind, subject, data = event["kind"], str(event["subject"]), event["data"]
    if kind == EventKind.OFFER_ADDED:
        state.pop(subject, None)
    elif kind == EventKind.OFFER_CHANGED:
        state[subject] = Row.from_event(data, previous=True)
    elif kind == EventKind.OFFER_REMOVED:
        state[subject] = Row.from_event(data)


def replay_bars(current: Sequence[Offer], events: Sequence[Mapping[str, Any]], *,
                start: float, now: float, bar_s: float) -> dict[str, list[Observation]]:
    """Observations per SKU at every multiple of ``bar_s`` in ``[start, now]``.

    ``current`` is the book at ``now``; ``events`` (in time order) must hold
    every offer event after ``start`` (rows of ``EventLog.read``); bars
    before the first event given are only exact if nothing was left out, so
    pass ``start`` no earlier than the time the read is known to cover.
    """
    if bar_s <= 0:
        raise ValueError("bar_s must be > 0")
    state = {o.id: Row.of(o) for o in current}
    first = math.ceil(start / bar_s)
    boundaries = [k * bar_s for k in range(first, math.floor(now / bar_s) + 1)]
    out: dict[int, dict[str, Observation]] = {}
    i = len(events) - 1
    for k in range(len(boundaries) - 1, -1, -1):
        b = boundaries[k]
        while i >= 0 and float(events[i]["ts"]) > b:
            _undo(state, events[i])
            i -= 1
        out[k] = aggregate(state.values(), b)
    series: dict[str, list[Observation]] = {}
    for k in range(len(boundaries)):
        for key, obs in out[k].items():
            series.setdefault(key, []).append(obs)
    return series
