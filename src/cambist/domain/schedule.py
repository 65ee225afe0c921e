"""Control loops as ``step(now)`` functions, and the live scheduler that runs them.

Every loop (market refresh, health checks, deploy reconciliation, outbox
flush) is an object with a name, an interval and ``async step(now)``. Live, a
:class:`RealTimeScheduler` calls each on a timer with the clock's time; in
simulation, a discrete-event driver calls the same steps with virtual time.
No loop sleeps or keeps its own timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from cambist.domain.clock import Clock

__all__ = ["Loop", "RealTimeScheduler"]

log = logging.getLogger("cambist.schedule")


class Loop(Protocol):
    """A control loop: ``step`` does one round of work at time ``now``."""

    name: str
    interval_s: float

    async def step(self, now: float) -> None: ...


class RealTimeScheduler:
    """Runs loops on wall-clock timers; a loop's failure is logged, not fatal."""

    def __init__(self, clock: Clock, loops: Sequence[Loop]) -> None:
        self._clock = clock
        self._loops = list(loops)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        """Start one task per loop."""
        for loop in self._loops:
            self._tasks.append(asyncio.create_task(self._run(loop), name=f"loop:{loop.name}"))

    async def _run(self, loop: Loop) -> None:
        while not self._stopping.is_set():
            try:
                await loop.step(self._clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("loop %s failed a step", loop.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=loop.interval_s)

    async def stop(self) -> None:
        """Stop every loop and wait for them."""
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
