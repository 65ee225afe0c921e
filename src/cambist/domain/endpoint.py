"""Endpoints: OpenAI-compatible servers the gateway can route to."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A routable upstream serving one model.

    ``cost_per_hour`` is what the capacity under it costs (the lease price) and
    ``capacity_tok_s`` the throughput the performance model expects at full
    batch; together they give the live marginal cost the router uses.
    """

    id: str
    model: str
    url: str
    supplier: str
    owner: str | None
    healthy: bool
    deployment: str | None = None
    lease_id: str | None = None
    sku: str | None = None
    region: str = ""
    cost_per_hour: Decimal = Decimal(0)
    capacity_tok_s: float = 0.0
    max_concurrency: int = 64
    context_length: int = 0
    created_at: float = 0.0
