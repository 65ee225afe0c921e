"""Tenant credit shared by every gateway process through Redis.

:class:`SharedWallet` keeps the synchronous, in-memory hot path of
:class:`~cambist.ledger.wallet.TenantWallet` (``reserve``/``settle``/``release``
touch only memory and the outbox) and agrees with the other processes through
Redis, off the request path. Money in Redis is whole micro-dollars as decimal
integer strings (exact below 2**53, $9e9).

Per tenant ``t``, Redis holds:

* ``{prefix}:used:{t}``: every usage charge ever reported, created from the
  journal's usage total the first time it is needed;
* ``{prefix}:cr:{t}``: a hash, one field per process: that process's
  *exposure*, its holds plus the charges it settled and has not reported yet.
  Only the owner writes its field, always with an absolute value.

and per process ``{prefix}:rpos:{process}``, how far its outbox was reported.

A tenant's credit is ``credit − used − Σ exposures``, where ``credit`` is the
journal's balance *without* usage entries (top-ups, refunds, lease charges),
which each process reloads every 2 s. Usage never enters that figure through
the journal: the flusher reports each outbox batch to Redis (moving it into
``used``, exactly once per byte range, guarded by ``rpos``) *before* it commits
the batch to the journal, so a stale journal view can never count a charge as
credit again.

A process pushes its exposure right after every change (one pipelined round
trip for every tenant that changed) and learns the tenant's credit back.
``reserve`` decides on that figure minus what it reserved since (unconfirmed).

**Bound.** A process reserves credit Redis has not confirmed only while its
unconfirmed reservations for the tenant stay within ``credit_slack`` (or when
it is the only unconfirmed one, whatever its size); so across ``N`` processes
a tenant's charges exceed its credit by at most
``N × max(credit_slack, largest single reservation)``, plus lease charges
posted in the last reload interval (2 s), as in the single-process wallet.
Beyond the slack it refuses with :class:`CreditPending` (429,
``code="credit_pending"``, retryable) until Redis answers, a round trip later
(fails closed while Redis is down). A process killed with ``kill -9`` leaves
its exposure in Redis (credit stays held, never spent twice) until it restarts
under the same name, reports its recovered outbox and clears its field.
If Redis loses its data, ``used`` is rebuilt from the journal and the bound
is exceeded by at most the charges not yet flushed at that moment.

**No allowances or pools yet.** This wallet charges every request to prepaid
credit; plans' daily allowances and monthly pools (:mod:`cambist.ledger.grants`)
need the single-process :class:`~cambist.ledger.wallet.TenantWallet`, and the
exchange refuses to start with Redis while any tenant's plan grants one.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import case, func, select

from cambist.domain.billing import Reservation
from cambist.domain.clock import Clock
from cambist.domain.errors import CambistError, Conflict, InsufficientCredit, InvalidRequest
from cambist.domain.ids import new_id
from cambist.domain.money import format_usd, from_micros, to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.accounts import REVENUE_INFERENCE, TENANT_PREFIX
from cambist.ledger.journal import Journal, lease_entries
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.wallet import TenantWallet
from cambist.store.schema import journal_entries, journal_lines

__all__ = ["CreditPending", "SharedWallet", "credit_books"]

log = logging.getLogger("cambist.ledger.shared_wallet")

class CreditPending(CambistError):
    """This process has reserved as much of a tenant's credit as it may before
    Redis confirms it; retry in a moment (a round trip to Redis)."""

    status = 429
    code = "credit_pending"
    type = "requests"
    retryable = True


_SYNC = """
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[4]) end
if tonumber(ARGV[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local used = tonumber(redis.call('GET', KEYS[2]))
local out = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do out = out + tonumber(v) end
return {string.format('%.0f', tonumber(ARGV[3]) - used - out), string.format('%.0f', used)}
"""

_REPORT = """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return cur end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('SET', KEYS[i], ARGV[2 * i]) end
  redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
"""


async def credit_books(journal: Journal) -> tuple[dict[str, int], dict[str, int]]:
    """Per tenant, in micro-dollars: the credit of every journal entry but usage
    (credit-normal), and the usage charged (debits), from one consistent query."""
    is_usage = journal_entries.c.kind == "usage"
    amount = journal_lines.c.amount_micros
    q = (
        select(journal_lines.c.account,
               func.coalesce(func.sum(case((is_usage, amount), else_=0)), 0),
               func.coalesce(func.sum(case((is_usage, 0), else_=amount)), 0))
        .join(journal_entries, journal_entries.c.id == journal_lines.c.entry_id)
        .where(journal_lines.c.account.startswith(TENANT_PREFIX, autoescape=True))
        .group_by(journal_lines.c.account)
    )
    async with journal.engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    credit = {a[len(TENANT_PREFIX):]: -int(other) for a, _, other in rows}
    usage = {a[len(TENANT_PREFIX):]: int(used) for a, used, _ in rows}
    return credit, usage


class SharedWallet(TenantWallet):
    """:class:`TenantWallet` whose credit is shared through Redis (bound above).

    ``process`` names this process stably across restarts (its outbox owner)."""

    def __init__(self, journal: Journal, outbox: UsageOutbox, clock: Clock, redis: Redis, *,
                 process: str, prefix: str = "cambist",
                 slack: Decimal = Decimal("0.50")) -> None:
        super().__init__(journal, outbox, clock)
        self._redis = redis
        self._process = process
        self._prefix = prefix
        self._slack = to_micros(slack)
        self._sync = redis.register_script(_SYNC)
        self._report = redis.register_script(_REPORT)
        self._credit: dict[str, int] = {}  # journal credit without usage
        self._jusage: dict[str, int] = {}  # journal usage (seeds Redis's `used`)
        self._used: dict[str, int] = {}  # Redis's `used`, last seen
        self._unreported: dict[str, int] = {}  # charges settled here, not in `used` yet
        self._view: dict[str, tuple[int, int]] = {}  # tenant -> (credit left, own exposure in it)
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._redis_lock = asyncio.Lock()  # pushes and reports never interleave
        self.failures = 0

    def _key(self, kind: str, tenant_id: str) -> str:
        return f"{self._prefix}:{kind}:{tenant_id}"

    # -- the books -------------------------------------------------------------

    async def load_books(self) -> None:
        """Reload the journal's credit without usage, and usage, per tenant."""
        self._credit, self._jusage = await credit_books(self._journal)

    async def load(self) -> None:
        """Reload the books and agree with Redis on every tenant (every 2 s:
        :class:`~cambist.ledger.wallet.WalletRefresh`)."""
        async with self._lock:
            await self.load_books()
        self._dirty.update(self._credit)
        await self.push()

    # -- what a tenant has -----------------------------------------------------

    def _exposure(self, tenant_id: str) -> int:
        return self._held.get(tenant_id, 0) + self._unreported.get(tenant_id, 0)

    def _available_micros(self, tenant_id: str) -> int:
        view = self._view.get(tenant_id)
        if view is None:  # never synced: the journal's word, within the slack
            view = (self._credit.get(tenant_id, 0) - self._jusage.get(tenant_id, 0), 0)
        left, included = view
        return left - (self._exposure(tenant_id) - included)

    def _unconfirmed(self, tenant_id: str) -> int:
        view = self._view.get(tenant_id)
        return self._exposure(tenant_id) - (view[1] if view else 0)

    def balance(self, tenant_id: str) -> Decimal:
        """Credit minus every charge reported anywhere and this process's
        unreported charges (holds not deducted)."""
        used = self._used.get(tenant_id, self._jusage.get(tenant_id, 0))
        return from_micros(self._credit.get(tenant_id, 0) - used
                           - self._unreported.get(tenant_id, 0))

    def balances(self) -> dict[str, Decimal]:
        """Every known tenant's balance (see :meth:`balance`)."""
        return {t: self.balance(t) for t in sorted(self._credit)}

    # -- the hot path ----------------------------------------------------------

    def reserve(self, tenant_id: str, amount: Decimal, request_id: str) -> Reservation:
        """Hold ``amount`` if the tenant's shared credit allows it (bound above);
        raises ``InsufficientCredit`` otherwise, or :class:`CreditPending` while
        this process is at its slack."""
        if not isinstance(amount, Decimal | int) or not Decimal(amount).is_finite():
            raise InvalidRequest(f"a reservation must be a Decimal amount, not {amount!r}")
        micros = to_micros(Decimal(amount))
        if micros < 0:
            raise InvalidRequest(f"a reservation must not be negative: {amount}")
        available = self._available_micros(tenant_id)
        if available <= 0 or available < micros:
            raise InsufficientCredit(
                f"insufficient credit: tenant {tenant_id} has "
                f"{format_usd(from_micros(max(available, 0)), 6)} available and this request "
                f"needs {format_usd(from_micros(micros), 6)}; add credit with "
                f"`cambist credits add {tenant_id} <amount>`")
        ahead = self._unconfirmed(tenant_id)
        if ahead > 0 and ahead + micros > self._slack:
            raise CreditPending(
                f"credit of tenant {tenant_id} is being confirmed across gateways "
                f"({format_usd(from_micros(ahead), 6)} in flight here); retry in a moment")
        rid = new_id("rsv")
        self._holds[rid] = (tenant_id, micros)
        self._held[tenant_id] = self._held.get(tenant_id, 0) + micros
        self._changed(tenant_id)
        return Reservation(rid, tenant_id, from_micros(micros))

    def settle(self, reservation: Reservation, record: UsageRecord) -> None:
        """Charge ``record.price``, drop the hold, append the record to the outbox;
        the charge stays in this process's exposure until the flusher reports it."""
        if reservation.id not in self._holds:
            raise Conflict(f"reservation {reservation.id} was already settled or released")
        if record.tenant_id != reservation.tenant_id:
            raise ValueError(f"record {record.request_id} is for tenant {record.tenant_id}, "
                             f"the reservation for {reservation.tenant_id}")
        charge = to_micros(record.price)
        if charge < 0:
            raise ValueError(f"record {record.request_id} has a negative price")
        self._outbox.append(record)  # durable first: if this fails the hold stays
        self._drop_hold(reservation.id)
        t = record.tenant_id
        self._unreported[t] = self._unreported.get(t, 0) + charge
        self._changed(t)

    def release(self, reservation: Reservation) -> None:
        """Drop a hold without charging (a no-op if already settled or released)."""
        if self._drop_hold(reservation.id):
            self._changed(reservation.tenant_id)

    def _changed(self, tenant_id: str) -> None:
        self._dirty.add(tenant_id)
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no event loop: the next load() pushes it
            self._task = loop.create_task(self.push())

    # -- Redis -----------------------------------------------------------------

    async def push(self) -> None:
        """Send the exposure of every changed tenant; learn their credit back."""
        async with self._redis_lock:
            while self._dirty:
                tenants = sorted(self._dirty)
                self._dirty.clear()
                sent = {t: self._exposure(t) for t in tenants}
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for t in tenants:
                            await self._sync(
                                keys=[self._key("cr", t), self._key("used", t)],
                                args=[self._process, sent[t], self._credit.get(t, 0),
                                      self._jusage.get(t, 0)],
                                client=pipe)
                        replies = await pipe.execute()
                except (RedisError, OSError) as exc:
                    self.failures += 1
                    self._dirty.update(tenants)
                    log.warning("credit: Redis did not answer (%s); reservations are "
                                "limited to the slack until it does", exc)
                    return
                for t, (left, used) in zip(tenants, replies, strict=True):
                    self._view[t] = (int(left), sent[t])
                    self._used[t] = int(used)

    async def report(self, outbox: UsageOutbox, start: int, end: int) -> None:
        """Move the charges of outbox bytes ``[start, end)`` into Redis's ``used``,
        exactly once (bytes already reported are skipped); called by the flusher
        before it commits the same bytes to the journal."""
        if end <= start:
            return
        async with self._redis_lock:
            pos_key = f"{self._prefix}:rpos:{self._process}"
            raw = await self._redis.get(pos_key)
            current = raw.decode() if isinstance(raw, bytes) else (raw or "")
            gen, _, offset = current.partition(":")
            frm = start
            if gen == outbox.generation and offset.isdigit():
                if int(offset) >= end:
                    return
                frm = max(start, int(offset))
            records, _ = outbox.read(frm, end - frm)
            charges: dict[str, int] = {}
            seen: set[str] = set()
            for r in records:
                if r.request_id not in seen:
                    seen.add(r.request_id)
                    charges[r.tenant_id] = charges.get(r.tenant_id, 0) + to_micros(r.price)
            charges = {t: c for t, c in charges.items() if c}
            new = f"{outbox.generation}:{end}"
            args: list[str | int] = [current, new]
            for t in charges:
                args += [charges[t], self._jusage.get(t, 0)]
            reply = await self._report(keys=[pos_key, *(self._key("used", t) for t in charges)],
                                       args=args)
            if (reply.decode() if isinstance(reply, bytes) else reply) != new:
                raise RuntimeError(f"usage report position of {self._process!r} moved under "
                                   "this process; is another process using the same name?")
            for t, c in charges.items():
                moved = min(c, self._unreported.get(t, 0))  # 0 for a previous life's records
                if moved:
                    self._unreported[t] -= moved
                    left, included = self._view.get(t, (0, 0))
                    self._view[t] = (left, included - moved)  # still counted, now as `used`
                    self._dirty.add(t)
        if self._dirty:
            await self.push()

    # -- postings --------------------------------------------------------------

    async def topup(self, tenant_id: str, amount: Decimal, idempotency_key: str) -> bool:
        """Add credit through the journal; every process sees it at its next reload."""
        async with self._lock:
            posted = await self._journal.topup(tenant_id, amount, idempotency_key)
            if posted:
                self._add(tenant_id, to_micros(amount))
        return posted

    async def refund(self, tenant_id: str, amount: Decimal, idempotency_key: str,
                     revenue_account: str = REVENUE_INFERENCE, memo: str = "") -> bool:
        """Give credit back through the journal."""
        async with self._lock:
            posted = await self._journal.refund(tenant_id, amount, idempotency_key,
                                                revenue_account, memo)
            if posted:
                self._add(tenant_id, to_micros(amount))
        return posted

    async def post_lease_cost(self, lease_id: str, supplier: str, owner_tenant: str | None,
                              amount: Decimal, fee_rate: Decimal, period_end: float) -> bool:
        """:meth:`Journal.post_lease_cost`, also charging the owner's credit here."""
        entries = lease_entries(lease_id, supplier, owner_tenant, amount, fee_rate, period_end)
        async with self._lock:
            posted = await self._journal.post_many(entries)
            if owner_tenant is not None and posted[-1]:
                self._add(owner_tenant, -to_micros(amount * (1 + fee_rate)))
        return any(posted)

    def _add(self, tenant_id: str, micros: int) -> None:
        self._credit[tenant_id] = self._credit.get(tenant_id, 0) + micros
        self._changed(tenant_id)
