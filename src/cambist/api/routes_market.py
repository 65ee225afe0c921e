"""``/v1/market``: the normalized offer book."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from cambist.api.auth import control_plane, principal
from cambist.api.context import ControlPlane
from cambist.api.serialize import offer_json
from cambist.deploy.leasing import check_gpu_name
from cambist.domain.billing import Principal
from cambist.domain.errors import InvalidRequest
from cambist.domain.models import MODEL_CATALOG, find_model
from cambist.domain.offer import OfferQuery
from cambist.placement.rank import quote

__all__ = ["router"]

router = APIRouter(prefix="/v1/market", tags=["market"])


@router.get("/offers")
async def list_offers(
    cp: Annotated[ControlPlane, Depends(control_plane)],
    _: Annotated[Principal, Depends(principal)],
    gpu: str | None = None,
    count: Annotated[int | None, Query(ge=1)] = None,
    min_vram: Annotated[float | None, Query(ge=0)] = None,
    region: str | None = None,
    max_price: Annotated[Decimal | None, Query(ge=0)] = None,
    supplier: str | None = None,
    spot: bool | None = None,
    sort: Literal["price", "price-per-token"] = "price",
    model: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict:
    """Offers from every supplier, normalized; with ``model``, priced in $/Mtok."""
    if gpu:
        check_gpu_name(gpu)
    spec = None
    if model is not None:
        spec = find_model(model)
        if spec is None:
            raise InvalidRequest(f"unknown model {model!r}; catalog: "
                                 f"{', '.join(sorted(MODEL_CATALOG))}", param="model")
    elif sort == "price-per-token":
        raise InvalidRequest("sort=price-per-token needs a model (--model)", param="sort")
    now = cp.clock.now()
    offers = cp.book.query(OfferQuery(gpu=gpu, count=count, min_vram_gib=min_vram, region=region,
                                      max_price_per_gpu_hour=max_price, supplier=supplier,
                                      spot=spot), now)
    if spec is None:
        rows = [offer_json(o) for o in offers]
    else:
        quotes = [quote(o, spec, cp.perf) for o in offers]
        if sort == "price-per-token":
            quotes.sort(key=lambda q: (q.cost_per_mtok is None, q.cost_per_mtok or 0, q.offer.id))
        rows = [offer_json(q.offer, q) for q in quotes]
    return {"object": "list", "as_of": now, "suppliers": cp.book.suppliers(),
            "data": rows[:limit], "total": len(rows)}
