"""Run an :class:`~cambist.engine.core.EngineCore` in real time.

One driver task steps the core and sleeps each step's modeled duration times
``time_scale``, then wakes the requests whose tokens came out. The task
starts when a request arrives and ends when the engine goes idle, so an idle
engine holds no task. Falling behind (slow event loop) is caught up by
running later steps back to back, within a bounded lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field

from cambist.engine.core import EngineCore, StepResult

__all__ = ["EngineRuntime", "TokenFeed"]

log = logging.getLogger("cambist.engine")

_MAX_LAG_S = 0.05


@dataclass(slots=True)
class _Waiter:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    emitted: int = 0
    done: bool = False
    error: BaseException | None = None


class TokenFeed:
    """The tokens of one submitted request as they come out of the engine."""

    def __init__(self, runtime: EngineRuntime, request_id: str, waiter: _Waiter) -> None:
        self.request_id = request_id
        self._runtime = runtime
        self._waiter = waiter
        self._seen = 0

    @property
    def done(self) -> bool:
        """Whether the engine finished this request."""
        return self._waiter.done

    async def wait(self) -> int | None:
        """The new total of tokens emitted, or None once the request finished."""
        w = self._waiter
        while True:
            if w.error is not None:
                raise RuntimeError("the engine driver failed") from w.error
            if w.emitted > self._seen:
                self._seen = w.emitted
                return self._seen
            if w.done:
                return None
            w.event.clear()
            await w.event.wait()

    def close(self) -> None:
        """Stop following the request; drops it from the engine if still running."""
        if not self._waiter.done:
            self._runtime.cancel(self.request_id)


class EngineRuntime:
    """Real-time driver of one core; see the module docstring."""

    def __init__(
        self, core: EngineCore, time_scale: float = 1.0, rate_window_s: float = 10.0
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must not be negative")
        self.core = core
        self.time_scale = time_scale
        self.rate_window_s = rate_window_s
        self._waiters: dict[str, _Waiter] = {}
        self._task: asyncio.Task[None] | None = None
        self._recent: deque[tuple[float, int]] = deque()

    def submit(self, request_id: str, prompt_tokens: int, output_tokens: int) -> TokenFeed:
        """Queue a request on the core (raises its typed errors) and follow its tokens."""
        self.core.submit(request_id, prompt_tokens, output_tokens)
        waiter = _Waiter()
        self._waiters[request_id] = waiter
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._drive(), name="cambist-engine-driver"
            )
        return TokenFeed(self, request_id, waiter)

    def cancel(self, request_id: str) -> None:
        """Drop a request (client went away)."""
        self._waiters.pop(request_id, None)
        if self.core.cancel(request_id):
            log.debug("engine request %s cancelled", request_id)

    def generation_rate_tok_s(self) -> float:
        """Tokens emitted per wall-clock second over the last ``rate_window_s``."""
        loop_time = asyncio.get_running_loop().time()
        self._prune(loop_time)
        return sum(n for _, n in self._recent) / self.rate_window_s

    async def close(self) -> None:
        """Stop the driver; requests still running are abandoned."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _prune(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.rate_window_s:
            self._recent.popleft()

    def _deliver(self, result: StepResult, now: float) -> None:
        for rid, n in result.emitted.items():
            w = self._waiters.get(rid)
            if w is not None:
                w.emitted += n
                w.event.set()
        for rid in result.finished:
            w = self._waiters.pop(rid, None)
            if w is not None:
                w.done = True
                w.event.set()
        if result.emitted:
            self._recent.append((now, len(result.emitted)))
            self._prune(now)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        try:
            while not self.core.idle:
                result = self.core.step()
                now = loop.time()
                deadline = max(deadline, now - _MAX_LAG_S) + result.duration_s * self.time_scale
                await asyncio.sleep(max(0.0, deadline - now))
                self._deliver(result, loop.time())
        except Exception as exc:  # a bug in the core: fail every waiter rather than hang them
            log.exception("engine driver failed")
            for w in self._waiters.values():
                w.error = exc
                w.event.set()
            self._waiters.clear()
