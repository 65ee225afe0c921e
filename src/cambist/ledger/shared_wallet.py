"""Tenant credit shared by every gateway process through Redis.

:class:`SharedWallet` keeps the synchronous, in-memory hot path of
:class:`~cambist.ledger.wallet.TenantWallet` (``reserve``/``settle``/``release``
touch only memory and the outbox) and agrees with the other processes through
Redis, off the request path. Money in Redis is whole micro-dollars as decimal
integer strings (exact below 2**53, $9e9); the key layout is in
:mod:`cambist.ledger.shared_scripts`. The mechanism and its bounds are
stated in full in ``docs/SCALE.md`` (*Credit*); in short:

A tenant's credit is ``credit − used − Σ exposures``: ``credit`` is the
journal's balance *without* usage entries (top-ups, refunds, lease charges),
reloaded every 2 s; ``used`` is every usage charge reported to Redis; each
process's *exposure* is its holds plus the charges it settled and has not
reported. The flusher reports each outbox batch into ``used`` (exactly once
per byte range, guarded by ``rpos``) *before* it commits the batch to the
journal, so a stale journal view never counts a charge as credit again. A
process pushes its exposure within :data:`~cambist.ledger.pacing.PUSH_INTERVAL_S`
of a change (at once for a tenant whose plan grants allowances or pools, or
whose unconfirmed holds reach half the slack) and learns the credit back;
``reserve`` decides on that figure minus what it reserved since.

**Bound.** A process reserves credit Redis has not confirmed only within
``credit_slack`` (or one reservation, whatever its size), else it refuses with
:class:`CreditPending` (429, retryable) until Redis answers (fails closed
while Redis is down); so across ``N`` processes a tenant's charges exceed its
credit by at most ``N × max(credit_slack, largest single reservation)``, plus
lease charges posted in the last reload interval. A process killed with
``kill -9`` leaves its exposure in Redis (held, never spent twice) until it
restarts under the same name and reports its recovered outbox.

**Allowances and pools.** With a :class:`~cambist.ledger.plans.PlanBook`, a
charge is paid from the plan's daily allowance, then its monthly pool, then
prepaid credit (:mod:`cambist.ledger.grants`). Redis holds each period's
reported grant parts (``gused``) and each process's *claim* on the rest
(``gclaim``); with each push one Lua script claims grants for the process's
holds atomically, and ``settle`` pays only from this process's *confirmed*
claims on the periods of ``record.created_at`` (the split is written on the
record before the outbox append), so a period's grants are never overspent
across processes; a charge settling before its hold's claim is confirmed is
paid from prepaid credit instead, within the credit bound. The report moves
the grant parts into ``gused`` under the same ``rpos`` guard.
"""

from __future__ import annotations

import asyncio
import logging
import math
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cambist.domain.billing import Reservation
from cambist.domain.clock import Clock
from cambist.domain.errors import CambistError, Conflict, InsufficientCredit, InvalidRequest
from cambist.domain.money import format_usd, from_micros, to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger.grants import charge_parts
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.pacing import PUSH_INTERVAL_S, PushPacer
from cambist.ledger.plans import PlanBook
from cambist.ledger.redis_scripts import ScriptCall, run_scripts
from cambist.ledger.shared_scripts import GRANT, REPORT, SYNC
from cambist.ledger.wallet import TenantWallet, _amount_micros

__all__ = ["CreditPending", "SharedWallet"]

log = logging.getLogger("cambist.ledger.shared_wallet")

class CreditPending(CambistError):
    """This process has reserved as much of a tenant's credit as it may before
    Redis confirms it; retry in a moment (a round trip to Redis)."""

    status = 429
    code = "credit_pending"
    type = "requests"
    retryable = True


