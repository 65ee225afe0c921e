"""Prometheus ``/metrics`` of a Cambist process: counts and gauges only, never
request content or tenant data.

Database-backed figures are gathered by a loop (``MetricsSnapshot.step``) and
exported from memory, so a scrape never waits on the store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cambist.domain.offer import OfferQuery
from cambist.gateway.telemetry import GatewayMetrics, Histogram

if TYPE_CHECKING:
    from cambist.app.exchange import Exchange

__all__ = ["MetricsSnapshot", "RouteCounts", "gateway_families", "metrics_route"]


class RouteCounts:
    """Counts the gateway's routing attempts by model, endpoint, supplier and
    outcome (``ok`` or the failure reason), from its routing-decision events."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str, str]] = Counter()

    def add(self, row: dict[str, Any]) -> None:
        d = row.get("data") or {}
        self.counts[(str(d.get("model")), str(d.get("endpoint")), str(d.get("supplier")),
                     str(d.get("outcome")))] += 1


def _seconds(name: str, doc: str, hists: dict[tuple[str, str], Histogram]
             ) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model", "endpoint"])
    for (model, endpoint), h in sorted(hists.items()):
        buckets = [("+Inf" if bound == float("inf") else repr(bound / 1000.0), n)
                   for bound, n in h.cumulative()]
        family.add_metric([model, endpoint], buckets, h.total / 1000.0)
    return family


def gateway_families(m: GatewayMetrics) -> Iterator[Metric]:
    """The gateway's own telemetry (see :class:`GatewayMetrics`), times in seconds."""
    yield GaugeMetricFamily("cambist_gateway_requests_in_flight",
                            "Inference requests being served by this process.",
                            value=m.in_flight)
    yield _seconds("cambist_gateway_request_duration_seconds",
                   "Time from a request's arrival to its settlement, by model and endpoint.",
                   m.duration)
    yield _seconds("cambist_gateway_ttft_seconds",
                   "Time from a request's arrival to the upstream's first byte (non-stream) "
                   "or first event (stream), by model and endpoint.", m.ttft)
    errors = CounterMetricFamily("cambist_gateway_upstream_errors",
                                 "Failed upstream attempts and broken streams by cause.",
                                 labels=["model", "endpoint", "cause"])
    for labels, n in sorted(m.upstream_errors.items()):
        errors.add_metric(list(labels), n)
    yield errors
    choices = CounterMetricFamily("cambist_gateway_route_choices",
                                  "Requests served, by the model and endpoint routing chose.",
                                  labels=["model", "endpoint", "supplier"])
    for labels, n in sorted(m.route_choices.items()):
        choices.add_metric(list(labels), n)
    yield choices


class MetricsSnapshot:
    """Loop: refresh the store-backed gauges (deployments, leases, endpoints)."""

    name = "metrics-snapshot"

    def __init__(self, ex: Exchange, interval_s: float = 2.0) -> None:
        self.ex, self.interval_s = ex, interval_s
        self.deployments: Counter[str] = Counter()
        self.leases_active = 0
        self.lease_cost_per_hour = 0.0

    async def step(self, now: float) -> None:
        cp = self.ex.control
        if cp is None:
            return
        self.deployments = Counter(str(d.state) for d in await cp.records.deployments())
        active = await cp.records.leases(active_only=True)
        self.leases_active = len(active)
        self.lease_cost_per_hour = float(sum(x.price_per_hour for x in active))


class _ExchangeCollector(Collector):
    def __init__(self, ex: Exchange, snap: MetricsSnapshot) -> None:
        self.ex, self.snap = ex, snap

    def collect(self) -> Iterator[Metric]:
        ex = self.ex
        inflight = GaugeMetricFamily("cambist_endpoint_in_flight",
                                     "Requests in flight per endpoint.",
                                     labels=["endpoint", "model", "supplier"])
        healthy = GaugeMetricFamily("cambist_endpoints", "Routable endpoints by health.",
                                    labels=["healthy"])
        counts: Counter[bool] = Counter()
        for model in ex.routes.models():
            for route in ex.routes.routes(model):
                counts[route.endpoint.healthy] += 1
                inflight.add_metric([route.id, model, route.supplier],
                                    ex.routes.stats(route.id).in_flight)
        for flag in (True, False):
            healthy.add_metric([str(flag).lower()], counts[flag])
        yield inflight
        yield healthy
        attempts = CounterMetricFamily(
            "cambist_route_attempts", "Routing attempts by model, endpoint and outcome.",
            labels=["model", "endpoint", "supplier", "outcome"])
        for labels, n in sorted(ex.route_counts.counts.items()):
            attempts.add_metric(list(labels), n)
        yield attempts
        yield from gateway_families(ex.gateway.metrics)
        yield GaugeMetricFamily("cambist_outbox_backlog_bytes",
                                "Usage bytes appended but not yet committed (flush lag).",
                                value=ex.flusher.backlog_bytes())
        yield CounterMetricFamily("cambist_usage_records_flushed",
                                  "Usage records committed by this process.",
                                  value=ex.flusher.flushed)
        yield CounterMetricFamily("cambist_events_dropped",
                                  "Telemetry events dropped by a full buffer.",
                                  value=ex.buffer.dropped)
        cp = ex.control
        if cp is None:
            return
        yield GaugeMetricFamily("cambist_offers_listed", "Offers in the book now.",
                                value=len(cp.book.query(OfferQuery(), ex.clock.now())))
        deps = GaugeMetricFamily("cambist_deployments", "Deployments by state.",
                                 labels=["state"])
        for state, n in sorted(self.snap.deployments.items()):
            deps.add_metric([state], n)
        yield deps
        yield GaugeMetricFamily("cambist_leases_active", "Leases not yet ended.",
                                value=self.snap.leases_active)
        yield GaugeMetricFamily("cambist_lease_cost_per_hour_usd",
                                "What the active leases cost per hour.",
                                value=self.snap.lease_cost_per_hour)


def metrics_route(ex: Exchange, snap: MetricsSnapshot) -> Route:
    """``GET /metrics`` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ExchangeCollector(ex, snap))

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])
