"""The ledger: tenants and API keys, the double-entry journal, the versioned
price list, tenant wallets with reservations, the durable usage outbox, and
the outcomes of idempotent API mutations.

Imports only ``cambist.domain`` and ``cambist.store``.
"""

from cambist.ledger.accounts import (
    CASH,
    COMPUTE_COST,
    REVENUE_INFERENCE,
    REVENUE_LEASES,
    supplier_payable,
    tenant_account,
)
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.idempotency import IdempotencyStore, IdempotentCall
from cambist.ledger.journal import Entry, Journal
from cambist.ledger.keys import Keyring, KeyringRefresh, ensure_server_secret
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.plans import DEFAULT_PLANS, Plan, PlanBook
from cambist.ledger.prices import PriceBook, PriceBookRefresh
from cambist.ledger.queries import usage_records, usage_summary
from cambist.ledger.wallet import TenantWallet, WalletRefresh

__all__ = [
    "CASH",
    "COMPUTE_COST",
    "DEFAULT_PLANS",
    "REVENUE_INFERENCE",
    "REVENUE_LEASES",
    "Entry",
    "IdempotencyStore",
    "IdempotentCall",
    "Journal",
    "Keyring",
    "KeyringRefresh",
    "OutboxFlusher",
    "Plan",
    "PlanBook",
    "PriceBook",
    "PriceBookRefresh",
    "TenantWallet",
    "UsageOutbox",
    "WalletRefresh",
    "ensure_server_secret",
    "supplier_payable",
    "tenant_account",
    "usage_records",
    "usage_summary",
]
