"""``/v1/catalog/models``: what can be deployed (``/v1/endpoints`` is in ``routes_endpoints``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from cambist.api.auth import control_plane, principal
from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.domain.models import MODEL_CATALOG
from cambist.domain.money import quantize_usd

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["catalog"])


@router.get("/catalog/models")
async def catalog(cp: Annotated[ControlPlane, Depends(control_plane)],
                  _: Annotated[Principal, Depends(principal)]) -> dict:
    """The built-in model catalog with the cheapest current $/Mtok for each."""
    rows = []
    for m in MODEL_CATALOG.values():
        quotes = cp.controller.quotes(m)
        best = quotes[0] if quotes else None
        rows.append({
            "id": m.name, "hf_id": m.hf_id, "params_b": m.params_b, "layers": m.layers,
            "kv_heads": m.kv_heads, "head_dim": m.head_dim, "precision": m.precision,
            "context_length": m.context_length, "reasoning": m.reasoning,
            "weight_gib": round(m.weight_bytes / 1024**3, 1), "description": m.description,
            "cheapest_offer": best.offer.id if best else None,
            "cheapest_sku": best.offer.sku if best else None,
            "cheapest_cost_per_mtok": (str(quantize_usd(best.cost_per_mtok))
                                       if best and best.cost_per_mtok else None),
        })
    return {"object": "list", "data": rows}
