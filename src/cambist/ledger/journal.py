"""The double-entry journal: balanced, idempotent entries; derived balances.

Every entry is a set of signed lines in whole micro-dollars (+ debit,
− credit) that sum to exactly zero, written once under a unique idempotency
key. Amounts arrive as ``Decimal`` dollars and are rounded once, here, with
:func:`cambist.domain.money.to_micros`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.clock import Clock
from cambist.domain.errors import NotFound
from cambist.domain.money import from_micros, to_micros
from cambist.ledger._sql import insert_ignore
from cambist.ledger.accounts import (
    CASH,
    COMPUTE_COST,
    REVENUE_INFERENCE,
    REVENUE_LEASES,
    TENANT_PREFIX,
    supplier_payable,
    tenant_account,
)
from cambist.ledger.checks import journal_problems
from cambist.store.schema import journal_entries, journal_lines, tenants

__all__ = ["Entry", "Journal", "lease_entries", "prepare_lines"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry to post: lines are ``(account, dollars)``."""

    idempotency_key: str
    kind: str
    lines: Sequence[tuple[str, Decimal]]
    memo: str = ""


def prepare_lines(entry: Entry) -> list[tuple[str, int]]:
    """Validate ``entry`` and round its lines to micro-dollars (the one rounding).

    Raises ``ValueError`` when the key or kind is empty or too long, an amount
    is not a ``Decimal``/``int``, there are fewer than two lines, or the rounded
    lines do not sum to zero.
    """
    if not entry.idempotency_key or len(entry.idempotency_key) > 128:
        raise ValueError("an idempotency key must have 1-128 characters")
    if not entry.kind or len(entry.kind) > 32:
        raise ValueError("an entry kind must have 1-32 characters")
    if len(entry.lines) < 2:
        raise ValueError(f"entry {entry.idempotency_key!r} needs at least two lines")
    rounded: list[tuple[str, int]] = []
    for account, amount in entry.lines:
        if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
            raise ValueError(f"amount for {account!r} must be a Decimal, not {amount!r}")
        if not account or len(account) > 128:
            raise ValueError("an account name must have 1-128 characters")
        rounded.append((account, to_micros(Decimal(amount))))
    total = sum(m for _, m in rounded)
    if total != 0:
        raise ValueError(
            f"entry {entry.idempotency_key!r} is not balanced: "
            f"its lines sum to {total} micro-dollars after rounding"
        )
    return rounded


def lease_entries(
    lease_id: str,
    supplier: str,
    owner_tenant: str | None,
    amount: Decimal,
    fee_rate: Decimal,
    period_end: float,
) -> list[Entry]:
    """The entries for a lease's cost up to ``period_end``: ``lease_cost`` (debit
    ``platform:compute_cost``, credit ``supplier:{s}:payable``) and, when a
    tenant owns the lease, ``lease_charge`` (debit ``tenant:{id}``
    ``amount × (1 + fee_rate)``, credit ``platform:revenue:leases``)."""
    if not isinstance(amount, Decimal | int) or not isinstance(fee_rate, Decimal | int):
        raise ValueError("a lease cost and its fee rate must be Decimals")
    if amount < 0 or fee_rate < 0:
        raise ValueError("a lease cost and its fee rate must not be negative")
    entries = [
        Entry(
            f"lease:{lease_id}:{period_end:.3f}",
            "lease_cost",
            [(COMPUTE_COST, amount), (supplier_payable(supplier), -amount)],
            f"lease {lease_id} cost to {period_end:.3f}",
        )
    ]
    if owner_tenant is not None:
        charge = amount * (1 + fee_rate)
        entries.append(
            Entry(
                f"lease-charge:{lease_id}:{period_end:.3f}",
                "lease_charge",
                [(tenant_account(owner_tenant), charge), (REVENUE_LEASES, -charge)],
                f"lease {lease_id} charge to {period_end:.3f}",
            )
        )
    return entries


def _positive(amount: Decimal, what: str) -> Decimal:
    if not isinstance(amount, Decimal | int) or isinstance(amount, bool):
        raise ValueError(f"{what} must be a Decimal amount of dollars")
    amount = Decimal(amount)
    if not amount.is_finite() or to_micros(amount) <= 0:
        raise ValueError(f"{what} must be at least $0.000001, got {amount}")
    return amount


