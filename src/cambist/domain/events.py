"""The append-only event log's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventKind"]


class EventKind:
    """Event kinds (strings, so new ones need no migration)."""

    OFFER_ADDED = "offer.added"
    OFFER_CHANGED = "offer.changed"
    OFFER_REMOVED = "offer.removed"
    LEASE = "lease.transition"
    DEPLOY_STEP = "deploy.step"
    DEPLOY_MOVED = "deployment.moved"
    """A deployment migrates units to a cheaper placement (data: phase, saving)."""
    DEPLOY_SCALED = "deployment.scaled"
    """A deployment's replica count changed (data: from, to, why)."""
    ROUTE = "route.decision"
    ENDPOINT = "endpoint.health"
    PRICE_LIST = "pricelist.version"


@dataclass(frozen=True, slots=True)
class Event:
    """One fact that happened at ``ts``: ``kind`` about ``subject``."""

    ts: float
    kind: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
