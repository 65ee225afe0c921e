"""``/v1/deployments``: models on rented GPUs."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from cambist.api.auth import (
    authorize_owner,
    control_plane,
    principal,
    require_writer,
    resolve_tenant,
)
from cambist.api.context import ControlPlane
from cambist.api.serialize import deployment_json
from cambist.deploy.spec import DeploySpec
from cambist.domain.billing import Principal
from cambist.domain.deployment import Deployment
from cambist.domain.errors import InvalidRequest, NotFound
from cambist.domain.events import EventKind
from cambist.domain.models import MODEL_CATALOG
from cambist.domain.money import quantize_usd

__all__ = ["router"]

router = APIRouter(prefix="/v1/deployments", tags=["deployments"])


class DeployBody(BaseModel):
    model: str
    replicas: int = Field(default=1, ge=1, le=64)
    max_price_per_mtok: Decimal | None = Field(default=None, gt=0)
    name: str | None = Field(default=None, max_length=63)
    tenant: str | None = None
    client_token: str | None = Field(default=None, max_length=128)
    tokens_per_s: float | None = Field(default=None, gt=0, le=1e8)
    ttft_ms: float | None = Field(default=None, gt=0, le=1e6)
    regions: list[str] = Field(default_factory=list, max_length=32)
    max_supplier_share: float = Field(default=1.0, gt=0, le=1)
    spot: bool = True
    min_replicas: int = Field(default=1, ge=1, le=64)
    max_replicas: int | None = Field(default=None, ge=1, le=64)

    def spec(self) -> DeploySpec:
        """The placement spec; a contradiction is a clear 400."""
        try:
            return DeploySpec(tokens_per_s=self.tokens_per_s, ttft_ms=self.ttft_ms,
                              regions=tuple(self.regions),
                              max_supplier_share=self.max_supplier_share, spot=self.spot,
                              min_replicas=self.min_replicas, max_replicas=self.max_replicas)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="max_replicas") from exc


async def _render(cp: ControlPlane, d: Deployment) -> dict:
    reps = await cp.records.replicas(d.name)
    leases = {x.id: x for x in await cp.records.leases()}
    eps = {e.id: e for e in await cp.records.endpoints(include_removed=True)}
    per_mtok: dict[str, str | None] = {}
    model = MODEL_CATALOG.get(d.model)
    for r in reps:
        lease = leases.get(r.lease_id or "")
        if lease is not None and lease.sku and model is not None:
            est = cp.perf.estimate(model, lease.sku, lease.gpu_count)
            per_mtok[r.id] = (str(quantize_usd(est.cost_per_mtok(lease.price_per_hour)))
                              if est.fits else None)
    out = deployment_json(d, reps, leases, eps, per_mtok)
    spec = DeploySpec.from_json(await cp.records.deployment_spec(d.name))
    out["spec"] = {"tokens_per_s": spec.tokens_per_s, "ttft_ms": spec.ttft_ms,
                   "regions": list(spec.regions), "max_supplier_share": spec.max_supplier_share,
                   "spot": spec.spot, "min_replicas": spec.min_replicas,
                   "max_replicas": spec.max_replicas}
    return out


@router.post("", status_code=201)
async def deploy(body: DeployBody, cp: Annotated[ControlPlane, Depends(control_plane)],
                 p: Annotated[Principal, Depends(principal)]) -> dict:
    """Deploy a catalog model on the cheapest offers by $/Mtok (idempotent on client_token)."""
    require_writer(p)
    owner = resolve_tenant(p, body.tenant)
    d = await cp.controller.create(body.model, replicas=body.replicas, owner=owner,
                                   max_price_per_mtok=body.max_price_per_mtok,
                                   client_token=body.client_token, name=body.name,
                                   spec=body.spec())
    return await _render(cp, d)


@router.get("")
async def list_deployments(cp: Annotated[ControlPlane, Depends(control_plane)],
                           p: Annotated[Principal, Depends(principal)],
                           all: bool = False) -> dict:
    """Deployments the caller may see (stopped ones only with ``all``)."""
    out = []
    for d in await cp.records.deployments():
        if not all and str(d.state) == "stopped":
            continue
        if p.is_admin or d.owner == p.tenant_id:
            out.append(await _render(cp, d))
    return {"object": "list", "data": out}


@router.get("/{name}")
async def get_deployment(name: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                         p: Annotated[Principal, Depends(principal)]) -> dict:
    d = await cp.records.deployment(name)
    if d is None:
        raise NotFound(f"no deployment {name!r}; see 'cambist deployments'", param="name")
    authorize_owner(p, d.owner)
    return await _render(cp, d)


DEPLOY_EVENTS = (EventKind.DEPLOY_STEP, EventKind.DEPLOY_MOVED, EventKind.DEPLOY_SCALED)


@router.get("/{name}/events")
async def deployment_events(name: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                            p: Annotated[Principal, Depends(principal)],
                            limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
    """The deployment's events, oldest first: steps, moves (with their expected
    saving) and scaling."""
    d = await cp.records.deployment(name)
    if d is None:
        raise NotFound(f"no deployment {name!r}; see 'cambist deployments'", param="name")
    authorize_owner(p, d.owner)
    rows = []
    for kind in DEPLOY_EVENTS:
        rows += [r for r in await cp.events.read(kind=kind, latest=True, limit=5000)
                 if r["subject"] == name and r["kind"] == kind]
    rows.sort(key=lambda r: (r["ts"], r["id"]))
    return {"object": "list", "data": [
        {"ts": r["ts"], "kind": r["kind"], "data": r["data"]} for r in rows[-limit:]]}


@router.delete("/{name}")
async def undeploy(name: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                   p: Annotated[Principal, Depends(principal)]) -> dict:
    """Drain and release a deployment."""
    require_writer(p)
    d = await cp.records.deployment(name)
    if d is None:
        raise NotFound(f"no deployment {name!r}; see 'cambist deployments'", param="name")
    authorize_owner(p, d.owner)
    return await _render(cp, await cp.controller.undeploy(name))
