"""Account names of the double-entry journal.

Lines are signed whole micro-dollars: positive is a debit, negative a credit,
and every entry sums to exactly zero. Accounts:

* ``tenant:{id}`` — a customer's prepaid credit. Credit-normal: a top-up
  credits it, a charge debits it, so the tenant's balance is the *negation*
  of the sum of its lines.
* ``platform:cash`` — money received (debited by top-ups).
* ``platform:revenue:inference`` — what tenants pay for tokens (the whole
  charge, however it was paid).
* ``platform:grants:allowance`` — inference paid from plans' daily allowances
  (debited by the allowance part of a usage charge: a cost of the plans).
* ``platform:grants:pool`` — inference paid from plans' monthly pools
  (debited by the pool part of a usage charge).
* ``platform:revenue:leases`` — what tenants pay for GPUs they rent.
* ``platform:compute_cost`` — what leases cost the platform.
* ``supplier:{name}:payable`` — what the platform owes a supplier.
* ``platform:book:inventory`` — the market-maker book's reserved capacity not
  yet used, at cost (debited when a term is bought, credited as its hours are
  used by own deployments, which debit ``platform:compute_cost``, or pass idle).
* ``platform:book:cost`` — reserved hours the platform's deployments did not
  use, at cost (whether resold or not).
* ``platform:book:resale`` — what buyers paid for the book's idle hours
  resold on the exchange at the market price.
"""

from __future__ import annotations

import re

__all__ = [
    "BOOK_COST",
    "BOOK_INVENTORY",
    "BOOK_RESALE",
    "CASH",
    "COMPUTE_COST",
    "GRANTS_ALLOWANCE",
    "GRANTS_POOL",
    "REVENUE_INFERENCE",
    "REVENUE_LEASES",
    "SUPPLIER_PREFIX",
    "TENANT_PREFIX",
    "supplier_payable",
    "tenant_account",
    "tenant_of",
    "validate_name_part",
]

CASH = "platform:cash"
REVENUE_INFERENCE = "platform:revenue:inference"
REVENUE_LEASES = "platform:revenue:leases"
GRANTS_ALLOWANCE = "platform:grants:allowance"
GRANTS_POOL = "platform:grants:pool"
COMPUTE_COST = "platform:compute_cost"
BOOK_INVENTORY = "platform:book:inventory"
BOOK_COST = "platform:book:cost"
BOOK_RESALE = "platform:book:resale"
TENANT_PREFIX = "tenant:"
SUPPLIER_PREFIX = "supplier:"

_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def validate_name_part(value: str, what: str) -> str:
    """Return ``value`` if it is a valid id or name inside an account name
    (1-64 of letters, digits, ``_ . -``), else raise ``ValueError``."""
    if not isinstance(value, str) or not _PART.match(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '.' or '-'")
    return value


def tenant_account(tenant_id: str) -> str:
    """The credit account of a tenant: ``tenant:{id}``."""
    return TENANT_PREFIX + validate_name_part(tenant_id, "tenant id")


def supplier_payable(supplier: str) -> str:
    """What the platform owes ``supplier``: ``supplier:{name}:payable``."""
    return f"{SUPPLIER_PREFIX}{validate_name_part(supplier, 'supplier name')}:payable"


def tenant_of(account: str) -> str | None:
    """The tenant id of a ``tenant:{id}`` account, else ``None``."""
    if account.startswith(TENANT_PREFIX):
        return account[len(TENANT_PREFIX) :]
    return None
