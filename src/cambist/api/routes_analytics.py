"""``/v1/analytics/*``: utilization, margins, spread and cost per token, live
from the store. An admin sees the platform; a tenant key only its own tenant."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from cambist.analytics import margins as margins_query
from cambist.analytics import resolve_window
from cambist.analytics import summary as summary_query
from cambist.analytics import utilization as utilization_query
from cambist.api.auth import control_plane, principal, resolve_tenant
from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.domain.money import quantize_usd

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["analytics"])

_RATIOS = frozenset({"compute_margin", "effective_margin"})


# What the platform pays for compute, and so its margin, is the operator's
# business: tenant keys see their spend and usage, not the platform's costs.
_OPERATOR_ONLY = ("cost", "margin", "spread", "idle")


def _for(p: Principal, value: Any) -> Any:
    """``value`` as ``p`` may see it: operator-only figures removed for tenants."""
    if p.is_admin:
        return value
    if isinstance(value, dict):
        return {k: _for(p, v) for k, v in value.items()
                if not any(word in k for word in _OPERATOR_ONLY)}
    if isinstance(value, list):
        return [_for(p, v) for v in value]
    return value


def _jsonable(value: Any, key: str = "") -> Any:
    """Money as strings (micro-dollars), margin ratios as numbers, floats rounded."""
    if isinstance(value, dict):
        return {k: _jsonable(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return round(float(value), 6) if key in _RATIOS else str(quantize_usd(value))
    if isinstance(value, float):
        return round(value, 6)
    return value


@router.get("/analytics/summary")
async def summary(cp: Annotated[ControlPlane, Depends(control_plane)],
                  p: Annotated[Principal, Depends(principal)],
                  since: str | None = None, until: str | None = None,
                  tenant: str | None = None) -> dict:
    """Revenue, compute and effective cost and margins, platform utilization
    and lease/idle cost (admin), and per-tenant utilization over the window
    (``since``/``until``: epoch seconds or durations such as ``24h``)."""
    t = resolve_tenant(p, tenant)
    window = resolve_window(since, until, cp.clock.now())
    return _for(p, _jsonable(await summary_query(cp.db, window, t)))


@router.get("/analytics/utilization")
async def utilization(cp: Annotated[ControlPlane, Depends(control_plane)],
                      p: Annotated[Principal, Depends(principal)],
                      since: str | None = None, until: str | None = None,
                      by: str = "endpoint", tenant: str | None = None) -> dict:
    """Busy over available capacity ``by`` endpoint, deployment or tenant."""
    t = resolve_tenant(p, tenant)
    window = resolve_window(since, until, cp.clock.now())
    return _for(p, _jsonable(await utilization_query(cp.db, window, by, t)))


@router.get("/analytics/margins")
async def margins(cp: Annotated[ControlPlane, Depends(control_plane)],
                  p: Annotated[Principal, Depends(principal)],
                  since: str | None = None, until: str | None = None,
                  by: str = "model", tenant: str | None = None) -> dict:
    """Revenue, spread, compute and effective margin, cost per Mtok and per
    query ``by`` model, tenant, supplier or endpoint."""
    t = resolve_tenant(p, tenant)
    window = resolve_window(since, until, cp.clock.now())
    return _for(p, _jsonable(await margins_query(cp.db, window, by, t)))
