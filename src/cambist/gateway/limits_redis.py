"""Rate limits shared by every gateway process through Redis.

The buckets of :mod:`cambist.gateway.limits` (requests and tokens per minute,
per key and per tenant) live in Redis as hashes ``{prefix}:rl:{k|t}:{id}:{req|tok}``
holding ``level`` and ``stamp``; one Lua script refills a bucket to ``now``
and applies a signed take atomically. The hot path stays synchronous and in
memory: each process keeps a local copy of every bucket it uses, takes from
it at once, and pushes the takes (and the refunds of settled token estimates)
to Redis within :data:`~cambist.ledger.pacing.PUSH_INTERVAL_S` (at once when a
bucket's unconfirmed takes reach half its slack), in one pipelined round trip
for all dirty buckets; the reply resets the local copy to Redis's level minus
what was taken since.

**Bound.** A process admits a take that Redis has not confirmed yet only while
its unconfirmed takes on that bucket stay within the bucket's *slack*
``S = max(1, floor(limit * limit_slack_fraction))`` (or when it is the only
unconfirmed take, whatever its size); otherwise it refuses with 429 and a
``Retry-After`` of 50 ms. Redis's bucket admits at most ``L + L*t/60`` in any
``t`` seconds, and each process can be ahead of it by at most its unconfirmed
takes, so across ``N`` processes a bucket admits at most
``L + L*t/60 + N * max(S, largest single take)`` in any ``t`` seconds (for
requests: ``N * S`` more than one process could). Refusals stay exact: a
process refuses only on its copy, which lags Redis by one round trip.

While Redis is unreachable, a process keeps admitting on its local copies
only up to the slack per bucket and then refuses (fails closed); the takes
are pushed when Redis answers again. Time comes from the injected clock of
each process, so processes on several machines need synchronized clocks (a
skew of ``d`` seconds can add ``L*d/60`` to a bucket).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cambist.domain.clock import Clock
from cambist.gateway.limits import RateLimiter, TokenBucket
from cambist.ledger.pacing import PUSH_INTERVAL_S, PushPacer
from cambist.ledger.plans import PlanBook
from cambist.ledger.redis_scripts import run_scripts

__all__ = ["CONFIRM_WAIT_S", "LimitSync", "SharedBucket", "SharedRateLimiter"]

log = logging.getLogger("cambist.gateway.limits")

CONFIRM_WAIT_S = 0.05
"""``Retry-After`` when a process must wait for Redis to confirm its takes."""

_IDLE_S = 120.0  # a bucket unused this long is full again: forget it (Redis expires it too)

_TAKE = """
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local s = redis.call('HMGET', KEYS[1], 'level', 'stamp')
local level = tonumber(s[1])
local stamp = tonumber(s[2])
if level == nil or stamp == nil then
  level = cap
  stamp = now
end
if level > cap then level = cap end
if now > stamp then
  level = math.min(cap, level + (now - stamp) * rate)
  stamp = now
