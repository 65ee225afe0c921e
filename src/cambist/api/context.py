"""What the REST routes reach: one container built by the app assembly."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.deploy.controller import DeployController
from cambist.deploy.leasing import LeaseDesk
from cambist.deploy.records import Records
from cambist.domain.billing import Authenticator, PriceList
from cambist.domain.clock import Clock
from cambist.gateway.attestation import AttestationProbe
from cambist.ledger.budgets import KeyBudgets
from cambist.market.book import OfferBook
from cambist.perf.model import PerfModel
from cambist.store.events import EventLog

__all__ = ["ControlPlane", "Ledger", "WalletView"]


class Ledger(Protocol):
    async def tenant_balance(self, tenant_id: str) -> Decimal: ...
    async def topup(self, tenant_id: str, amount: Decimal, idempotency_key: str) -> Any: ...
    async def check(self) -> list[str]: ...


class WalletView(Protocol):
    def available(self, tenant_id: str) -> Decimal: ...
    def balance(self, tenant_id: str) -> Decimal: ...
    def credit(self, tenant_id: str) -> dict[str, Any]: ...
    async def topup(self, tenant_id: str, amount: Decimal, idempotency_key: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class ControlPlane:
    """Everything the control-plane routes use; built once in ``cambist.app``."""

    clock: Clock
    db: AsyncEngine
    book: OfferBook
    desk: LeaseDesk
    controller: DeployController
    records: Records
    perf: PerfModel
    events: EventLog
    auth: Authenticator
    keyring: Any
    journal: Ledger
    wallet: WalletView
    prices: PriceList
    price_book: Any
    attestation: AttestationProbe | None = None
    """Verifies attesting endpoints (the confidential tier); None where not run."""
    budgets: KeyBudgets | None = None
    """Per-key spend budgets (``PUT /v1/keys/{id}/budget``); None where not run."""
