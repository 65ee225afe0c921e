"""Rate limits shared through a real Redis by several limiters (one per
simulated process) on a manual clock: the documented bound
``L + N * slack`` holds, refusals are exact once Redis has answered, token
refunds reach every process, and a process without Redis admits no more
than its slack."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cambist.domain.clock import ManualClock
from cambist.gateway.errors import RateLimited
from cambist.gateway.limits_redis import CONFIRM_WAIT_S, SharedRateLimiter
from cambist.ledger.plans import DEFAULT_PLANS, Plan, PlanBook

TIGHT = Plan("tight", requests_per_minute=60, tokens_per_minute=10_000,
             tenant_requests_per_minute=1_000, tenant_tokens_per_minute=100_000)


def _limiters(n: int, redis: Redis, prefix: str, clock: ManualClock,
              fraction: float = 0.05) -> list[SharedRateLimiter]:
    book = PlanBook([*DEFAULT_PLANS, TIGHT], {"ten_a": "tight"})
    return [SharedRateLimiter(book, clock, redis, prefix=prefix, slack_fraction=fraction)
            for _ in range(n)]


async def _settle(limiters: list[SharedRateLimiter]) -> None:
    for lim in limiters:
        await lim.push()


async def test_four_processes_share_one_request_limit(redis: Redis, prefix: str) -> None:
    clock = ManualClock()
    procs = _limiters(4, redis, prefix, clock)
    slack = max(1, int(TIGHT.requests_per_minute * 0.05))  # 3
    admitted = refused_for_slack = 0
    for _ in range(60):  # rounds of bursts: five tries per process between round trips
        for lim in procs:
            for _ in range(5):
                try:
                    lim.admit("key_1", "ten_a")
                    admitted += 1
                except RateLimited as exc:
                    refused_for_slack += exc.retry_after_s == CONFIRM_WAIT_S
        await _settle(procs)
    limit = TIGHT.requests_per_minute
    assert limit <= admitted <= limit + len(procs) * slack, admitted
    assert refused_for_slack > 0  # the slack did bind while takes were unconfirmed
    # Once every process has heard from Redis, all refuse until the refill.
    for lim in procs:
        with pytest.raises(RateLimited) as info:
            lim.admit("key_1", "ten_a")
        assert info.value.retry_after_s > CONFIRM_WAIT_S
    # 60/min refills one per second, shared by everyone: after paying back the
    # overshoot, exactly one more request fits, whoever asks first.
    clock.advance(admitted - limit + 1.0)
    got = 0
    for lim in procs:
        await lim.refresh(clock.now())  # exact when every take is confirmed
        try:
            lim.admit("key_1", "ten_a")
            got += 1
        except RateLimited:
            pass
        await lim.push()
    assert got == 1


async def test_token_refunds_reach_other_processes(redis: Redis, prefix: str) -> None:
    clock = ManualClock()
    a, b = _limiters(2, redis, prefix, clock, fraction=1.0)
    probe = b.admit("key_1", "ten_a")
    await b.push()
    adm = a.admit("key_1", "ten_a")
    adm.reserve_tokens(9_000)
    await a.push()
    await b.refresh(clock.now())
    with pytest.raises(RateLimited):
        probe.reserve_tokens(2_000)  # only 1,000 left after a's estimate
    adm.settle(500)  # a used 500 of the 9,000 it took: 8,500 go back
    await a.push()
    await b.refresh(clock.now())
    probe.reserve_tokens(8_000)
    assert int(probe.headers["x-ratelimit-remaining-tokens"]) == 10_000 - 500 - 8_000


async def test_unconfirmed_takes_stay_within_the_slack(redis: Redis, prefix: str) -> None:
    clock = ManualClock()
    (lim,) = _limiters(1, redis, prefix, clock, fraction=0.01)  # slack 1 request
    lim.admit("key_1", "ten_a")
    with pytest.raises(RateLimited) as info:
        lim.admit("key_1", "ten_a")  # the first is not confirmed yet
    assert info.value.retry_after_s == CONFIRM_WAIT_S
    assert info.value.headers["retry-after"] == "1"
    await lim.push()
    lim.admit("key_1", "ten_a")


async def test_without_redis_a_process_admits_only_its_slack() -> None:
    clock = ManualClock()
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5,
                 retry=Retry(NoBackoff(), 0))
    try:
        (lim,) = _limiters(1, dead, "nowhere", clock, fraction=0.05)
        lim.admit("key_1", "ten_a")
        await lim.push()  # fails: the take stays unconfirmed
        assert lim.failures == 1
        admitted = 1
        for _ in range(10):
            try:
                lim.admit("key_1", "ten_a")
                admitted += 1
            except RateLimited:
                pass
        assert admitted == 3  # the slack of a 60/min limit at 5%
    finally:
        await dead.aclose()