class SharedWallet(TenantWallet):
    """:class:`TenantWallet` whose credit is shared through Redis (bound above).

    ``process`` names this process stably across restarts (its outbox owner);
    ``plans`` and ``reset_hour`` grant allowances and pools as in
    :class:`~cambist.ledger.wallet.TenantWallet`, shared through Redis."""

    _split_usage = True  # credit without usage, and usage, apart

    def __init__(self, journal: Journal, outbox: UsageOutbox, clock: Clock, redis: Redis, *,
                 process: str, prefix: str = "cambist",
                 slack: Decimal = Decimal("0.50"), plans: PlanBook | None = None,
                 reset_hour: int = 0, push_interval_s: float = PUSH_INTERVAL_S) -> None:
        super().__init__(journal, outbox, clock, plans, reset_hour)
        self._redis = redis
        self._process = process
        self._prefix = prefix
        self._slack = to_micros(slack)
        self._sync = redis.register_script(SYNC)
        self._report = redis.register_script(REPORT)
        self._grant = redis.register_script(GRANT)
        # Grants, per tenant: this process's claims as Redis last confirmed them
        # (day start, allowance claim, month start, pool claim), what was left
        # unclaimed then (allowance, pool), and per (tenant, "a"|"p", period
        # start) the grant parts settled here and not reported yet, and the
        # usage table's sums at the last load (seed Redis's counters).
        self._claims: dict[str, tuple[float, int, float, int]] = {}
        self._gfree: dict[str, tuple[int, int]] = {}
        self._gspent: dict[tuple[str, str, float], int] = {}
        self._gseed: dict[tuple[str, str, float], int] = {}
        self._credit: dict[str, int] = {}  # journal credit without usage
        self._jusage: dict[str, int] = {}  # journal usage (seeds Redis's `used`)
        self._used: dict[str, int] = {}  # Redis's `used`, last seen
        self._unreported: dict[str, int] = {}  # charges settled here, not in `used` yet
        self._view: dict[str, tuple[int, int]] = {}  # tenant -> (credit left, own exposure in it)
        self._dirty: set[str] = set()
        self._pacer = PushPacer(self._push_paced, push_interval_s)
        self._redis_lock = asyncio.Lock()  # pushes and reports never interleave
        # Whether any plan grants an allowance or a pool (the plan book does not
        # change): when none does, the hot path skips looking the tenant's up.
        self._granting = self._grants.enabled
        self.failures = 0

    def _key(self, kind: str, tenant_id: str) -> str:
        return f"{self._prefix}:{kind}:{tenant_id}"

    def _gkey(self, kind: str, side: str, tenant_id: str, start: float) -> str:
        """``{prefix}:gused:a:{t}:{day}`` and the like (``gclaim`` for the hash)."""
        return f"{self._prefix}:{kind}:{side}:{tenant_id}:{int(start)}"

    def _gttl(self, side: str, start: float, now: float) -> int:
        """Seconds a period's keys live: a day past the period's end."""
        p = self._grants.periods
        end = start + 86_400 if side == "a" else p.month_after(start)
        return max(1, math.ceil(end + 86_400 - now))

    # -- the books -------------------------------------------------------------

    async def load_books(self) -> None:
        """Reload the journal's credit without usage, and usage, per tenant, and
        the ``usage`` table's allowance and pool sums of the current and
        previous periods (what Redis's grant counters start from). The journal is
        read incrementally (:class:`~cambist.ledger.tenant_books.TenantBooks`)."""
        now = self._clock.now()
        await self._books.refresh(now)
        self._credit, self._jusage = self._books.credit(), self._books.usage()
        allowance, pool = await self._grants.query(self._journal.engine, now)
        seed = {(t, "a", d): v for (t, d), v in allowance.items()}
        seed.update({(t, "p", m): v for (t, m), v in pool.items()})
        self._gseed = seed

    async def load(self) -> None:
        """Reload the books and agree with Redis on every tenant (every 2 s:
        :class:`~cambist.ledger.wallet.WalletRefresh`)."""
        async with self._lock:
            await self.load_books()
        self._dirty.update(self._credit, self._claims, (t for t, _, _ in self._gseed))
        await self.push()

    # -- what a tenant has -----------------------------------------------------

    def _exposure(self, tenant_id: str) -> int:
        return self._held.get(tenant_id, 0) + self._unreported.get(tenant_id, 0)

    def _standing(self, tenant_id: str) -> tuple[int, int]:
        """(prepaid credit this process may count on, the part of its exposure
        Redis has not confirmed yet)."""
        view = self._view.get(tenant_id)
        if view is None:  # never synced: the journal's word, within the slack
            view = (self._credit.get(tenant_id, 0) - self._jusage.get(tenant_id, 0), 0)
        left, included = view
        ahead = self._exposure(tenant_id) - included
        return left - ahead, ahead

    def _prepaid_micros(self, tenant_id: str) -> int:
        return self._standing(tenant_id)[0]

    def _available_micros(self, tenant_id: str) -> int:
        return self._granted_micros(tenant_id) + self._prepaid_micros(tenant_id)

    def _grant_left(self, tenant_id: str) -> tuple[int, int]:
        """Allowance and pool this process may count on now: what Redis left
        unclaimed at the last sync plus its own claims not spent yet (before
        any sync of the period: the usage table's word, within the slack)."""
        cap_a, cap_p = self._grants.limits(tenant_id)
        if not cap_a and not cap_p:
            return 0, 0
        now = self._clock.now()
        day, month = self._grants.periods.day(now), self._grants.periods.month(now)
        claims = self._claims.get(tenant_id)
        free = self._gfree.get(tenant_id, (0, 0))
        out: list[int] = []
        sides: tuple[tuple[str, int, float, int], ...] = (("a", cap_a, day, 0),
                                                          ("p", cap_p, month, 2))
        for side, cap, start, i in sides:
            spent = self._gspent.get((tenant_id, side, start), 0)
            if claims is not None and claims[i] == start:
                out.append(max(0, free[i // 2] + int(claims[i + 1]) - spent))
            else:
                out.append(max(0, cap - self._gseed.get((tenant_id, side, start), 0) - spent))
        return out[0], out[1]

    def _granted_micros(self, tenant_id: str) -> int:
        return sum(self._grant_left(tenant_id))

    def grants_left(self, tenant_id: str) -> tuple[Decimal, Decimal]:
        """Daily allowance and monthly pool left, as this process sees them."""
        a, p = self._grant_left(tenant_id)
        return from_micros(a), from_micros(p)

    def _split(self, tenant_id: str, charge: int, created_at: float) -> tuple[int, int]:
        """A charge's allowance and pool parts, from this process's confirmed
        claims on the periods of ``created_at`` only."""
        claims = self._claims.get(tenant_id)
        if charge <= 0 or claims is None:
            return 0, 0
        day, month = self._grants.periods.day(created_at), self._grants.periods.month(created_at)
        a = p = 0
        if claims[0] == day:
            a = min(charge, max(0, claims[1] - self._gspent.get((tenant_id, "a", day), 0)))
        if claims[2] == month:
            p = min(charge - a,
                    max(0, claims[3] - self._gspent.get((tenant_id, "p", month), 0)))
        return a, p

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
        return self.reserve_micros(tenant_id, _amount_micros(amount), request_id)

    def reserve_micros(self, tenant_id: str, micros: int, request_id: str) -> Reservation:
        """:meth:`reserve` of ``micros`` whole micro-dollars."""
        if micros < 0:
            raise InvalidRequest(f"a reservation must not be negative: {from_micros(micros)}")
        t = tenant_id
        # Looked up once: the push's urgency needs it too.
        cap_a, cap_p = self._grants.limits(t) if self._granting else (0, 0)
        granted = sum(self._grant_left(t)) if cap_a or cap_p else 0
        # _standing, written out (once per request).
        view = self._view.get(t)
        if view is None:  # never synced: the journal's word, within the slack
            view = (self._credit.get(t, 0) - self._jusage.get(t, 0), 0)
        held = self._held.get(t, 0)
        ahead = held + self._unreported.get(t, 0) - view[1]
        available = granted + view[0] - ahead
        if available <= 0 or available < micros:
            raise InsufficientCredit(
                f"insufficient credit: tenant {t} has "
                f"{format_usd(from_micros(max(available, 0)), 6)} available and this request "
                f"needs {format_usd(from_micros(micros), 6)}; add credit with "
                f"`cambist credits add {t} <amount>`")
        if ahead > 0 and ahead + micros > self._slack:
            raise CreditPending(
                f"credit of tenant {t} is being confirmed across gateways "
                f"({format_usd(from_micros(ahead), 6)} in flight here); retry in a moment")
        rid = f"rsv_{next(self._hold_seq)}"
        self._holds[rid] = (t, micros)
        self._held[t] = held + micros
        self._dirty.add(t)
        self._pacer.kick(bool(cap_a or cap_p) or 2 * (max(ahead, 0) + micros) >= self._slack)
        return Reservation(rid, t, micros)

    def settle(self, reservation: Reservation, record: UsageRecord,
               micros: int | None = None) -> None:
        """Charge ``record.price`` (allowance, pool, prepaid: from this process's
        confirmed claims; the split is written on the record), drop the hold,
        append the record to the outbox; the prepaid part stays in this
        process's exposure, the grant parts in its claims, until the flusher
        reports them. ``micros``: ``record.price`` rounded, when the caller has it."""
        if reservation.id not in self._holds:
            raise Conflict(f"reservation {reservation.id} was already settled or released")
        if record.tenant_id != reservation.tenant_id:
            raise ValueError(f"record {record.request_id} is for tenant {record.tenant_id}, "
                             f"the reservation for {reservation.tenant_id}")
        charge = to_micros(record.price) if micros is None else micros
        if charge < 0:
            raise ValueError(f"record {record.request_id} has a negative price")
        t = record.tenant_id
        allowance = pool = 0
        if t in self._claims:  # this process claimed grants for the tenant
            allowance, pool = self._split(t, charge, record.created_at)
        if allowance or pool or record.allowance_micros or record.pool_micros:
            record = record._replace(allowance_micros=allowance, pool_micros=pool)
        self._outbox.append(record)  # durable first: if this fails the hold stays
        # _drop_hold, written out (once per request); the hold is there (checked above).
        micros_held = self._holds.pop(reservation.id)[1]
        left = self._held.get(t, 0) - micros_held
        if left:
            self._held[t] = left
        else:
            self._held.pop(t, None)
        if allowance:
            k = (t, "a", self._grants.periods.day(record.created_at))
            self._gspent[k] = self._gspent.get(k, 0) + allowance
        if pool:
            k = (t, "p", self._grants.periods.month(record.created_at))
            self._gspent[k] = self._gspent.get(k, 0) + pool
        self._unreported[t] = self._unreported.get(t, 0) + charge - allowance - pool
        self._dirty.add(t)
        if self._granting:
            cap_a, cap_p = self._grants.limits(t)
            self._pacer.kick(bool(cap_a or cap_p))
        else:
            self._pacer.kick()

    def release(self, reservation: Reservation) -> None:
        """Drop a hold without charging (a no-op if already settled or released)."""
        if self._drop_hold(reservation.id):
            self._changed(reservation.tenant_id)

    def _changed(self, tenant_id: str, near_slack: bool = False) -> None:
        """Queue the tenant for the next push (at once if ``near_slack`` or granted)."""
        self._dirty.add(tenant_id)
        if not near_slack:
            cap_a, cap_p = self._grants.limits(tenant_id)
            near_slack = bool(cap_a or cap_p)
        self._pacer.kick(near_slack)

    # -- Redis -----------------------------------------------------------------

    def _grant_args(self, tenant_id: str, now: float
                    ) -> tuple[float, float, list[str], list[str | int | float]] | None:
        """The grant claim of a tenant whose plan grants one: its periods, the
        script's keys and arguments (``None`` for a plan without grants)."""
        cap_a, cap_p = self._grants.limits(tenant_id)
        if not cap_a and not cap_p:
            return None
        day, month = self._grants.periods.day(now), self._grants.periods.month(now)
        t = tenant_id
        keys = [self._gkey("gused", "a", t, day), self._gkey("gclaim", "a", t, day),
                self._gkey("gused", "p", t, month), self._gkey("gclaim", "p", t, month)]
        args: list[str | int | float] = [
            self._process, self._held.get(t, 0),
            self._gspent.get((t, "a", day), 0), self._gspent.get((t, "p", month), 0),
            cap_a, cap_p, self._gseed.get((t, "a", day), 0),
            self._gseed.get((t, "p", month), 0),
            self._gttl("a", day, now), self._gttl("p", month, now)]
        return day, month, keys, args

    def _drop_claims(self, tenants: list[str]) -> None:
        """Redis may or may not have applied a push it did not answer: spend no
        claim beyond what is already spent until it answers (fail closed)."""
        for t in tenants:
            c = self._claims.get(t)
            if c is not None:
                self._claims[t] = (c[0], min(c[1], self._gspent.get((t, "a", c[0]), 0)),
                                   c[2], min(c[3], self._gspent.get((t, "p", c[2]), 0)))

    async def push(self) -> None:
        """Send the exposure of every tenant changed so far and claim its
        grants for the holds here; learn its credit and grants back. One round
        trip: changes made meanwhile go with the next paced push (pushing until
        none is left never ends under load)."""
        async with self._redis_lock:
            if await self._push_batch() and self._dirty:
                self._pacer.kick()

    async def _push_paced(self) -> bool:  # the pacer's: whether to go on
        async with self._redis_lock:
            return bool(self._dirty) and await self._push_batch() and bool(self._dirty)

    async def _push_batch(self) -> bool:
        """One round trip for the tenants changed so far; ``False`` if Redis
        did not answer (they stay queued)."""
        if not self._dirty:
            return True
        tenants = sorted(self._dirty)
        self._dirty.clear()
        sent = {t: self._exposure(t) for t in tenants}
        now = self._clock.now()
        grants = {t: self._grant_args(t, now) for t in tenants}
        calls: list[ScriptCall] = []
        for t in tenants:
            calls.append((self._sync, [self._key("cr", t), self._key("used", t)],
                          [self._process, sent[t], self._credit.get(t, 0),
                           self._jusage.get(t, 0)]))
            g = grants[t]
            if g is not None:
                calls.append((self._grant, g[2], g[3]))
        try:
            replies = iter(await run_scripts(self._redis, calls))
        except (RedisError, OSError) as exc:
            self.failures += 1
            self._dirty.update(tenants)
            self._drop_claims(tenants)
            log.warning("credit: Redis did not answer (%s); reservations are "
                        "limited to the slack until it does", exc)
            return False
        for t in tenants:
            left, used = next(replies)
            self._view[t] = (int(left), sent[t])
            self._used[t] = int(used)
            g = grants[t]
            if g is not None:
                a, p, a_free, p_free = (int(v) for v in next(replies))
                self._claims[t] = (g[0], a, g[1], p)
                self._gfree[t] = (a_free, p_free)
        return True

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
            batch = outbox.read_batch(frm, end - frm)  # the flusher's, when frm == start
            charges, granted = charge_parts(batch.charges(), self._grants.periods)
            new = f"{outbox.generation}:{end}"
            now = self._clock.now()
            args: list[str | int] = [current, new]
            keys = [pos_key]
            for t in charges:
                keys.append(self._key("used", t))
                args += [charges[t], self._jusage.get(t, 0), 0]
            for (gt, side, pstart), part in granted.items():
                keys.append(self._gkey("gused", side, gt, pstart))
                args += [part, self._gseed.get((gt, side, pstart), 0),
                         self._gttl(side, pstart, now)]
            reply = await self._report(keys=keys, args=args)
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
            for gk, part in granted.items():
                gmoved = min(part, self._gspent.get(gk, 0))  # 0: a previous life's records
                if gmoved:
                    if gmoved == self._gspent[gk]:
                        del self._gspent[gk]
                    else:
                        self._gspent[gk] -= gmoved
                    gt, side, pstart = gk
                    claim = self._claims.get(gt)
                    if claim is not None and side == "a" and claim[0] == pstart:
                        self._claims[gt] = (claim[0], claim[1] - gmoved, claim[2], claim[3])
                    elif claim is not None and side == "p" and claim[2] == pstart:
                        self._claims[gt] = (claim[0], claim[1], claim[2], claim[3] - gmoved)
                    self._dirty.add(gt)
        if self._dirty:
            await self.push()

    # Postings (topup, refund, post_lease_cost) are TenantWallet's: they call
    # ``_add`` below, which marks the tenant for the next push to Redis.

    def _add(self, tenant_id: str, micros: int) -> None:
        self._credit[tenant_id] = self._credit.get(tenant_id, 0) + micros
        self._changed(tenant_id)
