"""``/v1/endpoints``: every upstream the gateway routes to, and registering
local OpenAI-compatible servers (admin only).

Tenant keys see the platform's endpoints and their own; admins see all. No
response ever carries an upstream API key; admins see the *name* of the
environment variable that holds it.
"""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cambist.api.auth import control_plane, principal, require_admin, resolve_tenant
from cambist.api.context import ControlPlane
from cambist.api.serialize import endpoint_json
from cambist.domain.billing import Principal
from cambist.domain.endpoint import Endpoint, is_env_var_name, normalize_upstream_url
from cambist.domain.errors import Conflict, InvalidRequest, PermissionDenied
from cambist.domain.ids import new_id
from cambist.gateway.attestation import verified_until
from cambist.gateway.probe import probe_endpoint
from cambist.gateway.registry import (
    find_endpoint,
    insert_local_endpoint,
    list_endpoints,
    remove_endpoint,
)
from cambist.store.attestations import AttestationRecords

__all__ = ["router"]

router = APIRouter(prefix="/v1/endpoints", tags=["endpoints"])

PROBE_TIMEOUT_S = 5.0


class RegisterBody(BaseModel):
    """A local OpenAI-compatible server serving one model."""

    url: str = Field(max_length=512)
    model: str = Field(min_length=1, max_length=128)
    input_price_per_mtok: Decimal = Field(ge=0, allow_inf_nan=False)
    output_price_per_mtok: Decimal = Field(ge=0, allow_inf_nan=False)
    api_key_env: str | None = Field(default=None, max_length=128)
    quantization: str | None = Field(default=None, min_length=1, max_length=16)
    supplier: str = Field(default="local", min_length=1, max_length=64)
    tenant: str | None = Field(default=None, max_length=64)
    context_length: int = Field(default=0, ge=0)
    max_concurrency: int = Field(default=64, ge=1, le=100_000)
    attestation: str | None = Field(default=None, min_length=1, max_length=64)
    """Evidence format the server attests with (e.g. ``cambist-selfsigned-v1``):
    it joins the confidential tier once a check verifies."""


class RevokeBody(BaseModel):
    """Why an endpoint's attestation is being revoked."""

    reason: str = Field(default="revoked by an operator", min_length=1, max_length=200)


def _attestation_json(row: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"format": row["format"], "status": row["status"], "reason": row["reason"],
            "checked_at": row["checked_at"], "expires_at": row["expires_at"],
            "confidential": bool(verified_until({"_": row}, now))}


def _json(e: Endpoint, admin: bool) -> dict[str, Any]:
    out = {
        **endpoint_json(e), "kind": e.kind, "context_length": e.context_length,
        "input_price_per_mtok": (str(e.input_price_per_mtok)
                                 if e.input_price_per_mtok is not None else None),
        "output_price_per_mtok": (str(e.output_price_per_mtok)
                                  if e.output_price_per_mtok is not None else None),
        "quantization": e.quantization, "created_at": e.created_at,
    }
    if admin:
        out["api_key_env"] = e.api_key_env
    return out


def _check_key_env(name: str | None) -> None:
    if name is None:
        return
    if not is_env_var_name(name):
        raise InvalidRequest("api_key_env must be the name of an environment variable "
                             "(the key itself is never sent here)", param="api_key_env")
    if name.upper().startswith("CAMBIST_"):
        raise InvalidRequest("api_key_env cannot name one of Cambist's own CAMBIST_* "
                             "settings", param="api_key_env")


@router.get("")
async def endpoints(cp: Annotated[ControlPlane, Depends(control_plane)],
                    p: Annotated[Principal, Depends(principal)]) -> dict:
    """Routable endpoints of every kind that the caller may see."""
    eps = await list_endpoints(cp.db)
    if not p.is_admin:
        eps = [e for e in eps if e.owner in (None, p.tenant_id)]
    claims = await AttestationRecords(cp.db).all()
    now = cp.clock.now()
    return {"object": "list", "data": [
        {**_json(e, p.is_admin), "attestation": _attestation_json(claims.get(e.id), now)}
        for e in eps]}


@router.post("", status_code=201)
async def register(body: RegisterBody, cp: Annotated[ControlPlane, Depends(control_plane)],
                   p: Annotated[Principal, Depends(principal)]) -> dict:
    """Register an OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, LM
    Studio, ...) as a ``local`` endpoint (admin only)."""
    require_admin(p)
    _check_key_env(body.api_key_env)
    ep = Endpoint(
        id=new_id("ep"), model=body.model.strip(), url=normalize_upstream_url(body.url),
        supplier=body.supplier, owner=resolve_tenant(p, body.tenant), healthy=True,
        max_concurrency=body.max_concurrency, context_length=body.context_length,
        created_at=cp.clock.now(), kind="local",
        input_price_per_mtok=body.input_price_per_mtok,
        output_price_per_mtok=body.output_price_per_mtok, api_key_env=body.api_key_env,
        quantization=body.quantization.lower() if body.quantization else None,
    )
    await insert_local_endpoint(cp.db, ep)
    out = _json(ep, admin=True)
    if body.attestation is not None:
        out["attestation"] = await _claim(cp, ep.id, body.attestation)
    return out


