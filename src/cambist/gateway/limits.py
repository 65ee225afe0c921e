"""Rate limits: requests and tokens per minute, per API key and per tenant.

Each (key or tenant, requests or tokens) pair has a token bucket holding at
most the plan's per-minute limit and refilled continuously at limit/60 per
second; a request takes 1 from both request buckets, then its token estimate
(prompt + ``max_tokens`` or the default) from both token buckets, all or
nothing, and the token take is corrected to the actual usage when the request
settles (refunded in full when nothing is charged). Everything is in memory, per
process, O(1) per request; time comes from the injected clock.

Accuracy: a bucket admits at most ``L + L*t/60`` in any interval of ``t``
seconds (a full burst, then the refill), so never more than ``2L`` in a sliding
minute and exactly ``L`` per minute sustained; a caller is never refused while
a strict 60-second sliding window would admit its request, except for tokens
not yet refunded from requests in flight.

Headers follow OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
for the tighter of the key and tenant buckets; ``reset`` is the time until the
bucket is full again, as a Go-style duration (``20ms``, ``1s``, ``6m0s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cambist.domain.clock import Clock
from cambist.gateway.errors import RateLimited
from cambist.ledger.plans import Plan, PlanBook

__all__ = ["Admission", "RateLimiter", "TokenBucket", "format_duration", "reset_header"]

_NS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000}


def _fraction(n: int, unit: int) -> str:
    whole, frac = divmod(n, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration(ns: int) -> str:
    """``ns`` nanoseconds as Go's ``time.Duration`` prints it (the format of
    OpenAI's reset headers): ``0s``, ``250ns``, ``1.5µs``, ``59.5ms``, ``1s``,
    ``6m0s``, ``1h2m3.5s``."""
    if ns < 0:
        raise ValueError("a duration is never negative")
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _fraction(ns, 1_000) + "µs"
    if ns < _NS["s"]:
        return _fraction(ns, 1_000_000) + "ms"
    hours, rest = divmod(ns, _NS["h"])
    minutes, rest = divmod(rest, _NS["m"])
    seconds = _fraction(rest, _NS["s"]) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


_NAMES = {kind: (f"x-ratelimit-limit-{kind}".encode(), f"x-ratelimit-remaining-{kind}".encode(),
                 f"x-ratelimit-reset-{kind}".encode()) for kind in ("requests", "tokens")}


def reset_header(seconds: float) -> str:
    """A reset header value: ``seconds`` rounded up to whole milliseconds (so a
    client that waits that long finds the bucket full)."""
    ms = math.ceil(max(seconds, 0.0) * 1000 - 1e-6)
    return format_duration(max(ms, 0) * 1_000_000)


class TokenBucket:
    """Holds up to ``capacity`` units, refilled at ``capacity`` per minute;
    ``kind`` (``requests`` or ``tokens``) names its rate headers."""

    __slots__ = ("_remaining_name", "_reset_head", "_reset_ms", "capacity", "level",
                 "limit_head", "rate", "stamp")

    def __init__(self, capacity: int, now: float, kind: str = "requests") -> None:
        self.capacity = float(capacity)
        self.rate = capacity / 60.0
        self.level = self.capacity
        self.stamp = now
        limit, self._remaining_name, reset = _NAMES[kind]
        self.limit_head = (limit, b"%d" % capacity)
        """The limit header as the response head carries it (made once)."""
        self._reset_ms = -1
        self._reset_head = (reset, b"")

    def remaining_head(self) -> tuple[bytes, bytes]:
        """The remaining header as the head carries it (the floor of the level)."""
        r = self.level + 1e-9  # ``%d`` of a positive float truncates: the floor
        return self._remaining_name, b"%d" % r if r > 0 else b"0"

    def reset_head(self) -> tuple[bytes, bytes]:
        """The reset header as the head carries it (:func:`reset_header` of
        :attr:`reset_s`; the last one is kept, since at high rates it rarely
        changes)."""
        level = self.level
        # As reset_s, written out (it runs for two buckets on every response).
        ms = math.ceil((self.capacity - level) / self.rate * 1000 - 1e-6) \
            if level < self.capacity else 0
        if ms != self._reset_ms:
            self._reset_ms = ms
            self._reset_head = (self._reset_head[0],
                                format_duration(max(ms, 0) * 1_000_000).encode())
        return self._reset_head

    def refill(self, now: float) -> None:
        """Add what accrued since the last look (a clock step back adds nothing)."""
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_s(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0 when it fits now; call :meth:`refill` first)."""
        return 0.0 if self.level >= cost else (cost - self.level) / self.rate

    def adjust(self, delta: float) -> None:
        """Take (negative) or give back (positive) units, never above capacity;
        a correction upwards may leave a debt (a negative level)."""
        self.level = min(self.capacity, self.level + delta)

    def take_pair(self, other: TokenBucket, cost: float, now: float) -> float:
        """Refill this bucket and ``other`` (of the same class) to ``now`` and take
        ``cost`` from both; or, if it does not fit both, take nothing and
        return a wait above 0 (0.0: taken). One call where the request path
        would make six."""
        self.refill(now)
        other.refill(now)
        wait = max(self.wait_s(cost), other.wait_s(cost))
        if wait > 0:
            return wait
        self.adjust(-cost)
        other.adjust(-cost)
        return 0.0

    def give_pair(self, other: TokenBucket, delta: float, now: float) -> None:
        """Refill both buckets to ``now`` and give ``delta`` back to both
        (negative: take more, which may leave a debt)."""
        for bucket in (self, other):
            bucket.refill(now)
            bucket.adjust(delta)

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    @property
    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(slots=True)
class _Buckets:
    """The request and token buckets of one key or one tenant."""

    requests: TokenBucket
    tokens: TokenBucket




