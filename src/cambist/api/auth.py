"""Authentication and authorization for the REST API, decided in one place.

Ownership: leases, deployments and endpoints belong to the platform (owner
``None``, the shared pool every tenant's requests use) or to one tenant.
``admin`` keys see and change everything; tenant keys see their tenant's
resources (and market data); only ``admin`` and ``tenant-admin`` keys change
anything; ``inference`` keys read only.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.domain.errors import NotFound, PermissionDenied, Unauthenticated

__all__ = ["authorize_owner", "control_plane", "managed_key", "principal", "require_admin",
           "require_writer", "resolve_tenant"]


def control_plane(request: Request) -> ControlPlane:
    """The control plane attached to the app."""
    cp: ControlPlane = request.app.state.control_plane
    return cp


def principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <key>``; 401 otherwise."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>' "
                              "(keys are in $CAMBIST_HOME/connection.json)")
    p = control_plane(request).auth.authenticate(secret.strip())
    if p is None:
        raise Unauthenticated("invalid or revoked API key")
    return p


def require_admin(p: Principal) -> None:
    if not p.is_admin:
        raise PermissionDenied("this operation needs an admin key")


def require_writer(p: Principal) -> None:
    if p.scope == "inference":
        raise PermissionDenied("inference keys can only call the model API; "
                               "use a tenant-admin or admin key")


def resolve_tenant(p: Principal, requested: str | None) -> str | None:
    """The tenant an operation acts for: a tenant key always acts for its own
    tenant; an admin may name one (or none: the platform)."""
    if p.is_admin:
        return requested
    if requested is not None and requested != p.tenant_id:
        raise PermissionDenied("a tenant key can only act for its own tenant")
    return p.tenant_id


def authorize_owner(p: Principal, owner: str | None) -> None:
    """Raise unless ``p`` may see a resource owned by ``owner``."""
    if p.is_admin:
        return
    if owner is None or owner != p.tenant_id:
        raise PermissionDenied("this resource belongs to another owner")


async def managed_key(cp: ControlPlane, p: Principal, key_id: str) -> dict[str, Any]:
    """The key ``key_id`` if ``p`` may manage it: 404 when it is unknown *or*
    another owner's (the same answer, so key ids of other tenants are not
    revealed to exist)."""
    require_writer(p)
    info: dict[str, Any] | None = await cp.keyring.key_info(key_id)
    mine = info is not None and (p.is_admin or (p.tenant_id is not None
                                                and info["tenant_id"] == p.tenant_id))
    if info is None or not mine:
        raise NotFound(f"no API key {key_id!r}; see 'cambist keys list'", param="key_id")
    return info
