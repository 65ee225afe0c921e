"""Usage records: what one request consumed, charged and cost, and how it was paid."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

__all__ = ["UsageRecord"]


class UsageRecord(NamedTuple):
    """One metered request. ``price`` is what the tenant is charged (from the
    price list); ``compute_cost`` is an allocation of lease cost for analytics,
    not a second charge. ``request_id`` is the idempotency key.
    ``privacy_tier`` is the tier the request was served under (one of
    :data:`cambist.domain.endpoint.PRIVACY_TIERS`): metadata about how content
    was handled, never content itself.

    A named tuple (immutable, like the frozen dataclass it was): one is built
    for every request served, and a frozen dataclass's ``__init__`` set its
    twenty fields one ``object.__setattr__`` at a time, 5.1 µs against 1.2."""

    request_id: str
    tenant_id: str
    key_id: str
    model: str
    endpoint_id: str | None
    supplier: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    price: Decimal
    compute_cost: Decimal
    price_version: int
    status: str  # "ok", "partial" (stream broken mid-way), "error"
    created_at: float
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    stream: bool = False
    # Defaulted (and last) so outbox lines written before the field existed
    # still decode. Such lines did not say which tier served them; they read
    # as "standard", the tier a request gets when it asks for none.
    privacy_tier: str = "standard"
    # How the price was paid (spend order: daily allowance, then monthly pool,
    # then prepaid balance), set by the wallet at settlement: micro-dollars
    # from the tenant's allowance and pool; the rest of ``price`` (rounded once
    # to micro-dollars) is prepaid credit. Defaulted so older outbox lines,
    # written when everything was prepaid, still decode.
    allowance_micros: int = 0
    pool_micros: int = 0
