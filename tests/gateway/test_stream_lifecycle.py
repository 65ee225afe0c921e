"""A stream's end: the client leaving cancels the upstream; a silent upstream
times out; both are metered for what was delivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from cambist.domain.tokens import count_text_tokens
from cambist.gateway import GatewaySettings

from .conftest import Harness, chat_body
from .upstream_app import PIECES


async def _until(check: Callable[[], bool], what: str) -> None:
    """Wait for ``check`` (a generous deadline: this is not a speed test)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def test_client_disconnect_cancels_the_upstream_request(gw: Harness) -> None:
    up = await gw.upstream("a")
    up.chunk_delay_s = 0.2  # the whole stream would take 2 s
    async with gw.client.stream("POST", "/v1/chat/completions",
                                json=chat_body(stream=True)) as r:
        seen = 0
        async for line in r.aiter_lines():
            seen += line.startswith("data: ")
            if seen == 2:
                break  # leaving the block drops the connection mid-stream
    await _until(lambda: up.streams_abandoned == 1, "the upstream to see the cancellation")
    await _until(lambda: bool(gw.wallet.records), "the usage record")
    [rec] = gw.wallet.records
    assert rec.status == "partial"
    assert rec.completion_tokens < count_text_tokens("".join(PIECES))
    assert gw.deps.metrics.in_flight == 0
    assert gw.table.stats("ep_a").in_flight == 0


@pytest.mark.parametrize("settings", [GatewaySettings(stream_idle_timeout_s=0.3)])
async def test_silent_stream_times_out_with_an_error_event(gw: Harness) -> None:
    up = await gw.upstream("a")
    up.chunk_delay_s = 2.0  # far beyond the idle timeout
    r = await gw.client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.status_code == 200  # the stream had started
    events = [e for e in r.text.split("\n\n") if e]
    assert '"upstream_error"' in events[-2] and events[-1] == "data: [DONE]"
    [rec] = gw.wallet.records
    assert rec.status == "partial" and rec.completion_tokens == 0
    assert gw.deps.metrics.upstream_errors[("llama-3.1-8b", "ep_a", "stream_timeout")] == 1
    assert gw.table.stats("ep_a").opened  # a silent upstream counts as a failure


@pytest.mark.parametrize("idle_timeouts", [{"sup_slow": 0.3}])
async def test_idle_timeout_is_per_upstream(gw: Harness) -> None:
    slow = await gw.upstream("slow", capacity_tok_s=2000.0)  # cheaper: routed first
    by_id = {r.id: r for r in gw.table.routes("llama-3.1-8b")}
    assert by_id["ep_slow"].stream_idle_timeout_s == 0.3
    slow.chunk_delay_s = 0.5
    r = await gw.client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert '"upstream_error"' in r.text  # the slow upstream's own limit applied
    fast = await gw.upstream("fast")
    fast.chunk_delay_s = 0.35  # over the slow one's limit, under the default
    gw.table.stats("ep_slow").circuit_open_until = gw.clock.now() + 60  # route to "fast"
    r = await gw.client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.headers["x-cambist-endpoint"] == "ep_fast"
    assert '"upstream_error"' not in r.text and r.text.endswith("data: [DONE]\n\n")


async def test_events_are_forwarded_as_they_arrive(gw: Harness) -> None:
    """No buffering: each event reaches the client when the upstream sends it,
    so the content events arrive spread over the upstream's pace (bunched at
    the end if the relay held them)."""
    up = await gw.upstream("a")
    up.chunk_delay_s = 0.1  # ten content events over ~1 s
    arrivals: list[float] = []
    async with gw.client.stream("POST", "/v1/chat/completions",
                                json=chat_body(stream=True)) as r:
        async for line in r.aiter_lines():
            if '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == len(PIECES)
    assert arrivals[-1] - arrivals[0] >= 0.5 * (len(PIECES) - 1) * up.chunk_delay_s
