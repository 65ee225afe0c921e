"""``/v1/keys/{id}/privacy`` and ``/v1/tenants/{id}/privacy``: which privacy tiers
a key, or every key of a tenant, may use.

A key's effective tiers are its own policy met with its tenant's (``null``
allows any). A request naming no tier gets the first allowed one; one naming
a tier outside the policy is refused (403 ``privacy_tier_not_allowed``), never
served in another tier. Admin keys set any policy; a tenant-admin key sets
its own tenant's and its tenant's keys'; inference keys set none.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cambist.api.auth import authorize_owner, control_plane, managed_key, principal, require_writer
from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.domain.endpoint import PRIVACY_TIERS, parse_tier_list
from cambist.domain.errors import NotFound

__all__ = ["router", "tiers_json"]

router = APIRouter(prefix="/v1", tags=["privacy"])


class PrivacyPolicyBody(BaseModel):
    """``privacy_tiers``: the tiers allowed (``null`` for any)."""

    privacy_tiers: list[str] | None = Field(default=None, max_length=len(PRIVACY_TIERS))


def tiers_json(stored: str | None) -> list[str] | None:
    """A stored policy as a JSON list in ``PRIVACY_TIERS`` order."""
    tiers = parse_tier_list(stored)
    return None if tiers is None else [t for t in PRIVACY_TIERS if t in tiers]


def _parse(body: PrivacyPolicyBody) -> frozenset[str] | None:
    if body.privacy_tiers is None:
        return None
    return parse_tier_list(",".join(body.privacy_tiers)) or frozenset()


@router.put("/keys/{key_id}/privacy")
async def set_key_privacy(key_id: str, body: PrivacyPolicyBody,
                          cp: Annotated[ControlPlane, Depends(control_plane)],
                          p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Set the tiers one key may use (idempotent: the body is the whole policy)."""
    await managed_key(cp, p, key_id)
    await cp.keyring.set_privacy(key_id=key_id, tiers=_parse(body))
    info = await cp.keyring.key_info(key_id)
    return {"id": key_id, "privacy_tiers": tiers_json(info["privacy_tiers"])}


@router.put("/tenants/{tenant_id}/privacy")
async def set_tenant_privacy(tenant_id: str, body: PrivacyPolicyBody,
                             cp: Annotated[ControlPlane, Depends(control_plane)],
                             p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Set the tiers every key of a tenant may use (idempotent)."""
    require_writer(p)
    authorize_owner(p, tenant_id)
    if await cp.keyring.tenant(tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id!r}; see 'cambist tenants'", param="tenant_id")
    await cp.keyring.set_privacy(tenant_id=tenant_id, tiers=_parse(body))
    tenant = await cp.keyring.tenant(tenant_id)
    return {"id": tenant_id, "privacy_tiers": tiers_json(tenant["privacy_tiers"])}
