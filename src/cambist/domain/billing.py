"""The billing vocabulary shared by the gateway (which spends) and the ledger
(which keeps the books): principals, prices, reservations, and the small
protocols the gateway's hot path calls. All hot-path calls are synchronous and
in memory; the ledger persists off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, NamedTuple, Protocol

from cambist.domain.money import from_micros, to_micros
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


_SCALED_PLACES = 9
"""Prices with at most this many decimal places (in $ per Mtok) are charged in
integer arithmetic by :meth:`ModelPrice.charge_micros`."""


def _scaled(input_per_mtok: Decimal, output_per_mtok: Decimal) -> tuple[int, int, int] | None:
    """``(10**k, input * 10**k, output * 10**k)``, all integers, for the
    smallest ``k`` that makes both prices whole; ``None`` if that takes more
    than :data:`_SCALED_PLACES` places or a price is negative or not finite."""
    prices = (input_per_mtok, output_per_mtok)
    if not all(isinstance(p, Decimal) and p.is_finite() and p >= 0 for p in prices):
        return None
    places = max(0, *(-int(p.as_tuple().exponent) for p in prices))
    if places > _SCALED_PLACES:
        return None
    ints = [int(p.scaleb(places)) for p in prices]
    if any(Decimal(i).scaleb(-places) != p for i, p in zip(ints, prices, strict=True)):
        return None  # trailing digits were cut: not representable
    return 10 ** places, ints[0], ints[1]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What callers pay for a model in a privacy tier, per million tokens."""

    model: str
    tier: str
    input_per_mtok: Decimal
    output_per_mtok: Decimal
    version: int
    _scaled: tuple[int, int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_scaled", _scaled(self.input_per_mtok, self.output_per_mtok))

    def charge(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        """Exact price of a request (unrounded; the ledger rounds once)."""
        return (
            self.input_per_mtok * prompt_tokens + self.output_per_mtok * completion_tokens
        ) / Decimal(1_000_000)

    def charge_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """``to_micros(self.charge(...))``: the price of a request rounded once to
        whole micro-dollars (half up), worked out in integers where the prices
        allow (a $/Mtok price is a micro-dollar price per token). Decimal
        arithmetic costs several microseconds per operation on a request's
        path, where little of it is in the processor's caches."""
        scaled = self._scaled
        if scaled is None or prompt_tokens < 0 or completion_tokens < 0:
            return to_micros(self.charge(prompt_tokens, completion_tokens))
        unit, per_input, per_output = scaled
        return (per_input * prompt_tokens + per_output * completion_tokens + unit // 2) // unit


class Reservation(NamedTuple):
    """Credit held for a request in flight (a named tuple: immutable, and made
    once per request at half a frozen dataclass's cost)."""

    id: str
    tenant_id: str
    micros: int
    """What is held, in whole micro-dollars."""

    @property
    def amount(self) -> Decimal:
        """What is held, in dollars."""
        return from_micros(self.micros)


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

    def reserve_micros(self, tenant_id: str, micros: int, request_id: str) -> Reservation:
        """:meth:`reserve` of ``micros`` whole micro-dollars."""
        ...

    def settle(self, reservation: Reservation, record: UsageRecord,
               micros: int | None = None) -> None:
        """Charge ``record.price``, release the rest of the hold, and append the
        record to the durable outbox (flushed to the journal in batches).
        ``micros``, when given, is ``record.price`` rounded to whole
        micro-dollars (the caller worked it out already)."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Drop a hold without charging (request failed before any token)."""
        ...