end
level = math.min(cap, level + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', tostring(stamp))
redis.call('EXPIRE', KEYS[1], ARGV[5])
return tostring(level)
"""


class SharedBucket(TokenBucket):
    """A local copy of a Redis bucket: ``level`` is Redis's last answer, refilled
    locally, minus the takes not yet confirmed (``pending`` not yet sent,
    ``inflight`` sent and awaiting the reply)."""

    __slots__ = ("_owner", "inflight", "name", "pending", "queued", "slack")

    def __init__(self, name: str, capacity: int, now: float, slack: int,
                 owner: SharedRateLimiter) -> None:
        super().__init__(capacity, now, "tokens" if name.endswith(":tok") else "requests")
        self.name = name
        self.slack = slack
        self.pending = 0.0
        self.inflight = 0.0
        self.queued = False  # in the owner's queue for the next push
        self._owner = owner

    @property
    def unconfirmed(self) -> float:
        """Units taken here that Redis has not confirmed (negative: refunds)."""
        return -(self.pending + self.inflight)

    def wait_s(self, cost: float) -> float:
        """As :meth:`TokenBucket.wait_s`, and a short wait while the takes Redis
        has not confirmed would exceed the slack (the bound of the module)."""
        wait = super().wait_s(cost)
        ahead = self.unconfirmed
        if wait == 0.0 and ahead > 0 and ahead + cost > self.slack:
            return CONFIRM_WAIT_S
        return wait

    def adjust(self, delta: float) -> None:
        """Take or give back locally, and queue the change for Redis (once per
        push; again at once when the unconfirmed takes reach half the slack)."""
        level = self.level + delta
        self.level = level if level < self.capacity else self.capacity
        pending = self.pending = self.pending + delta
        if not self.queued or -2 * (pending + self.inflight) >= self.slack:
            self._owner.mark(self)

    def take_pair(self, other: TokenBucket, cost: float, now: float) -> float:
        """:meth:`TokenBucket.take_pair` with the refill, :meth:`wait_s` and
        :meth:`adjust` of both buckets written out, on local variables (twice
        per request: each attribute read or written costs; its refusals go
        through :meth:`wait_s`)."""
        o: SharedBucket = other  # type: ignore[assignment]  # a pair is of one class
        level = self.level
        if now > self.stamp:
            level += (now - self.stamp) * self.rate
            if level > self.capacity:
                level = self.capacity
            self.level, self.stamp = level, now
        olevel = o.level
        if now > o.stamp:
            olevel += (now - o.stamp) * o.rate
            if olevel > o.capacity:
                olevel = o.capacity
            o.level, o.stamp = olevel, now
        if level < cost or olevel < cost:
            return max(self.wait_s(cost), o.wait_s(cost))
        pending, opending = self.pending, o.pending
        ahead = -(pending + self.inflight)  # taken here, not confirmed by Redis
        oahead = -(opending + o.inflight)
        if (ahead > 0 and ahead + cost > self.slack) or (oahead > 0 and oahead + cost > o.slack):
            return CONFIRM_WAIT_S
        self.level, self.pending = level - cost, pending - cost
        if not self.queued or 2 * (ahead + cost) >= self.slack:
            self._owner.mark(self)
        o.level, o.pending = olevel - cost, opending - cost
        if not o.queued or 2 * (oahead + cost) >= o.slack:
            o._owner.mark(o)
        return 0.0

    def give_pair(self, other: TokenBucket, delta: float, now: float) -> None:
        """:meth:`TokenBucket.give_pair` with the refill and :meth:`adjust` of
        both buckets written out (once per request, when its tokens settle)."""
        o: SharedBucket = other  # type: ignore[assignment]  # a pair is of one class
        level = self.level
        if now > self.stamp:
            level += (now - self.stamp) * self.rate
            if level > self.capacity:  # the refill's cap, then the give's (as refill, adjust)
                level = self.capacity
            self.stamp = now
        level += delta
        self.level = level if level < self.capacity else self.capacity
        pending = self.pending = self.pending + delta
        if not self.queued or -2 * (pending + self.inflight) >= self.slack:
            self._owner.mark(self)
        olevel = o.level
        if now > o.stamp:
            olevel += (now - o.stamp) * o.rate
            if olevel > o.capacity:
                olevel = o.capacity
            o.stamp = now
        olevel += delta
        o.level = olevel if olevel < o.capacity else o.capacity
        pending = o.pending = o.pending + delta
        if not o.queued or -2 * (pending + o.inflight) >= o.slack:
            o._owner.mark(o)

    def confirm(self, level: float, pushed_at: float) -> None:
        """Redis's level after the push made at ``pushed_at``."""
        self.inflight = 0.0
        self.level = min(self.capacity, level + self.pending)
        self.stamp = pushed_at


class SharedRateLimiter(RateLimiter):
    """:class:`RateLimiter` whose buckets are shared through Redis (see the bound above)."""

    def __init__(self, plans: PlanBook, clock: Clock, redis: Redis, *, prefix: str = "cambist",
                 slack_fraction: float = 0.02, push_interval_s: float = PUSH_INTERVAL_S) -> None:
        super().__init__(plans, clock)
        if not 0 < slack_fraction <= 1:
            raise ValueError("slack_fraction is a fraction in (0, 1]")
        self._redis = redis
        self._prefix = prefix
        self._fraction = slack_fraction
        self._script = redis.register_script(_TAKE)
        self._buckets: dict[str, SharedBucket] = {}
        self._dirty: dict[str, SharedBucket] = {}
        self._pacer = PushPacer(self._push_paced, push_interval_s)
        self._lock = asyncio.Lock()  # one push at a time: replies confirm in order
        self.failures = 0  # pushes Redis did not answer

    def new_bucket(self, name: str, capacity: int, now: float) -> TokenBucket:
        """A local copy of the Redis bucket ``name`` (assumed full until Redis answers)."""
        bucket = SharedBucket(name, capacity, now, max(1, int(capacity * self._fraction)), self)
        self._buckets[name] = bucket
        return bucket

    def mark(self, bucket: SharedBucket) -> None:
        """Queue ``bucket`` for the next paced push: at once when its takes not
        yet confirmed reach half its slack (waiting would soon refuse requests)."""
        self._queue(bucket)
        self._pacer.kick(-2 * (bucket.pending + bucket.inflight) >= bucket.slack)

    def _queue(self, bucket: SharedBucket) -> None:
        self._dirty[bucket.name] = bucket
        bucket.queued = True

    async def push(self) -> None:
        """Send every change queued so far to Redis in one round trip (those
        queued meanwhile go with the next paced push: pushing until none is
        left never ends under load)."""
        async with self._lock:
            if await self._push_batch() and self._dirty:
                self._pacer.kick()

    async def _push_paced(self) -> bool:
        async with self._lock:
            return bool(self._dirty) and await self._push_batch() and bool(self._dirty)

    async def _push_batch(self) -> bool:
        """Push what is queued now; ``False`` if Redis did not answer (the
        changes stay queued for the sync loop)."""
        if not self._dirty:
            return True
        batch = list(self._dirty.values())
        self._dirty = {}
        now = self._clock.now()
        deltas = []
        for b in batch:
            b.queued = False
            deltas.append(b.pending)
            b.inflight += b.pending
            b.pending = 0.0
        try:
            replies = await run_scripts(self._redis, [
                (self._script, [f"{self._prefix}:rl:{b.name}"],
                 [int(b.capacity), repr(b.rate), repr(now), repr(d), int(_IDLE_S)])
                for b, d in zip(batch, deltas, strict=True)])
        except (RedisError, OSError) as exc:
            self.failures += 1
            for b, d in zip(batch, deltas, strict=True):
                b.inflight -= d
                b.pending += d
                self._queue(b)
            log.warning("rate limits: Redis did not take the counters (%s); "
                        "retrying from the sync loop", exc)
            return False
        for b, reply in zip(batch, replies, strict=True):
            b.confirm(float(reply), now)
        return True

    async def refresh(self, now: float) -> None:
        """Re-read every bucket used lately (so takes by other processes show
        here), forget idle ones, and retry pushes that failed."""
        for name, b in list(self._buckets.items()):
            if b.stamp < now - _IDLE_S and b.pending == 0 and b.inflight == 0:
                del self._buckets[name]
                self._forget(name)
            elif not b.queued:
                self._queue(b)
        await self.push()

    def _forget(self, name: str) -> None:
        scope, ident, _ = name.split(":", 2)
        table = self._keys if scope == "k" else self._tenants
        table.pop(ident, None)


class LimitSync:
    """Control loop (every process): keep the local copies of shared buckets fresh."""

    name = "limit-sync"

    def __init__(self, limiter: SharedRateLimiter, interval_s: float = 0.5) -> None:
        self.limiter = limiter
        self.interval_s = interval_s

    async def step(self, now: float) -> None:
        """Refresh the buckets used lately."""
        await self.limiter.refresh(now)