async def _claim(cp: ControlPlane, endpoint_id: str, fmt: str) -> dict[str, Any] | None:
    """Record the claim and, where this process verifies, check it at once so the
    caller learns the verdict (or its reason) now, not at the next probe."""
    records = AttestationRecords(cp.db)
    await records.claim(endpoint_id, fmt)
    if cp.attestation is not None:
        await cp.attestation.verify_now(endpoint_id, cp.clock.now())
    return _attestation_json((await records.all()).get(endpoint_id), cp.clock.now())


@router.get("/{endpoint_id}")
async def endpoint(endpoint_id: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                   p: Annotated[Principal, Depends(principal)]) -> dict:
    """One endpoint the caller may see."""
    ep = await find_endpoint(cp.db, endpoint_id)
    if not p.is_admin and ep.owner not in (None, p.tenant_id):
        raise PermissionDenied("this endpoint belongs to another owner")
    claims = await AttestationRecords(cp.db).all()
    return {**_json(ep, p.is_admin),
            "attestation": _attestation_json(claims.get(ep.id), cp.clock.now())}


@router.delete("/{endpoint_id}")
async def remove(endpoint_id: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                 p: Annotated[Principal, Depends(principal)]) -> dict:
    """Take an external or local endpoint out of routing (admin only). An own
    deployment's endpoint goes with its deployment (``undeploy``)."""
    require_admin(p)
    ep = await find_endpoint(cp.db, endpoint_id)
    if ep.kind == "deployment":
        raise Conflict(f"endpoint {endpoint_id} belongs to deployment {ep.deployment}; "
                       "undeploy it instead", param="id")
    await remove_endpoint(cp.db, endpoint_id, cp.clock.now())
    await AttestationRecords(cp.db).forget(endpoint_id)
    return {"id": endpoint_id, "removed": True}


class ClaimBody(BaseModel):
    """The evidence format an endpoint attests with."""

    format: str = Field(min_length=1, max_length=64)


@router.post("/{endpoint_id}/attestation")
async def claim_attestation(endpoint_id: str, body: ClaimBody,
                            cp: Annotated[ControlPlane, Depends(control_plane)],
                            p: Annotated[Principal, Depends(principal)]) -> dict:
    """Declare that an endpoint attests in ``format`` (admin only); it joins the
    confidential tier once the attestation probe verifies its evidence. Claiming
    again clears a revocation."""
    require_admin(p)
    await find_endpoint(cp.db, endpoint_id)
    return {"id": endpoint_id, "attestation": await _claim(cp, endpoint_id, body.format)}


@router.post("/{endpoint_id}/attestation/revoke")
async def revoke_attestation(endpoint_id: str, body: RevokeBody,
                             cp: Annotated[ControlPlane, Depends(control_plane)],
                             p: Annotated[Principal, Depends(principal)]) -> dict:
    """Take an endpoint out of the confidential tier now (admin only). It stays
    out, unchecked, until an admin claims attestation for it again."""
    require_admin(p)
    await find_endpoint(cp.db, endpoint_id)
    records = AttestationRecords(cp.db)
    if not await records.revoke(endpoint_id, body.reason, cp.clock.now()):
        raise Conflict(f"endpoint {endpoint_id} does not attest", param="id")
    if cp.attestation is not None:
        await cp.attestation.pool_changed()
    claims = await records.all()
    return {"id": endpoint_id,
            "attestation": _attestation_json(claims.get(endpoint_id), cp.clock.now())}


@router.post("/{endpoint_id}/probe")
async def probe(endpoint_id: str, cp: Annotated[ControlPlane, Depends(control_plane)],
                p: Annotated[Principal, Depends(principal)]) -> dict:
    """Probe an endpoint: latency of ``/v1/models``, the models it serves, ``/health``
    (admin only: the probe carries the upstream's API key)."""
    require_admin(p)
    ep = await find_endpoint(cp.db, endpoint_id)
    async with httpx.AsyncClient(trust_env=False) as http:
        # The upstream key is looked up by variable name in this process's environment.
        result = await probe_endpoint(http, ep, os.environ.get, PROBE_TIMEOUT_S)
    return result.as_json()
