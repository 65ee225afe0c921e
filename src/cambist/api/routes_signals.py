"""``/v1/market/signals`` (gluts and surges) and ``/v1/market/forecast`` (price
forecasts with bands), computed on request from the market's recent history.

History comes from whichever source reaches further back over the span
asked for: the stored OHLC rollups (:mod:`cambist.market.bar_series`: 8 days
of minute bars, every hourly bar, one indexed query), or a replay of the offer
event log against the current book (:func:`cambist.market.replay.replay_bars`:
exact, but capped at :data:`MAX_EVENTS` events, about an hour of a live
market). ``history_from`` in the answer says where the history starts and
``history_source`` which one was used. Any key may read market data. Money is
a string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from cambist.api.auth import control_plane, principal
from cambist.api.context import ControlPlane
from cambist.api.params import Timestamp
from cambist.domain.billing import Principal
from cambist.domain.errors import Conflict, InvalidRequest
from cambist.domain.sku import family_of
from cambist.market.bar_series import sku_observations
from cambist.market.forecast import SEASON, forecast_prices
from cambist.market.replay import replay_bars
from cambist.market.signals import DetectorConfig, Observation, Signal, detect_market

__all__ = ["MAX_EVENTS", "router"]

router = APIRouter(prefix="/v1", tags=["signals"])

MAX_EVENTS = 200_000
"""Most offer events read per request (a live market logs ~50 a second)."""
_DAY = 86400.0
_HORIZONS = {"24h": 24, "7d": 168}
_FORECAST_SPAN_S = 28 * _DAY
_DETECTOR = DetectorConfig()


@dataclass(frozen=True, slots=True)
class _History:
    series: dict[str, list[Observation]]
    covered_from: float
    now: float
    source: str


async def _history(cp: ControlPlane, span_s: float, bar_s: float) -> _History:
    """Observations per SKU over the last ``span_s`` from the source reaching further."""
    now = cp.clock.now()
    start = now - span_s
    stored, stored_from = await sku_observations(cp.db, bar_s, start, now)
    rows = await cp.events.read(kind="offer.", since=start, limit=MAX_EVENTS, latest=True)
    replay_from = start  # an uncapped read holds every event of the span: exact
    if len(rows) >= MAX_EVENTS:
        replay_from = max(start, float(rows[0]["ts"]))
    if stored and stored_from is not None and stored_from < replay_from:
        return _History(stored, max(start, stored_from), now, "bars")
    series = replay_bars(cp.book.all_offers(), rows, start=replay_from, now=now, bar_s=bar_s)
    return _History(series, replay_from, now, "events")


def _matching(keys: list[str], gpu: str | None) -> list[str]:
    if gpu is None:
        return sorted(keys)
    want = gpu.strip().lower()
    exact = [k for k in keys if k.lower() == want]
    return exact or sorted(k for k in keys if family_of(k).lower() == family_of(gpu).lower())


def _signal_json(s: Signal) -> dict[str, Any]:
    return {"sku": s.sku, "kind": s.kind, "start": s.start, "end": s.end,
            "ongoing": s.end is None, "strength": round(s.strength, 3),
            "peak_strength": round(s.peak_strength, 3), "detected_at": s.detected_at}


@router.get("/market/signals")
async def signals(
    cp: Annotated[ControlPlane, Depends(control_plane)],
    _: Annotated[Principal, Depends(principal)],
    gpu: str | None = None,
    since: Timestamp = None,
    bar_s: Annotated[int, Query(ge=10, le=86400)] = 300,
) -> dict[str, Any]:
    """Gluts and surges per SKU that were open at or after ``since`` (default:
    the last 24 h), on bars of ``bar_s`` seconds (definitions in
    :mod:`cambist.market.signals`)."""
    now = cp.clock.now()
    since = now - _DAY if since is None else since
    if since > now:
        raise InvalidRequest("since is in the future", param="since")
    warmup = (_DETECTOR.lookback + _DETECTOR.min_baseline) * bar_s
    span = min(now - since + warmup, _FORECAST_SPAN_S)
    h = await _history(cp, span, bar_s)
    keys = _matching(list(h.series), gpu)
    found = detect_market({k: h.series[k] for k in keys}, _DETECTOR)
    data = [_signal_json(s) for s in found if s.end is None or s.end >= since]
    return {"object": "list", "as_of": h.now, "bar_s": bar_s, "since": since,
            "history_from": h.covered_from, "history_source": h.source, "skus": keys,
            "data": data}


def _hourly(points: list[Observation]) -> tuple[list[float], list[Any]]:
    """Times and prices, gaps (no listing) filled with the last price."""
    times, prices, last = [], [], None
    for p in points:
        last = p.price if p.price is not None else last
        if last is not None:
            times.append(p.t)
            prices.append(last)
    return times, prices


@router.get("/market/forecast")
async def forecast(
    cp: Annotated[ControlPlane, Depends(control_plane)],
    _: Annotated[Principal, Depends(principal)],
    gpu: str,
    horizon: Literal["24h", "7d"] = "24h",
) -> dict[str, Any]:
    """The SKU's hourly price index (median on-demand list price per GPU-hour)
    forecast ``horizon`` ahead with 80% and 95% bands (see
    :mod:`cambist.market.forecast`). 409 until 3 days of history exist."""
    h = await _history(cp, _FORECAST_SPAN_S, 3600.0)
    series, covered, now = h.series, h.covered_from, h.now
    keys = _matching(list(series), gpu)
    if not keys:
        raise InvalidRequest(f"no market data for GPU {gpu!r}", param="gpu")
    if len(keys) > 1:
        raise InvalidRequest(f"{gpu!r} names several SKUs; pick one of: {', '.join(keys)}",
                             param="gpu")
    times, prices = _hourly(series[keys[0]])
    if len(times) < 3 * SEASON:
        raise Conflict(f"a forecast needs {3 * SEASON} hours of price history for {keys[0]}; "
                       f"{len(times)} are available (history from {covered:.0f})")
    points = forecast_prices(times, prices, _HORIZONS[horizon])
    return {
        "object": "forecast", "sku": keys[0], "horizon": horizon, "as_of": now,
        "history_from": covered, "history_source": h.source, "history_hours": len(times),
        "data": [{"t": p.t, "price": str(p.price), "lower80": str(p.lower80),
                  "upper80": str(p.upper80), "lower95": str(p.lower95),
                  "upper95": str(p.upper95)} for p in points],
    }
