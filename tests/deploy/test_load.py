"""Reading a deployment's load from its engines' metrics."""

from __future__ import annotations

import httpx

from cambist.deploy.autoscale import LoadSample
from cambist.deploy.load import EngineLoad, parse_engine_load
from tests.deploy.conftest import Stack, offer

METRICS = """# TYPE cambist_engine_generation_tokens_per_second gauge
cambist_engine_generation_tokens_per_second 1234.5
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting 3.0
# TYPE cambist_engine_requests_waiting gauge
cambist_engine_requests_waiting 3.0
"""


def test_parse_counts_the_waiting_gauge_once() -> None:
    assert parse_engine_load(METRICS) == (1234.5, 3.0)


async def test_sample_sums_healthy_replicas(stack: Stack) -> None:
    st = stack
    st.suppliers["alpha"].offers = [offer("a", "alpha", "2.00")]
    await st.publish()
    await st.controller.create("llama-3.1-8b", replicas=2, name="l")
    await st.run(3)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metrics"):
            return httpx.Response(200, text=METRICS)
        return httpx.Response(404)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        s = await EngineLoad(st.records, client).sample("l", st.clock.now())
        assert s == LoadSample(st.clock.now(), 2469.0, 6.0)
        assert await EngineLoad(st.records, client).sample("nothing", 0.0) is None