class Admission:
    """One admitted request: its rate headers (kept current) and its token take.

    A plain class with slots, not a dataclass: one is made per request."""

    __slots__ = ("clock", "extra", "key", "key_id", "plan", "settled", "tenant", "tokens")

    def __init__(self, clock: Clock, plan: Plan, key_id: str, key: _Buckets,
                 tenant: _Buckets) -> None:
        self.clock = clock
        self.plan = plan
        self.key_id = key_id
        self.key = key
        self.tenant = tenant
        self.extra: dict[str, str] = {}
        """More headers for every response to the request (a key's budget left)."""
        self.tokens = 0
        self.settled = False

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The six ``x-ratelimit-*`` headers as the buckets stand now, encoded
        for the response head (worked out once per response, not after every
        take; the limit headers made once, the reset ones cached)."""
        key, tenant = self.key, self.tenant
        requests = tenant.requests if tenant.requests.level < key.requests.level \
            else key.requests
        tokens = tenant.tokens if tenant.tokens.level < key.tokens.level else key.tokens
        return [requests.limit_head, requests.remaining_head(), requests.reset_head(),
                tokens.limit_head, tokens.remaining_head(), tokens.reset_head()]

    @property
    def headers(self) -> dict[str, str]:
        """:meth:`raw_headers` as text, then :attr:`extra` (for error responses)."""
        out = {name.decode(): value.decode() for name, value in self.raw_headers()}
        if self.extra:
            out.update(self.extra)
        return out

    def reserve_tokens(self, estimate: int) -> None:
        """Take ``estimate`` tokens from the key and tenant buckets, or raise
        :class:`RateLimited` (``type="tokens"``) taking nothing."""
        plan = self.plan
        if (estimate > plan.tokens_per_minute or estimate > plan.tenant_tokens_per_minute
                or self.key.tokens.take_pair(self.tenant.tokens, estimate, self.clock.now())):
            self._refuse_tokens(estimate)
        self.tokens = estimate

    def _refuse_tokens(self, estimate: int) -> None:
        """Raise the refusal of the first bucket (key, then tenant) ``estimate``
        does not fit (refilling them first)."""
        now = self.clock.now()
        pairs = (("key", self.key.tokens, self.plan.tokens_per_minute),
                 ("tenant", self.tenant.tokens, self.plan.tenant_tokens_per_minute))
        for scope, bucket, limit in pairs:
            bucket.refill(now)
            if estimate > limit:
                raise RateLimited(
                    "tokens", f"Request too large for tokens per minute ({scope} limit "
                    f"{limit}, requested {estimate}); send fewer tokens or a smaller "
                    "max_tokens", 60.0, self.headers)
            wait = bucket.wait_s(estimate)
            if wait > 0:
                raise _limited("tokens", scope, self, limit, bucket, estimate, wait)

    def settle(self, used: int) -> None:
        """Correct the token take to ``used`` (0 refunds it all); idempotent."""
        if self.settled:
            return
        self.settled = True
        delta = self.tokens - used
        if delta:
            self.key.tokens.give_pair(self.tenant.tokens, delta, self.clock.now())


def _limited(kind: str, scope: str, admission: Admission, limit: int, bucket: TokenBucket,
             requested: int, wait: float) -> RateLimited:
    who = f"key {admission.key_id}" if scope == "key" else "your organization"
    used = max(0, limit - bucket.remaining)
    return RateLimited(
        kind, f"Rate limit reached for {kind} per minute on {who} (plan {admission.plan.name}): "
        f"Limit {limit}, Used {used}, Requested {requested}. Please try again in "
        f"{reset_header(wait)}.", wait, admission.headers)


class RateLimiter:
    """The per-process buckets of every key and tenant seen, by plan."""

    def __init__(self, plans: PlanBook, clock: Clock) -> None:
        self._plans = plans
        self._clock = clock
        self._keys: dict[str, _Buckets] = {}
        self._tenants: dict[str, _Buckets] = {}

    def new_bucket(self, name: str, capacity: int, now: float) -> TokenBucket:
        """A bucket for ``name`` (``k:<key>:req|tok`` or ``t:<tenant>:req|tok``);
        per process here, shared through Redis in
        :class:`cambist.gateway.limits_redis.SharedRateLimiter`."""
        return TokenBucket(capacity, now, "tokens" if name.endswith(":tok") else "requests")

    def admit(self, key_id: str, tenant_id: str) -> Admission:
        """Take one request from the key's and the tenant's request buckets, or
        raise :class:`RateLimited` (``type="requests"``) taking nothing."""
        now = self._clock.now()
        plan = self._plans.plan_of(tenant_id)
        key = self._keys.get(key_id)
        if key is None:
            key = self._keys[key_id] = _Buckets(
                self.new_bucket(f"k:{key_id}:req", plan.requests_per_minute, now),
                self.new_bucket(f"k:{key_id}:tok", plan.tokens_per_minute, now))
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            tenant = self._tenants[tenant_id] = _Buckets(
                self.new_bucket(f"t:{tenant_id}:req", plan.tenant_requests_per_minute, now),
                self.new_bucket(f"t:{tenant_id}:tok", plan.tenant_tokens_per_minute, now))
        # The token buckets are refilled when tokens are reserved.
        admission = Admission(self._clock, plan, key_id, key, tenant)
        if key.requests.take_pair(tenant.requests, 1, now):  # took nothing: say why
            pairs = (("key", key.requests, plan.requests_per_minute),
                     ("tenant", tenant.requests, plan.tenant_requests_per_minute))
            for scope, bucket, limit in pairs:
                wait = bucket.wait_s(1)
                if wait > 0:
                    raise _limited("requests", scope, admission, limit, bucket, 1, wait)
        return admission
