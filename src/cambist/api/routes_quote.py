"""``/v1/market/quote``: the cheapest ways to serve a model now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from cambist.api.auth import control_plane, principal
from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.domain.errors import InvalidRequest
from cambist.domain.models import MODEL_CATALOG, find_model
from cambist.domain.money import quantize_usd
from cambist.domain.offer import OfferQuery
from cambist.placement.options import ServingOption, serving_options

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["quote"])


def _option_json(s: ServingOption) -> dict[str, Any]:
    o = s.offer
    return {
        "offer_id": o.id, "supplier": o.supplier, "sku": o.sku, "gpu_count": o.gpu_count,
        "region": o.region, "spot": o.spot, "available": o.available,
        "price_per_hour": str(o.price_per_hour), "replicas": s.replicas,
        "cost_per_hour": str(s.cost_per_hour),
        "cost_per_mtok": str(quantize_usd(s.cost_per_mtok)),
        "tokens_per_s_per_replica": round(s.tokens_per_s, 1), "ttft_ms": round(s.ttft_ms, 1),
        "headroom": None if s.headroom is None else round(s.headroom, 4),
    }


@router.get("/market/quote")
async def market_quote(
    cp: Annotated[ControlPlane, Depends(control_plane)],
    _: Annotated[Principal, Depends(principal)],
    model: str,
    tokens_per_second: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    ttft_ms: Annotated[float | None, Query(gt=0, allow_inf_nan=False)] = None,
    region: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """Offers that can serve ``model``, sized for ``tokens_per_second``, cheapest first."""
    spec = find_model(model)
    if spec is None:
        raise InvalidRequest(f"unknown model {model!r}; catalog: "
                             f"{', '.join(sorted(MODEL_CATALOG))}", param="model")
    now = cp.clock.now()
    options = serving_options(cp.book.query(OfferQuery(), now), spec, cp.perf,
                              tokens_per_s=tokens_per_second, ttft_ms=ttft_ms, region=region)
    return {"object": "list", "as_of": now, "model": spec.name,
            "tokens_per_second": tokens_per_second, "ttft_ms": ttft_ms, "region": region,
            "data": [_option_json(s) for s in options[:limit]], "total": len(options)}
