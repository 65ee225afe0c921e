"""Tenant credit on the hot path: in-memory balances, holds and settlement.

:class:`TenantWallet` implements :class:`cambist.domain.billing.Wallet`.
``reserve``, ``settle`` and ``release`` are synchronous and touch only memory
and (for ``settle``) one append to the durable outbox; the journal learns of
charges when :class:`~cambist.ledger.flusher.OutboxFlusher` flushes.

Balances are whole micro-dollars: ``journal balance − charges still in the
outbox``. A reservation holds ``to_micros(amount)``; ``available = balance −
holds``; ``reserve`` refuses when ``available`` would go negative.

**Spend order.** With a :class:`~cambist.ledger.plans.PlanBook`, a tenant's
plan may grant a daily allowance and a monthly pool, spent before its prepaid
balance (:mod:`cambist.ledger.grants`): ``settle`` splits each charge into
allowance, pool and prepaid parts and writes the split on the record; only
the prepaid part reduces the balance. ``reserve`` admits a request when
``allowance left + pool left + balance − holds`` covers it.

**Bound.** ``settle`` charges ``record.price`` whatever was reserved, so a
tenant's balance can fall below zero by at most the sum, over its settled
requests, of ``max(0, price − reserved)``. The gateway caps every charge at
its reservation, so through this wallet a balance never goes below zero.
Postings that bypass reservations (lease charges) are applied as they are
posted and are the deploy layer's to bound (stop leases when credit runs out).
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

from cambist.domain.billing import Reservation
from cambist.domain.clock import Clock
from cambist.domain.errors import Conflict, InsufficientCredit, InvalidRequest
from cambist.domain.money import format_usd, from_micros, to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.accounts import REVENUE_INFERENCE
from cambist.ledger.grants import GrantCounters, prepaid_micros
from cambist.ledger.journal import Journal, lease_entries
from cambist.ledger.outbox import UsageOutbox, read_position
from cambist.ledger.plans import PlanBook
from cambist.ledger.tenant_books import TenantBooks

__all__ = ["TenantWallet", "WalletRefresh"]


def _amount_micros(amount: Decimal) -> int:
    """A reservation's amount in whole micro-dollars (``InvalidRequest`` for
    anything but a finite Decimal or int)."""
    if type(amount) is not Decimal or not amount.is_finite():
        if not isinstance(amount, Decimal | int) or not Decimal(amount).is_finite():
            raise InvalidRequest(f"a reservation must be a Decimal amount, not {amount!r}")
        amount = Decimal(amount)
    return to_micros(amount)


class TenantWallet:
    """In-memory tenant balances backed by the journal and the usage outbox."""

    # Whether the journal sums keep usage charges apart (the shared wallet's need).
    _split_usage = False

    def __init__(self, journal: Journal, outbox: UsageOutbox, clock: Clock,
                 plans: PlanBook | None = None, reset_hour: int = 0) -> None:
        """``plans`` grants allowances and pools (``None``: none, all prepaid);
        ``reset_hour`` (0-23, UTC) is when allowance days begin."""
        self._journal = journal
        self._outbox = outbox
        self._clock = clock
        self._grants = GrantCounters(plans, reset_hour)
        self._books = TenantBooks(journal.engine, split_usage=self._split_usage)
        self._balances: dict[str, int] = {}
        self._holds: dict[str, tuple[str, int]] = {}  # reservation id -> (tenant, micros)
        self._hold_seq = itertools.count(1)
        self._held: dict[str, int] = {}  # tenant -> micros held
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Bring every balance up to date: the journal's (read incrementally:
        :class:`~cambist.ledger.tenant_books.TenantBooks`), minus outbox records
        not yet flushed. Holds in flight are kept."""
        async with self._lock, self._outbox.lock:
            position = await read_position(self._journal.engine, self._outbox.offset_key)
            now = self._clock.now()
            await self._books.refresh(now)
            granted = await self._grants.query(self._journal.engine, now)
            # No await from here on: the outbox read and the swap see the same
            # appends, and the flusher is locked out until the swap is done.
            balances = self._books.balances()
            pending = self._outbox.pending(position)
            for record in pending:
                t = record.tenant_id
                balances[t] = balances.get(t, 0) - prepaid_micros(record)
            self._balances = balances
            self._grants.rebuild(granted, pending, now)

    def balance(self, tenant_id: str) -> Decimal:
        """The tenant's balance in memory (charges settled, holds not deducted)."""
        return from_micros(self._balances.get(tenant_id, 0))

    def held(self, tenant_id: str) -> Decimal:
        """Credit held by the tenant's requests in flight."""
        return from_micros(self._held.get(tenant_id, 0))

    def available(self, tenant_id: str) -> Decimal:
        """Prepaid balance not needed by holds: ``min(balance, spendable)``
        (balance minus holds when the plan grants nothing)."""
        spendable = self._available_micros(tenant_id)
        prepaid = spendable - self._granted_micros(tenant_id) + self._held.get(tenant_id, 0)
        return from_micros(min(prepaid, spendable))

    def grants_left(self, tenant_id: str) -> tuple[Decimal, Decimal]:
        """Daily allowance left today and monthly pool left this month."""
        a, p = self._grants.left(tenant_id, self._clock.now())
        return from_micros(a), from_micros(p)

    def spendable(self, tenant_id: str) -> Decimal:
        """Allowance left + pool left + balance − holds: what a new request may reserve."""
        return from_micros(self._available_micros(tenant_id))

    def credit(self, tenant_id: str) -> dict[str, object]:
        """The tenant's plan and each source of credit (spend order: allowance,
        pool, prepaid), for display."""
        allowance, pool = self.grants_left(tenant_id)
        return {"plan": self._grants.plan_name(tenant_id), "allowance_left": allowance,
                "pool_left": pool, "prepaid": self.balance(tenant_id),
                "held": self.held(tenant_id), "spendable": self.spendable(tenant_id)}

    def balances(self) -> dict[str, Decimal]:
        """Every known tenant's in-memory balance."""
        return {t: from_micros(m) for t, m in sorted(self._balances.items())}

    def _granted_micros(self, tenant_id: str) -> int:
        return sum(self._grants.left(tenant_id, self._clock.now()))

    def _available_micros(self, tenant_id: str) -> int:
        return (self._granted_micros(tenant_id) + self._balances.get(tenant_id, 0)
                - self._held.get(tenant_id, 0))

    def reserve(self, tenant_id: str, amount: Decimal, request_id: str) -> Reservation:
        """Hold ``amount`` (rounded to micro-dollars) for ``request_id``.

        Raises ``InsufficientCredit`` when the tenant has no credit or its
        available balance is smaller than ``amount``."""
        return self.reserve_micros(tenant_id, _amount_micros(amount), request_id)

    def reserve_micros(self, tenant_id: str, micros: int, request_id: str) -> Reservation:
        """:meth:`reserve` of ``micros`` whole micro-dollars."""
        if micros < 0:
            raise InvalidRequest(f"a reservation must not be negative: {from_micros(micros)}")
        granted = self._granted_micros(tenant_id)
        balance = self._balances.get(tenant_id, 0)
        available = granted + balance - self._held.get(tenant_id, 0)
        if granted + balance <= 0 or available < micros:
            sources = ("" if not self._grants.enabled else
                       " (daily allowance left + monthly pool left + prepaid balance, "
                       "less requests in flight)")
            raise InsufficientCredit(
                f"insufficient credit: tenant {tenant_id} has "
                f"{format_usd(from_micros(max(available, 0)), 6)} available{sources} and this "
                f"request needs {format_usd(from_micros(micros), 6)}; add credit with "
                f"`cambist credits add {tenant_id} <amount>`"
            )
        rid = f"rsv_{next(self._hold_seq)}"  # ids of in-memory holds: a counter will do
        self._holds[rid] = (tenant_id, micros)
        self._held[tenant_id] = self._held.get(tenant_id, 0) + micros
        return Reservation(rid, tenant_id, micros)

    def _drop_hold(self, reservation_id: str) -> bool:
        hold = self._holds.pop(reservation_id, None)
        if hold is None:
            return False
        tenant, micros = hold
        left = self._held.get(tenant, 0) - micros
        if left:
            self._held[tenant] = left
        else:
            self._held.pop(tenant, None)
        return True

    def settle(self, reservation: Reservation, record: UsageRecord,
               micros: int | None = None) -> None:
        """Charge ``record.price`` (rounded once; ``micros`` when the caller
        gives it) in spend order (allowance, pool, prepaid: the split is
        written on the record), drop the hold, and append the record to the
        outbox. Raises ``Conflict`` if the reservation is no longer held
        (settled or released) and ``ValueError`` for a record of another tenant
        or with a negative price."""
        if reservation.id not in self._holds:
            raise Conflict(f"reservation {reservation.id} was already settled or released")
        if record.tenant_id != reservation.tenant_id:
            raise ValueError(
                f"record {record.request_id} is for tenant {record.tenant_id}, "
                f"the reservation for {reservation.tenant_id}"
            )
        charge = to_micros(record.price) if micros is None else micros
        if charge < 0:
            raise ValueError(f"record {record.request_id} has a negative price")
        allowance, pool = self._grants.split(record.tenant_id, charge, record.created_at,
                                             self._clock.now())
        if allowance or pool or record.allowance_micros or record.pool_micros:
            record = record._replace(allowance_micros=allowance, pool_micros=pool)
        self._outbox.append(record)  # durable first: if this fails the hold stays
        self._drop_hold(reservation.id)
        self._grants.count(record)
        self._balances[record.tenant_id] = (self._balances.get(record.tenant_id, 0)
                                            - (charge - allowance - pool))

    def release(self, reservation: Reservation) -> None:
        """Drop a hold without charging (a no-op if it was already settled or released)."""
        self._drop_hold(reservation.id)

    async def topup(self, tenant_id: str, amount: Decimal, idempotency_key: str) -> bool:
        """Add credit through the journal and in memory; ``False`` if the key was used."""
        async with self._lock:
            posted = await self._journal.topup(tenant_id, amount, idempotency_key)
            if posted:
                self._add(tenant_id, to_micros(amount))
        return posted

    async def refund(
        self,
        tenant_id: str,
        amount: Decimal,
        idempotency_key: str,
        revenue_account: str = REVENUE_INFERENCE,
        memo: str = "",
    ) -> bool:
        """Give credit back through the journal and in memory."""
        async with self._lock:
            posted = await self._journal.refund(
                tenant_id, amount, idempotency_key, revenue_account, memo
            )
            if posted:
                self._add(tenant_id, to_micros(amount))
        return posted

    async def post_lease_cost(
        self,
        lease_id: str,
        supplier: str,
        owner_tenant: str | None,
        amount: Decimal,
        fee_rate: Decimal,
        period_end: float,
    ) -> bool:
        """:meth:`Journal.post_lease_cost`, also charging the owner in memory."""
        entries = lease_entries(lease_id, supplier, owner_tenant, amount, fee_rate, period_end)
        async with self._lock:
            posted = await self._journal.post_many(entries)
            if owner_tenant is not None and posted[-1]:
                self._add(owner_tenant, -to_micros(amount * (1 + fee_rate)))
        return any(posted)

    def _add(self, tenant_id: str, micros: int) -> None:
        self._balances[tenant_id] = self._balances.get(tenant_id, 0) + micros


class WalletRefresh:
    """Control loop: reload balances so postings by other processes (a top-up
    from the CLI, lease charges) reach the hot path. Each step reads only the
    journal lines posted since the last (and every few minutes reconciles with
    the whole journal): :class:`~cambist.ledger.tenant_books.TenantBooks`."""

    name = "wallet-refresh"

    def __init__(self, wallet: TenantWallet, interval_s: float = 2.0) -> None:
        self.wallet = wallet
        self.interval_s = interval_s

    async def step(self, now: float) -> None:
        """Bring every balance up to date."""
        await self.wallet.load()
