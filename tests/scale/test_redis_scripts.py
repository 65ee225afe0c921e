"""Scripts pipelined by SHA against the real Redis: one round trip, and a
script Redis lacks is loaded and run exactly once."""

from __future__ import annotations

import secrets
import socket

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
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


async def test_one_connection_of_the_pool_is_used_and_given_back(
        redis: Redis, prefix: str) -> None:
    add = redis.register_script(_ADD)
    key = f"{prefix}:n"
    for i in range(1, 21):
        assert await run_scripts(redis, [(add, [key], [1]), (add, [key], ["1"])]) == [
            2 * i - 1, 2 * i]
    pool = redis.connection_pool
    assert len(pool._available_connections) >= 1 and not pool._in_use_connections


async def test_a_connection_redis_closed_is_replaced(redis: Redis, prefix: str) -> None:
    """A pooled connection Redis closed while it was idle is replaced when the
    next push takes it, and that push runs its scripts once."""
    add = redis.register_script(_ADD)
    key = f"{prefix}:n"
    assert await run_scripts(redis, [(add, [key], [1])]) == [1]
    pool = redis.connection_pool
    conn = await pool.get_connection()
    await conn.send_command("CLIENT", "ID")
    client_id = await conn.read_response()
    await pool.release(conn)
    killer = Redis.from_url(f"redis://{conn.host}:{conn.port}/{conn.db}")
    try:
        assert await killer.client_kill_filter(_id=client_id) == 1
    finally:
        await killer.aclose()
    assert await run_scripts(redis, [(add, [key], [1])]) == [2]
    assert await run_scripts(redis, [(add, [key], [1])]) == [3]
    assert int(await redis.get(key)) == 3


async def test_an_unreachable_redis_fails_the_push(prefix: str) -> None:
    """No server: the push raises a connection error (its caller keeps the
    changes queued) and the connection is not left in use."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    add = down.register_script(_ADD)
    try:
        with pytest.raises((RedisConnectionError, OSError)):
            await run_scripts(down, [(add, [f"{prefix}:n"], [1])])
        assert not down.connection_pool._in_use_connections
    finally:
        await down.aclose()
