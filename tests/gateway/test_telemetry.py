"""Gateway telemetry: latency histograms and counters, and their /metrics form."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from cambist.app.metrics import gateway_families
from cambist.gateway.telemetry import GatewayMetrics, Histogram

from .conftest import MODEL, Harness, chat_body


def test_histogram_buckets_are_cumulative_with_inf_last() -> None:
    h = Histogram((1.0, 10.0))
    for v in (0.5, 1.0, 5.0, 50.0):
        h.observe(v)
    assert h.cumulative() == [(1.0, 2), (10.0, 3), (float("inf"), 4)]
    assert (h.count, h.total) == (4, 56.5)


async def test_served_requests_feed_histograms_and_choices(gw_local: Harness) -> None:
    gw = gw_local
    await gw.upstream("a")
    m = gw.deps.metrics
    assert (await gw.client.post("/v1/chat/completions", json=chat_body())).status_code == 200
    r = await gw.client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.text.endswith("data: [DONE]\n\n")
    assert m.duration[(MODEL, "ep_a")].count == 2
    assert m.ttft[(MODEL, "ep_a")].count == 2
    assert m.route_choices[(MODEL, "ep_a", "sup_a")] == 2
    assert m.in_flight == 0
    assert not m.upstream_errors


async def test_upstream_errors_by_cause(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("dead", cost_per_hour="0.10")  # cheapest: tried first
    up = await gw.upstream("busy")
    up.fail_status = 503
    await gw.upstream("ok", cost_per_hour="9.00")
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_ok"
    m = gw.deps.metrics
    assert m.upstream_errors == {(MODEL, "ep_dead", "connect"): 1,
                                 (MODEL, "ep_busy", "status_503"): 1}
    assert m.route_choices == {(MODEL, "ep_ok", "sup_ok"): 1}


async def test_refused_requests_leave_in_flight_at_zero(gw_local: Harness) -> None:
    gw = gw_local
    r = await gw.client.post("/v1/chat/completions", json=chat_body(model="nope"))
    assert r.status_code == 404
    assert gw.deps.metrics.in_flight == 0
    assert not gw.deps.metrics.duration


class _Families(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self):  # type: ignore[no-untyped-def]
        return gateway_families(self.metrics)


def test_prometheus_exposition_in_seconds() -> None:
    m = GatewayMetrics()
    m.started()
    m.served(MODEL, "ep_a", 12.0, 3.0)
    m.upstream_error(MODEL, "ep_b", "timeout")
    m.chose(MODEL, "ep_a", "sup_a")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(m))
    text = generate_latest(registry).decode()
    labels = f'endpoint="ep_a",model="{MODEL}"'
    assert "cambist_gateway_requests_in_flight 1.0" in text
    def bucket(name: str, le: str) -> str:
        return f'{name}_bucket{{endpoint="ep_a",le="{le}",model="{MODEL}"}}'

    duration = "cambist_gateway_request_duration_seconds"
    assert f"{bucket(duration, '0.01')} 0.0" in text
    assert f"{bucket(duration, '0.025')} 1.0" in text
    assert f"{bucket(duration, '+Inf')} 1.0" in text
    assert f"{duration}_sum{{{labels}}} 0.012" in text
    assert f"{bucket('cambist_gateway_ttft_seconds', '0.005')} 1.0" in text
    assert (f'cambist_gateway_upstream_errors_total{{cause="timeout",endpoint="ep_b",'
            f'model="{MODEL}"}} 1.0') in text
    assert (f'cambist_gateway_route_choices_total{{{labels},supplier="sup_a"}} 1.0') in text
