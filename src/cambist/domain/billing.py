"""The billing vocabulary shared by the gateway (which spends) and the ledger
(which keeps the books): principals, prices, reservations, and the small
protocols the gateway's hot path calls. All hot-path calls are synchronous and
in memory; the ledger persists off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, Protocol

from cambist.domain.usage import UsageRecord

__all__ = [
    "Authenticator",
    "ModelPrice",
    "PriceList",
    "Principal",
    "Reservation",
    "Scope",
    "Wallet",
]

Scope = Literal["admin", "tenant-admin", "inference"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key, its tenant (``None`` for platform admin keys)
    and its scope."""

    key_id: str
    tenant_id: str | None
    scope: Scope
    privacy_tiers: frozenset[str] | None = None
    """Tiers this key may use (its own policy meet its tenant's); ``None``: any."""

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What callers pay for a model in a privacy tier, per million tokens."""

    model: str
    tier: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    version: int

    def charge(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """Exact price of a request (unrounded; the ledger rounds once)."""
        return (
            self.input_per_mtok * prompt_tokens + self.output_per_mtok * completion_tokens
        ) / Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Credit held for a request in flight."""

    id: str
    tenant_id: str
    amount: Decimal


class Authenticator(Protocol):
    def authenticate(self, secret: str) -> Principal | None:
        """The principal of an API key secret, or ``None`` (unknown or revoked)."""
        ...


class PriceList(Protocol):
    def price(self, model: str, tier: str = "standard") -> ModelPrice | None:
        """The price in force for ``model`` in ``tier``, or ``None`` if unpriced."""
        ...


class Wallet(Protocol):
    def reserve(self, tenant_id: str, amount: Decimal, request_id: str) -> Reservation:
        """Hold ``amount``; raises ``InsufficientCredit`` if the available balance
        (balance minus reservations in flight) is smaller."""
        ...

    def settle(self, reservation: Reservation, record: UsageRecord) -> None:
        """Charge ``record.price``, release the rest of the hold, and append the
        record to the durable outbox (flushed to the journal in batches)."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Drop a hold without charging (request failed before any token)."""
        ...
