"""Engine queue depth and TTFT read from an engine's /metrics into routing."""

from __future__ import annotations

from cambist.gateway.probe import EngineLoad, engine_load

from .conftest import Harness

VLLM_METRICS = """\
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 4.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.05",model_name="m"} 10.0
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 60.0
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 85.0
vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="m"} 100.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 100.0
vllm:time_to_first_token_seconds_count{model_name="m"} 100.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 20.0
"""


def test_engine_load_reads_the_vllm_names() -> None:
    assert engine_load(VLLM_METRICS) == (4, (100.0, 1000.0))
    assert engine_load("vllm:num_requests_waiting 2\n") == (2, None)
    assert engine_load("other_metric 1\n") == (None, None)


async def test_loop_feeds_the_routing_score(gw_local: Harness) -> None:
    gw = gw_local
    engine = await gw.upstream("engine")
    await gw.upstream("silent")  # answers 404 on /metrics: left alone
    provider = await gw.upstream("provider", kind="external", prices=("0.1", "0.2"))
    provider.metrics_text = VLLM_METRICS  # never read: providers have no engine page
    engine.metrics_text = VLLM_METRICS
    loop = EngineLoad(gw.table, gw.deps.http)
    await loop.step(gw.clock.now())
    assert gw.table.stats("ep_engine").queue_depth == 4
    assert gw.table.stats("ep_engine").engine_ttft_ms == (100.0, 1000.0)
    assert gw.table.stats("ep_silent").queue_depth == 0
    assert gw.table.stats("ep_provider").queue_depth == 0
    engine.metrics_text = "vllm:num_requests_waiting 0\n"
    await loop.step(gw.clock.now())
    assert gw.table.stats("ep_engine").queue_depth == 0
    assert gw.table.stats("ep_engine").engine_ttft_ms is None
