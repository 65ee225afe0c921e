"""The rows analytics computes over, as read from the store (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["EndpointRow", "LeaseRow", "UsageRow"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One metered request. ``pooled`` is true when it was served by a platform
    deployment (an engine on a platform lease), whose cost is the lease's;
    otherwise its ``compute_cost`` is a direct cost (external/local per-token
    price, or a tenant's own dedicated lease). ``completion_tokens`` includes
    ``reasoning_tokens`` (the OpenAI convention)."""

    tenant_id: str
    model: str
    endpoint_id: str | None
    supplier: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    price: Decimal
    compute_cost: Decimal
    created_at: float
    pooled: bool = True

    @property
    def visible_tokens(self) -> int:
        """Output tokens the caller sees (completion minus reasoning)."""
        return max(0, self.completion_tokens - self.reasoning_tokens)


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """An endpoint's capacity and life. ``capacity_tok_s`` is its full-batch
    decode throughput (0 for external/local endpoints: unknown)."""

    id: str
    model: str
    supplier: str
    kind: str
    owner: str | None
    deployment: str | None
    capacity_tok_s: float
    created_at: float
    removed_at: float | None


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """A lease's price and running interval (``started_at`` ``None``: never ran)."""

    id: str
    owner: str | None
    supplier: str
    price_per_hour: Decimal
    started_at: float | None
    ended_at: float | None
