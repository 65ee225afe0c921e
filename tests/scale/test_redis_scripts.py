"""Scripts pipelined by SHA against the real Redis: one round trip, and a
script Redis lacks is loaded and run exactly once."""

from __future__ import annotations

import secrets

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from cambist.ledger.redis_scripts import run_scripts

_ADD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_scripts_run_in_order_with_their_replies(redis: Redis, prefix: str) -> None:
    add = redis.register_script(_ADD)
    await redis.script_load(_ADD)
    key = f"{prefix}:n"
    assert await run_scripts(redis, [(add, [key], [2]), (add, [key], [3])]) == [2, 5]


async def test_a_script_redis_lacks_is_loaded_and_each_call_runs_once(
        redis: Redis, prefix: str) -> None:
    # A script no other test has loaded, so Redis lacks it, beside one it has.
    fresh = redis.register_script(_ADD + f" -- {secrets.token_hex(8)}")
    known = redis.register_script(_ADD)
    await redis.script_load(_ADD)
    assert (await redis.script_exists(fresh.sha)) == [False]
    a, b = f"{prefix}:a", f"{prefix}:b"
    replies = await run_scripts(redis, [(known, [a], [1]), (fresh, [b], [10]),
                                        (known, [a], [1]), (fresh, [b], [10])])
    assert replies == [1, 10, 2, 20]
    assert int(await redis.get(a)) == 2 and int(await redis.get(b)) == 20  # none twice
    assert (await redis.script_exists(fresh.sha)) == [True]


async def test_an_error_in_a_script_is_raised(redis: Redis, prefix: str) -> None:
    bad = redis.register_script("return redis.call('INCRBY', KEYS[1], 'x')")
    await redis.script_load(bad.script)
    with pytest.raises(ResponseError):
        await run_scripts(redis, [(bad, [f"{prefix}:n"], [])])
