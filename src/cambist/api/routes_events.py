"""``/v1/events``: the append-only event log (offer changes, lease transitions,
deploy steps, routing decisions), for operators."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cambist.api.auth import control_plane, principal, require_admin
from cambist.api.context import ControlPlane
from cambist.api.params import Timestamp
from cambist.domain.billing import Principal

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events")
async def events(cp: Annotated[ControlPlane, Depends(control_plane)],
                 p: Annotated[Principal, Depends(principal)],
                 kind: str | None = None, since: Timestamp = None,
                 limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict:
    """Events in time order, filtered by kind prefix (e.g. ``lease.``) and time."""
    require_admin(p)
    rows = await cp.events.read(kind=kind, since=since, limit=limit, latest=since is None)
    return {"object": "list", "data": rows}
