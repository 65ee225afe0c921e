"""Lua scripts pipelined by their SHA, loaded only when Redis lacks them.

redis-py's script objects, used in a pipeline, ask Redis ``SCRIPT EXISTS`` for
every script before each pipeline: a second round trip per push, which on
these machines costs about as much CPU as the push itself
(``bench/gateway_scale.py``). :func:`run_scripts` sends ``EVALSHA`` straight
away; the calls a server answers ``NOSCRIPT`` (it restarted or flushed its
scripts) are loaded and sent again, those alone (a script that applies a
change must not run twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

__all__ = ["ScriptCall", "run_scripts"]

ScriptCall = tuple[AsyncScript, Sequence[str], Sequence[Any]]
"""A script with its keys and arguments."""


async def _send(redis: Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


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
