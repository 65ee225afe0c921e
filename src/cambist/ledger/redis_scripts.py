"""Lua scripts pipelined by their SHA, loaded only when Redis lacks them.

redis-py's script objects, used in a pipeline, ask Redis ``SCRIPT EXISTS`` for
every script before each pipeline: a second round trip per push, which on
these machines costs about as much CPU as the push itself
(``bench/gateway_scale.py``). :func:`run_scripts` sends ``EVALSHA`` straight
away; the calls a server answers ``NOSCRIPT`` (it restarted or flushed its
scripts) are loaded and sent again, those alone (a script that applies a
change must not run twice).

The calls go out on a connection of the client's pool, packed by hiredis and
read back one reply each, not through redis-py's pipeline object: its
per-argument encoding in Python and its layers of retries and instrumentation
cost about 300 µs of CPU per push here, against 170 µs this way
(``bench/gateway_scale.py`` pushes tens of times a second per process). Not
retrying is deliberate too: a pipeline of scripts that change counters must
not be sent twice after a connection error; the callers keep their changes
queued and push them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hiredis import pack_command
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

__all__ = ["ScriptCall", "run_scripts"]

ScriptCall = tuple[AsyncScript, Sequence[str], Sequence[Any]]
"""A script with its keys and arguments."""


async def _send(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Every call's reply, an error reply as its exception (not raised)."""
    commands = [("EVALSHA", script.sha, len(keys), *keys, *args)
                for script, keys, args in calls]
    pool = redis.connection_pool
    conn = await pool.get_connection()
    try:
        packed = b"".join([pack_command(c) for c in commands])
        await conn.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:  # that call's error: the others stand
                replies.append(exc)
    except BaseException:
        # Replies may be left unread on it: never hand it to another caller.
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies


async def run_scripts(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """The replies of ``calls``, run in one pipelined round trip (two when
    Redis had to be given a script first). Raises the first error a call met,
    as a pipeline does, and ``RedisError``/``OSError`` when Redis is unreachable."""
    replies = await _send(redis, calls)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
            await redis.script_load(script.script)
        again = await _send(redis, [calls[i] for i in missing])
        for i, reply in zip(missing, again, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