class Journal:
    """Posts balanced entries and derives balances from the journal lines."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    @property
    def engine(self) -> AsyncEngine:
        """The database engine the journal writes to."""
        return self._engine

    async def post(
        self,
        idempotency_key: str,
        kind: str,
        lines: list[tuple[str, Decimal]],
        memo: str = "",
    ) -> bool:
        """Post one entry; ``False`` (nothing written) if the key was already used."""
        return (await self.post_many([Entry(idempotency_key, kind, lines, memo)]))[0]

    async def post_many(self, entries: Sequence[Entry]) -> list[bool]:
        """Post several entries in one transaction; per entry, whether it was new."""
        prepared = self._prepare(entries)
        if not prepared:
            return []
        async with self._engine.begin() as conn:
            return await self._write(conn, entries, prepared)

    async def post_in(self, conn: AsyncConnection, entries: Sequence[Entry]) -> list[bool]:
        """Post entries inside the caller's transaction ``conn`` (so they commit
        or roll back together with the caller's other writes)."""
        prepared = self._prepare(entries)
        if not prepared:
            return []
        return await self._write(conn, entries, prepared)

    @staticmethod
    def _prepare(entries: Sequence[Entry]) -> list[list[tuple[str, int]]]:
        keys = [e.idempotency_key for e in entries]
        if len(set(keys)) != len(keys):
            raise ValueError("a batch must not repeat an idempotency key")
        return [prepare_lines(e) for e in entries]

    async def _write(
        self,
        conn: AsyncConnection,
        entries: Sequence[Entry],
        prepared: list[list[tuple[str, int]]],
    ) -> list[bool]:
        now = self._clock.now()
        rows = [
            {
                "idempotency_key": e.idempotency_key,
                "kind": e.kind,
                "memo": e.memo,
                "created_at": now,
            }
            for e in entries
        ]
        # The insert is the first statement, so SQLite takes the write lock
        # before anything is read; the unique key decides duplicates.
        stmt = insert_ignore(conn, journal_entries, ["idempotency_key"]).returning(
            journal_entries.c.id, journal_entries.c.idempotency_key
        )
        new_ids = {key: eid for eid, key in (await conn.execute(stmt, rows)).all()}
        line_rows = [
            {"entry_id": new_ids[e.idempotency_key], "account": account, "amount_micros": m}
            for e, lines in zip(entries, prepared, strict=True)
            if e.idempotency_key in new_ids
            for account, m in lines
        ]
        if line_rows:
            await conn.execute(insert(journal_lines), line_rows)
        return [e.idempotency_key in new_ids for e in entries]

    async def balance(self, account: str) -> Decimal:
        """The signed sum of an account's lines (debit-positive), in dollars."""
        q = select(func.coalesce(func.sum(journal_lines.c.amount_micros), 0)).where(
            journal_lines.c.account == account
        )
        async with self._engine.connect() as conn:
            return from_micros(int((await conn.execute(q)).scalar_one()))

    async def tenant_balance(self, tenant_id: str) -> Decimal:
        """A tenant's credit (credit-normal: the negated sum of its lines)."""
        return -(await self.balance(tenant_account(tenant_id)))

    async def balances(self, prefix: str) -> dict[str, Decimal]:
        """Signed sums (debit-positive) of every account starting with ``prefix``."""
        q = (
            select(journal_lines.c.account, func.sum(journal_lines.c.amount_micros))
            .where(journal_lines.c.account.startswith(prefix, autoescape=True))
            .group_by(journal_lines.c.account)
            .order_by(journal_lines.c.account)
        )
        async with self._engine.connect() as conn:
            return {a: from_micros(int(s)) for a, s in (await conn.execute(q)).all()}

    async def tenant_balances(self) -> dict[str, Decimal]:
        """Every tenant's credit (credit-normal), keyed by tenant id."""
        raw = await self.balances(TENANT_PREFIX)
        return {a[len(TENANT_PREFIX) :]: -s for a, s in raw.items()}

    async def _require_tenant(self, tenant_id: str) -> None:
        async with self._engine.connect() as conn:
            found = await conn.execute(select(tenants.c.id).where(tenants.c.id == tenant_id))
            if found.first() is None:
                raise NotFound(
                    f"no tenant {tenant_id!r}; list tenants with `cambist tenants list`",
                    param="tenant_id",
                )

    async def topup(self, tenant_id: str, amount: Decimal, idempotency_key: str) -> bool:
        """Add credit: debit ``platform:cash``, credit ``tenant:{id}``.
        ``False`` if the key was already used. Raises ``NotFound`` for an
        unknown tenant and ``ValueError`` for a non-positive amount."""
        amount = _positive(amount, "a top-up")
        account = tenant_account(tenant_id)
        await self._require_tenant(tenant_id)
        lines = [(CASH, amount), (account, -amount)]
        return await self.post(idempotency_key, "topup", lines, f"top-up {tenant_id}")

    async def refund(
        self,
        tenant_id: str,
        amount: Decimal,
        idempotency_key: str,
        revenue_account: str = REVENUE_INFERENCE,
        memo: str = "",
    ) -> bool:
        """Give credit back: debit the revenue account, credit ``tenant:{id}``."""
        amount = _positive(amount, "a refund")
        if revenue_account not in (REVENUE_INFERENCE, REVENUE_LEASES):
            raise ValueError(f"a refund reverses revenue, not {revenue_account!r}")
        account = tenant_account(tenant_id)
        await self._require_tenant(tenant_id)
        lines = [(revenue_account, amount), (account, -amount)]
        return await self.post(idempotency_key, "refund", lines, memo or f"refund {tenant_id}")

    async def post_lease_cost(
        self,
        lease_id: str,
        supplier: str,
        owner_tenant: str | None,
        amount: Decimal,
        fee_rate: Decimal,
        period_end: float,
    ) -> bool:
        """Post what a lease cost up to ``period_end`` (kind ``lease_cost``) and,
        for a tenant-owned lease, charge the tenant ``amount × (1 + fee_rate)``
        (kind ``lease_charge``), in one transaction. ``True`` if anything new
        was posted."""
        entries = lease_entries(lease_id, supplier, owner_tenant, amount, fee_rate, period_end)
        return any(await self.post_many(entries))

    async def check(self) -> list[str]:
        """Every invariant violation as a sentence; empty when the books are healthy."""
        async with self._engine.connect() as conn:
            return await journal_problems(conn)
