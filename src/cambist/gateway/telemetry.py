"""In-process gateway telemetry: latency histograms and counters, cheap enough
for every request (a dict lookup, a bisect and two increments), exported by
``cambist.app.metrics`` in the Prometheus format. Labels are model and endpoint
ids and failure causes only: never request content, keys or tenants."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS_MS", "GatewayMetrics", "Histogram"]

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000,
)
"""Upper bounds (inclusive, ms) of the latency buckets; one more bucket is +Inf."""


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, +Inf last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


def _histogram() -> Histogram:
    return Histogram()


@dataclass
class GatewayMetrics:
    """What the gateway saw since the process started.

    ``in_flight`` counts requests being served (from arrival until the
    response is built, or a stream's relay finishes); ``duration`` and ``ttft`` are
    keyed by (model, endpoint) of the served requests; ``upstream_errors`` by
    (model, endpoint, cause), a cause being an attempt's failure reason
    (``connect``, ``timeout``, ``status_503``, ...) or ``stream_<reason>`` for a
    stream that broke after its first byte; ``route_choices`` by (model,
    endpoint, supplier) of the attempts that served a request.
    """

    in_flight: int = 0
    duration: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    ttft: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    upstream_errors: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    route_choices: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def started(self) -> None:
        """A request arrived."""
        self.in_flight += 1

    def finished(self) -> None:
        """A request's response was sent (or abandoned)."""
        self.in_flight = max(self.in_flight - 1, 0)

    def served(self, model: str, endpoint: str, duration_ms: float,
               ttft_ms: float | None) -> None:
        """A request was served by ``endpoint``: its total and first-token times."""
        key = (model, endpoint)
        hist = self.duration.get(key)
        if hist is None:
            hist = self.duration[key] = _histogram()
        hist.observe(duration_ms)
        if ttft_ms is not None:
            hist = self.ttft.get(key)
            if hist is None:
                hist = self.ttft[key] = _histogram()
            hist.observe(ttft_ms)

    def upstream_error(self, model: str, endpoint: str, cause: str) -> None:
        """An upstream attempt failed (or a started stream broke) for ``cause``."""
        self.upstream_errors[(model, endpoint, cause)] += 1

    def chose(self, model: str, endpoint: str, supplier: str) -> None:
        """Routing sent a request for ``model`` to ``endpoint`` and it answered."""
        self.route_choices[(model, endpoint, supplier)] += 1
