"""Live statistics of one endpoint: load, latency, circuit-breaker state.

The circuit breaker has three states. **Closed**: routable. **Open**: after a
failure the endpoint is skipped until ``circuit_open_until`` (the wait doubles
with each consecutive failure, see ``RoutingTable.record_failure``).
**Half-open**: once that time has passed, exactly one trial request may go
through (``probing``) while the others keep skipping the endpoint; the trial's
success closes the circuit, its failure reopens it with the doubled wait.

Time to first token is kept two ways: an EWMA of what this gateway observed,
and a window of its last :data:`TTFT_WINDOW` observations for p50/p90. An
engine that reports its own TTFT (from ``/metrics``) replaces the window's
percentiles, since it sees every gateway's traffic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["TTFT_WINDOW", "EndpointStats"]

TTFT_WINDOW = 64
"""How many recent TTFT observations the percentiles are taken over."""


def _window() -> deque[float]:
    return deque(maxlen=TTFT_WINDOW)


@dataclass(slots=True)
class EndpointStats:
    """Live, mutable statistics of one endpoint."""

    in_flight: int = 0
    ewma_ttft_ms: float | None = None
    consecutive_failures: int = 0
    circuit_open_until: float = 0.0
    retry_after_until: float = 0.0
    opened: bool = False
    """The circuit was opened by a failure and no success has closed it since."""
    probing: bool = False
    """A half-open trial request is in flight."""
    queue_depth: int = 0
    """Requests waiting in the engine's own queue, as it last reported."""
    engine_ttft_ms: tuple[float, float] | None = None
    """(p50, p90) TTFT the engine last reported, if it reports one."""
    ttft_window: deque[float] = field(default_factory=_window)
    _percentiles: tuple[float, float] | None = None

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half_open`` at ``now``."""
        if not self.opened:
            return "closed"
        return "open" if now < self.circuit_open_until else "half_open"

    def routable(self, now: float) -> bool:
        """Closed, or half-open with no trial in flight yet."""
        if not self.opened:
            return self.circuit_open_until <= now
        return now >= self.circuit_open_until and not self.probing

    def observe_ttft(self, ttft_ms: float) -> None:
        """Add one observed TTFT to the window."""
        self.ttft_window.append(ttft_ms)
        self._percentiles = None

    def ttft_percentiles(self) -> tuple[float, float] | None:
        """(p50, p90) TTFT in ms: the engine's if reported, else the window's
        (nearest rank), ``None`` with neither."""
        if self.engine_ttft_ms is not None:
            return self.engine_ttft_ms
        if self._percentiles is None and self.ttft_window:
            ordered = sorted(self.ttft_window)
            n = len(ordered)
            self._percentiles = (ordered[(n - 1) // 2], ordered[-(-9 * n // 10) - 1])
        return self._percentiles
