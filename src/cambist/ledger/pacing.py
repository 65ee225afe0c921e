"""Pushing a process's local changes to Redis at a pace, not per request.

The shared rate limiter and the shared wallet keep their hot path in memory and
push what changed to Redis off it. Pushing after every change made the push
loop run back to back under load, one pipelined round trip per few requests,
and redis-py's command packing alone cost tens of microseconds per request
(``bench/gateway_scale.py``). A :class:`PushPacer` waits ``interval_s`` after
the first change before it pushes, so one round trip carries every change of
that interval; a change its owner calls *urgent* (a process close to the slack
it may run ahead of Redis, where waiting would refuse requests) ends the wait
at once. The bounds of both modules rest on their slack, not on the pace, so
they are unchanged; only confirmation is later by at most ``interval_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["PUSH_INTERVAL_S", "PushPacer"]

PUSH_INTERVAL_S = 0.05
"""Default pace: at most one push per 50 ms and owner (20 round trips a second;
a push costs a few hundred microseconds of CPU here)."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class PushPacer:
    """Runs ``push_batch`` (send one batch of what is queued; return whether
    more is queued and the push went through) at most once per ``interval_s``,
    or at once after an urgent :meth:`kick`."""

    def __init__(self, push_batch: Callable[[], Awaitable[bool]],
                 interval_s: float = PUSH_INTERVAL_S) -> None:
        self._push_batch = push_batch
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly
        self._running = False
        self._waiter: asyncio.Future[None] | None = None
        self._urgent = False

    def kick(self, urgent: bool = False) -> None:
        """Something was queued: push within the interval (now, if ``urgent``)."""
        if urgent:
            self._urgent = True
            if self._waiter is not None:
                _wake(self._waiter)
        if not self._running:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no event loop (a synchronous caller): the owner's sync loop pushes
            self._running = True
            self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._urgent and self._interval_s > 0:
                    waiter = self._waiter = loop.create_future()
                    timer = loop.call_later(self._interval_s, _wake, waiter)
                    try:
                        await waiter
                    finally:
                        timer.cancel()
                        self._waiter = None
                self._urgent = False
                if not await self._push_batch():
                    return
        finally:
            self._running = False
