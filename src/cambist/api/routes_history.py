"""``/v1/market/prices``, ``/v1/market/trades``, ``/v1/market/summary``: the price
history (definitions in :mod:`cambist.market.bars` and
:mod:`cambist.market.history_queries`). Any key may read market data; trades
name their lease and tenant only to admin keys. Money is a string."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from cambist.api.auth import control_plane, principal
from cambist.api.context import ControlPlane
from cambist.api.params import Timestamp
from cambist.domain.billing import Principal
from cambist.domain.errors import InvalidRequest
from cambist.domain.money import quantize_usd
from cambist.domain.sku import known_skus
from cambist.market.bars import ALL, INTERVALS, Bar
from cambist.market.history_queries import (
    SkuSummary,
    Trade,
    check_interval,
    history_skus,
    market_summary,
    price_bars,
    recent_trades,
    skus_matching,
)
from cambist.market.history_store import Series

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["history"])

_DEFAULT_SPAN = {"1m": 6 * 3600, "1h": 7 * 86400, "1d": 90 * 86400}
_MAX_BARS = 20_000


def _usd(v: Decimal | None) -> str | None:
    return None if v is None else str(quantize_usd(v))


def _bar_json(series: Series, bar: Bar) -> dict[str, Any]:
    sku, region, supplier = series
    return {
        "sku": sku, "region": None if region == ALL else region,
        "supplier": None if supplier == ALL else supplier, "start": bar.start, "end": bar.end,
        "open": _usd(bar.open), "high": _usd(bar.high), "low": _usd(bar.low),
        "close": _usd(bar.close), "close_at": bar.close_at, "observations": bar.observations,
        "available_gpus": bar.available_gpus,
        "volume_gpu_hours": round(bar.volume_gpu_hours, 6), "trades": bar.trades,
    }


def _summary_json(s: SkuSummary) -> dict[str, Any]:
    return {
        "sku": s.sku, "best_price": _usd(s.best_price), "median_price": _usd(s.median_price),
        "change_24h_pct": None if s.change_24h_pct is None else str(s.change_24h_pct),
        "available_gpus": s.available_gpus, "last_seen": s.last_seen,
        "hourly_closes": [{"start": t, "close": _usd(c)} for t, c in s.hourly_closes],
    }


def _trade_json(t: Trade, admin: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "sku": t.sku, "gpu_name": t.gpu_name, "region": t.region, "supplier": t.supplier,
        "gpu_count": t.gpu_count, "spot": t.spot, "price_per_hour": _usd(t.price_per_hour),
        "price_per_gpu_hour": _usd(t.price_per_gpu_hour), "start": t.started_at,
        "end": t.ended_at, "duration_s": round(t.duration_s, 3), "state": t.state,
    }
    if admin:
        d["lease_id"], d["owner"] = t.lease_id, t.owner
    return d


async def _resolve_sku(cp: ControlPlane, gpu: str) -> str:
    pool = set(known_skus()) | set(await history_skus(cp.db))
    found = skus_matching(gpu, pool)
    if len(found) == 1:
        return found[0]
    if found:
        raise InvalidRequest(f"{gpu!r} is a GPU family; name one SKU: {', '.join(found)}",
                             param="gpu")
    raise InvalidRequest(f"unknown GPU {gpu!r}; known SKUs: {', '.join(sorted(pool))}",
                         param="gpu")


@router.get("/market/prices")
async def prices(
    cp: Annotated[ControlPlane, Depends(control_plane)],
    _: Annotated[Principal, Depends(principal)],
    gpu: str,
    interval: str = "1h",
    since: Timestamp = None,
    until: Timestamp = None,
    supplier: str | None = None,
    region: str | None = None,
) -> dict:
    """OHLC bars of one SKU: overall, or per market with ``supplier``/``region``."""
    iv = check_interval(interval)
    sku = await _resolve_sku(cp, gpu)
    end = cp.clock.now() if until is None else until
    start = end - _DEFAULT_SPAN[interval] if since is None else since
    if start > end:
        raise InvalidRequest("since must not be after until", param="since")
    if (end - start) / iv > _MAX_BARS:
        raise InvalidRequest(f"that span holds over {_MAX_BARS} {interval} bars; narrow "
                             f"since/until or use a coarser interval ({', '.join(INTERVALS)})",
                             param="since")
    rows = await price_bars(cp.db, sku, iv, start, end, supplier=supplier, region=region)
    return {"object": "list", "gpu": sku, "interval": interval, "since": start, "until": end,
            "data": [_bar_json(s, b) for s, b in rows]}


@router.get("/market/trades")
async def trades(
    cp: Annotated[ControlPlane, Depends(control_plane)],
    p: Annotated[Principal, Depends(principal)],
    gpu: str | None = None,
    since: Timestamp = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> dict:
    """Leases as trades, newest first; lease id and owner only for admin keys."""
    skus = None
    if gpu is not None:
        skus = skus_matching(gpu, set(known_skus()) | set(await history_skus(cp.db)))
        if not skus:
            raise InvalidRequest(f"unknown GPU {gpu!r}; see 'cambist market' for SKUs",
                                 param="gpu")
    rows = await recent_trades(cp.db, cp.clock.now(), skus=skus, since=since, limit=limit)
    return {"object": "list", "data": [_trade_json(t, p.is_admin) for t in rows]}


@router.get("/market/summary")
async def summary(cp: Annotated[ControlPlane, Depends(control_plane)],
                  _: Annotated[Principal, Depends(principal)]) -> dict:
    """Per SKU: best and median price now, 24 h change, available GPUs, hourly closes."""
    s = await market_summary(cp.db, cp.clock.now())
    return {"object": "list", "as_of": s.as_of, "data": [_summary_json(x) for x in s.skus]}
