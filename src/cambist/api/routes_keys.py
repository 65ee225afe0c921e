"""``/v1/keys``: create, list, revoke and rotate API keys.

Who may do what (decided with the helpers of :mod:`cambist.api.auth`):

* ``admin`` keys manage every key: platform admin keys (no tenant) and any
  tenant's ``tenant-admin`` and ``inference`` keys;
* ``tenant-admin`` keys manage their own tenant's keys only and never mint an
  ``admin`` key;
* ``inference`` keys manage nothing (403).

A new secret is in the response to the request that created it and nowhere
else (the database keeps its HMAC). Every mutation takes an
``Idempotency-Key`` header (or ``idempotency_key`` body field): a repeat
returns the first outcome, secret included, with ``Idempotent-Replayed:
true``, and creates nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Response
from pydantic import BaseModel, Field

from cambist.api.auth import (
    control_plane,
    managed_key,
    principal,
    require_writer,
    resolve_tenant,
)
from cambist.api.context import ControlPlane
from cambist.api.routes_budgets import budget_json
from cambist.api.routes_privacy import tiers_json
from cambist.domain.billing import Principal
from cambist.domain.endpoint import parse_tier_list
from cambist.domain.errors import PermissionDenied
from cambist.ledger.budgets import KeyBudgets
from cambist.ledger.idempotency import IdempotencyStore, IdempotentCall

__all__ = ["IdempotencyHeader", "finish_idempotent", "router"]

router = APIRouter(prefix="/v1", tags=["keys"])

IdempotencyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=128,
           description="Repeat a mutation safely: the same key returns the first outcome."),
]
_IdempotencyField = Field(default=None, min_length=1, max_length=128)


class KeyBody(BaseModel):
    tenant: str | None = Field(default=None, description="Tenant id (admin keys only; "
                                                         "tenant keys act for their own).")
    scope: Literal["admin", "tenant-admin", "inference"] = "inference"
    name: str = Field(default="", max_length=128)
    privacy_tiers: list[str] | None = Field(
        default=None, max_length=4, description="Privacy tiers the key may use (null: any).")
    idempotency_key: str | None = _IdempotencyField


class KeyActionBody(BaseModel):
    idempotency_key: str | None = _IdempotencyField


def finish_idempotent(response: Response, replayed: bool) -> None:
    """Mark a replayed outcome (``Idempotent-Replayed: true``)."""
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"


def _key_json(info: dict[str, Any], secret: str | None = None,
              budgets: KeyBudgets | None = None) -> dict[str, Any]:
    out = {"object": "api_key", "id": info["id"], "tenant_id": info["tenant_id"],
           "scope": info["scope"], "name": info["name"], "prefix": info["prefix"],
           "created_at": info["created_at"], "revoked_at": info["revoked_at"],
           "privacy_tiers": tiers_json(info.get("privacy_tiers")),
           "budget": budget_json(info, budgets)}
    if "rotated_from" in info:
        out["rotated_from"] = info["rotated_from"]
    if secret is not None:
        out["key"] = secret
    return out


def _secret_of(cp: ControlPlane, result: dict, call: IdempotentCall | None,
               fresh: str | None) -> str | None:
    if fresh is not None:
        return fresh
    return cp.keyring.derived_secret(result["id"], call.seed) if call is not None else None


@router.post("/keys", status_code=201)
async def create_key(body: KeyBody, response: Response,
                     cp: Annotated[ControlPlane, Depends(control_plane)],
                     p: Annotated[Principal, Depends(principal)],
                     idempotency_key: IdempotencyHeader = None) -> dict:
    """Create an API key; the secret (``key``) is returned once."""
    require_writer(p)
    if body.scope == "admin" and not p.is_admin:
        raise PermissionDenied("only an admin key can create admin keys", param="scope")
    tenant = resolve_tenant(p, body.tenant)
    call = IdempotentCall.resolve(p.key_id, idempotency_key, body.idempotency_key,
                                  {"op": "keys.create", "tenant": tenant, "scope": body.scope,
                                   "name": body.name, "privacy_tiers": body.privacy_tiers})
    tiers = (None if body.privacy_tiers is None
             else parse_tier_list(",".join(body.privacy_tiers)) or frozenset())
    fresh: list[str] = []

    async def act(conn: Any) -> dict:
        kid, secret = await cp.keyring.create_key(tenant, body.scope, body.name, conn=conn,
                                                  seed=call.seed if call else None,
                                                  privacy_tiers=tiers)
        fresh.append(secret)
        info: dict = await cp.keyring.key_info(kid, conn=conn)
        return info

    result, replayed = await IdempotencyStore(cp.db, cp.clock).run(call, act)
    await cp.keyring.refresh()
    finish_idempotent(response, replayed)
    return _key_json(result, _secret_of(cp, result, call, None if replayed else fresh[0]))


@router.get("/keys")
async def list_keys(cp: Annotated[ControlPlane, Depends(control_plane)],
                    p: Annotated[Principal, Depends(principal)],
                    tenant: str | None = None, active: bool = False) -> dict:
    """Keys the caller manages (never secrets or their hashes); ``active``
    leaves out revoked keys."""
    require_writer(p)
    keys = await cp.keyring.list_keys(resolve_tenant(p, tenant))
    rows = [_key_json(k, budgets=cp.budgets) for k in keys
            if not (active and k["revoked_at"] is not None)]
    return {"object": "list", "data": rows}


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: str, response: Response,
                     cp: Annotated[ControlPlane, Depends(control_plane)],
                     p: Annotated[Principal, Depends(principal)],
                     body: KeyActionBody | None = None,
                     idempotency_key: IdempotencyHeader = None) -> dict:
    """Revoke a key: every process refuses it within a second."""
    await managed_key(cp, p, key_id)
    call = IdempotentCall.resolve(p.key_id, idempotency_key,
                                  body.idempotency_key if body else None,
                                  {"op": "keys.revoke", "key_id": key_id})

    async def act(conn: Any) -> dict:
        await cp.keyring.revoke(key_id, conn=conn)
        info: dict = await cp.keyring.key_info(key_id, conn=conn)
        return info

    result, replayed = await IdempotencyStore(cp.db, cp.clock).run(call, act)
    await cp.keyring.refresh()
    finish_idempotent(response, replayed)
    return _key_json(result)


@router.post("/keys/{key_id}/rotate", status_code=201)
async def rotate_key(key_id: str, response: Response,
                     cp: Annotated[ControlPlane, Depends(control_plane)],
                     p: Annotated[Principal, Depends(principal)],
                     body: KeyActionBody | None = None,
                     idempotency_key: IdempotencyHeader = None) -> dict:
    """Replace a key with a new one (same tenant, scope, name, privacy tiers
    and spend budget, whose spend this period carries over) and revoke it; the
    new secret is returned once."""
    await managed_key(cp, p, key_id)
    call = IdempotentCall.resolve(p.key_id, idempotency_key,
                                  body.idempotency_key if body else None,
                                  {"op": "keys.rotate", "key_id": key_id})
    fresh: list[str] = []

    async def act(conn: Any) -> dict:
        kid, secret = await cp.keyring.rotate(key_id, conn=conn,
                                              seed=call.seed if call else None)
        fresh.append(secret)
        info: dict = await cp.keyring.key_info(kid, conn=conn)
        return {**info, "rotated_from": key_id}

    result, replayed = await IdempotencyStore(cp.db, cp.clock).run(call, act)
    await cp.keyring.refresh()
    if cp.budgets is not None:
        await cp.budgets.load()  # the new key's budget applies here at once
    finish_idempotent(response, replayed)
    return _key_json(result, _secret_of(cp, result, call, None if replayed else fresh[0]),
                     cp.budgets)
