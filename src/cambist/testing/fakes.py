"""In-memory implementations of the billing protocols in :mod:`cambist.domain.billing`.

They keep the same contract as the real ledger-backed implementations:
``FakeWallet`` holds credit per tenant, refuses a reservation larger than the
available balance (balance minus holds in flight) with ``InsufficientCredit``,
charges exactly ``record.price`` on settle (unrounded: the ledger's wallet rounds
to micro-dollars), refuses to settle a hold twice, and returns the same hold
when asked again for the same request id.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal

from cambist.domain.billing import ModelPrice, Principal, Reservation, Scope
from cambist.domain.errors import Conflict, InsufficientCredit, InvalidRequest
from cambist.domain.money import ZERO, from_micros, to_micros
from cambist.domain.usage import UsageRecord

__all__ = ["FakeAuthenticator", "FakePriceList", "FakeWallet"]


class FakeAuthenticator:
    """Maps API key secrets to principals."""

    def __init__(self, keys: Mapping[str, Principal] | None = None) -> None:
        self._keys: dict[str, Principal] = dict(keys or {})

    def add(self, secret: str, principal: Principal) -> None:
        """Register ``secret`` for ``principal``."""
        self._keys[secret] = principal

    def issue(self, tenant_id: str | None, scope: Scope = "inference") -> tuple[str, Principal]:
        """Mint a fresh secret for ``tenant_id`` and return it with its principal."""
        key_id = f"key_{secrets.token_hex(6)}"
        secret = f"sk-cambist-{secrets.token_hex(16)}"
        principal = Principal(key_id=key_id, tenant_id=tenant_id, scope=scope)
        self._keys[secret] = principal
        return secret, principal

    def revoke(self, secret: str) -> None:
        """Forget ``secret`` (later calls authenticate to ``None``)."""
        self._keys.pop(secret, None)

    def authenticate(self, secret: str) -> Principal | None:
        """The principal of ``secret``, or ``None`` if unknown or revoked."""
        return self._keys.get(secret)


class FakePriceList:
    """A price list kept in a dict; every :meth:`set` bumps the version."""

    def __init__(self, prices: Iterable[ModelPrice] = ()) -> None:
        self._prices: dict[tuple[str, str], ModelPrice] = {}
        self.version = 0
        for p in prices:
            self._prices[(p.model, p.tier)] = p
            self.version = max(self.version, p.version)

    def set(
        self,
        model: str,
        input_per_mtok: Decimal | str,
        output_per_mtok: Decimal | str,
        tier: str = "standard",
    ) -> ModelPrice:
        """Price ``model`` in ``tier`` (dollars per million tokens) as a new version."""
        self.version += 1
        price = ModelPrice(
            model=model,
            tier=tier,
            input_per_mtok=Decimal(input_per_mtok),
            output_per_mtok=Decimal(output_per_mtok),
            version=self.version,
        )
        self._prices[(model, tier)] = price
        return price

    def remove(self, model: str, tier: str = "standard") -> None:
        """Stop pricing ``model`` in ``tier``."""
        self._prices.pop((model, tier), None)

    def price(self, model: str, tier: str = "standard") -> ModelPrice | None:
        """The price in force for ``model`` in ``tier``, or ``None`` if unpriced."""
        return self._prices.get((model, tier))


class FakeWallet:
    """Balances and holds per tenant, with the settled usage records kept in order."""

    def __init__(self, balances: Mapping[str, Decimal] | None = None) -> None:
        self._balances: dict[str, Decimal] = {t: Decimal(v) for t, v in (balances or {}).items()}
        self.holds: dict[str, Reservation] = {}
        self.records: list[UsageRecord] = []
        self.released: list[Reservation] = []
        self._by_request: dict[str, Reservation] = {}

    def deposit(self, tenant_id: str, amount: Decimal | str) -> None:
        """Add credit to ``tenant_id``."""
        value = Decimal(amount)
        if value <= 0:
            raise InvalidRequest("a deposit must be positive", param="amount")
        self._balances[tenant_id] = self._balances.get(tenant_id, ZERO) + value

    def balance(self, tenant_id: str) -> Decimal:
        """Credit left after settled charges (holds not subtracted)."""
        return self._balances.get(tenant_id, ZERO)

    def held(self, tenant_id: str) -> Decimal:
        """Sum of the holds in flight for ``tenant_id``."""
        return sum((r.amount for r in self.holds.values() if r.tenant_id == tenant_id), ZERO)

    def available(self, tenant_id: str) -> Decimal:
        """Balance minus holds in flight."""
        return self.balance(tenant_id) - self.held(tenant_id)

    def charged(self, tenant_id: str) -> Decimal:
        """Total charged to ``tenant_id`` by settled records."""
        return sum((r.price for r in self.records if r.tenant_id == tenant_id), ZERO)

    def reserve(self, tenant_id: str, amount: Decimal, request_id: str) -> Reservation:
        """Hold ``amount``; the same ``request_id`` returns the same hold."""
        existing = self._by_request.get(request_id)
        if existing is not None:
            return existing
        if amount < 0:
            raise InvalidRequest("a reservation cannot be negative", param="amount")
        available = self.available(tenant_id)
        if amount > available:
            raise InsufficientCredit(
                f"insufficient credit: this request needs up to ${amount:f}, "
                f"${max(available, ZERO):f} is available"
            )
        reservation = Reservation(id=f"rsv_{request_id}", tenant_id=tenant_id,
                                  micros=to_micros(amount))
        self.holds[reservation.id] = reservation
        self._by_request[request_id] = reservation
        return reservation

    def reserve_micros(self, tenant_id: str, micros: int, request_id: str) -> Reservation:
        """:meth:`reserve` of ``micros`` whole micro-dollars."""
        return self.reserve(tenant_id, from_micros(micros), request_id)

    def settle(self, reservation: Reservation, record: UsageRecord,
               micros: int | None = None) -> None:
        """Charge ``record.price`` (exactly: ``micros`` is not used) and drop the
        hold. Like the ledger's wallet, raises ``Conflict`` if the hold was
        already settled or released (so nothing is charged twice) and
        ``ValueError`` for another tenant's record or a negative price."""
        if reservation.id not in self.holds:
            raise Conflict(f"reservation {reservation.id} was already settled or released")
        if record.tenant_id != reservation.tenant_id:
            raise ValueError(f"record {record.request_id} is for another tenant")
        if record.price < 0:
            raise ValueError(f"record {record.request_id} has a negative price")
        del self.holds[reservation.id]
        self._balances[reservation.tenant_id] = self.balance(reservation.tenant_id) - record.price
        self.records.append(record)

    def release(self, reservation: Reservation) -> None:
        """Drop a hold without charging (idempotent)."""
        if self.holds.pop(reservation.id, None) is not None:
            self.released.append(reservation)
