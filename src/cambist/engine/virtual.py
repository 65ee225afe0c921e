"""Drive an :class:`~cambist.engine.core.EngineCore` in virtual time.

The simulator (and the tests) replay arrivals against the core without any
sleeping: the clock jumps by each step's modeled duration, or to the next
arrival when the engine is idle. Requests that arrive during a step join at
the step's end, as they would on a real engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cambist.engine.core import EngineCore

__all__ = ["Arrival", "RequestTiming", "VirtualRun", "run_virtual"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """A request reaching the engine at ``at_s`` (seconds on the caller's clock)."""

    at_s: float
    request_id: str
    prompt_tokens: int
    output_tokens: int


@dataclass(slots=True)
class RequestTiming:
    """When one request arrived, got its first token and finished."""

    arrived_s: float
    first_token_s: float | None = None
    finished_s: float | None = None
    tokens: int = 0

    @property
    def ttft_s(self) -> float | None:
        """Time to first token, or None if it emitted none."""
        return None if self.first_token_s is None else self.first_token_s - self.arrived_s

    @property
    def latency_s(self) -> float | None:
        """Arrival to last token, or None if unfinished."""
        return None if self.finished_s is None else self.finished_s - self.arrived_s


@dataclass(frozen=True, slots=True)
class VirtualRun:
    """The outcome of :func:`run_virtual`."""

    timings: dict[str, RequestTiming]
    end_s: float
    busy_s: float
    steps: int

    @property
    def output_tokens(self) -> int:
        """Tokens emitted over the run."""
        return sum(t.tokens for t in self.timings.values())

    def throughput_tok_s(self, start_s: float = 0.0) -> float:
        """Output tokens per second from ``start_s`` to the end of the run."""
        span = self.end_s - start_s
        return self.output_tokens / span if span > 0 else 0.0


def run_virtual(
    core: EngineCore, arrivals: Iterable[Arrival], start_s: float = 0.0, max_steps: int = 10_000_000
) -> VirtualRun:
    """Replay ``arrivals`` on ``core`` until every request finished; returns the timings."""
    pending = sorted(arrivals, key=lambda a: a.at_s)
    timings: dict[str, RequestTiming] = {}
    now, busy, steps, i = start_s, 0.0, 0, 0
    while i < len(pending) or not core.idle:
        while i < len(pending) and pending[i].at_s <= now:
            a = pending[i]
            core.submit(a.request_id, a.prompt_tokens, a.output_tokens)
            timings[a.request_id] = RequestTiming(arrived_s=a.at_s)
            i += 1
        if core.idle:
            if i < len(pending):
                now = max(now, pending[i].at_s)
            continue
        result = core.step()
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"virtual run exceeded {max_steps} steps")
        now += result.duration_s
        busy += result.duration_s
        for rid, n in result.emitted.items():
            t = timings[rid]
            if t.first_token_s is None:
                t.first_token_s = now
            t.tokens += n
        for rid in result.finished:
            timings[rid].finished_s = now
    return VirtualRun(timings=timings, end_s=now, busy_s=busy, steps=steps)
