"""``/v1/leases``: rent, list and release capacity."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cambist.api.auth import (
    authorize_owner,
    control_plane,
    principal,
    require_writer,
    resolve_tenant,
)
from cambist.api.context import ControlPlane
from cambist.api.serialize import lease_json
from cambist.deploy.controller import LIVE
from cambist.deploy.leasing import RentRequest
from cambist.domain.billing import Principal
from cambist.domain.errors import Conflict, NotFound

__all__ = ["router"]

router = APIRouter(prefix="/v1/leases", tags=["leases"])


class RentBody(BaseModel):
    gpu: str | None = None
    count: int | None = Field(default=None, ge=1, le=64)
    region: str | None = None
    max_price: Decimal | None = Field(default=None, ge=0)
    spot: bool | None = None
    offer_id: str | None = None
    tenant: str | None = None
    client_token: str | None = Field(default=None, max_length=128)


@router.post("", status_code=201)
async def rent(body: RentBody, cp: Annotated[ControlPlane, Depends(control_plane)],
               p: Annotated[Principal, Depends(principal)]) -> dict:
    """Rent the cheapest offer that fits (idempotent on ``client_token``)."""
    require_writer(p)
    owner = resolve_tenant(p, body.tenant)
    lease = await cp.desk.rent(RentRequest(
        gpu=body.gpu, count=body.count, region=body.region,
        max_price_per_gpu_hour=body.max_price, spot=body.spot, owner=owner,
        client_token=body.client_token, offer_id=body.offer_id))
    return lease_json(lease, cp.clock.now())


@router.get("")
async def list_leases(cp: Annotated[ControlPlane, Depends(control_plane)],
                      p: Annotated[Principal, Depends(principal)],
                      active: bool = False) -> dict:
    """Leases the caller may see, with state and cost so far."""
    now = cp.clock.now()
    if p.is_admin:
        leases = await cp.records.leases(active_only=active)
    else:
        leases = await cp.records.leases(owner=p.tenant_id, all_owners=False, active_only=active)
    return {"object": "list", "data": [lease_json(x, now) for x in leases]}


@router.get("/{lease_id}")
async def get_lease(lease_id: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                    p: Annotated[Principal, Depends(principal)]) -> dict:
    lease = await cp.records.lease(lease_id)
    if lease is None:
        raise NotFound(f"no lease {lease_id!r}", param="lease_id")
    authorize_owner(p, lease.owner)
    return lease_json(lease, cp.clock.now())


@router.post("/{lease_id}/release")
async def release(lease_id: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                  p: Annotated[Principal, Depends(principal)]) -> dict:
    """End a lease; its final cost is posted to the ledger."""
    require_writer(p)
    lease = await cp.records.lease(lease_id)
    if lease is None:
        raise NotFound(f"no lease {lease_id!r}; see 'cambist leases'", param="lease_id")
    authorize_owner(p, lease.owner)
    for rep in await cp.records.replicas():
        if rep.lease_id == lease_id and rep.state in LIVE:
            raise Conflict(f"lease {lease_id} serves deployment {rep.deployment!r}; "
                           f"run 'cambist undeploy {rep.deployment}' instead")
    return lease_json(await cp.desk.release(lease_id), cp.clock.now())
