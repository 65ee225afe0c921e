"""Routing by marginal cost, failover before the first byte, broken and abandoned streams."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

from cambist.domain.tokens import count_chat_tokens, count_text_tokens

from .conftest import TENANT, Harness, chat_body
from .upstream_app import PIECES


async def test_idle_endpoints_pick_the_cheapest(gw: Harness) -> None:
    await gw.upstream("pricey", cost_per_hour="8.00")
    await gw.upstream("cheap", cost_per_hour="1.00")
    for _ in range(3):
        r = await gw.client.post("/v1/chat/completions", json=chat_body())
        assert r.headers["x-cambist-endpoint"] == "ep_cheap"


async def test_load_spreads_to_an_idle_replica_when_the_cheap_one_is_busy(gw: Harness) -> None:
    cheap = await gw.upstream("cheap", cost_per_hour="1.00", max_concurrency=4)
    await gw.upstream("pricey", cost_per_hour="8.00", max_concurrency=4)
    cheap.gate = asyncio.Event()
    held = asyncio.create_task(gw.client.post("/v1/chat/completions", json=chat_body()))
    while not cheap.received:
        await asyncio.sleep(0.005)
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.headers["x-cambist-endpoint"] == "ep_pricey"
    cheap.gate.set()
    first = await held
    assert first.headers["x-cambist-endpoint"] == "ep_cheap"
    assert gw.table.stats("ep_cheap").in_flight == 0


async def test_retry_when_the_cheapest_endpoint_is_down(gw: Harness) -> None:
    await gw.dead_upstream("dead", cost_per_hour="0.50")
    await gw.upstream("live", cost_per_hour="4.00")
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200, r.text
    assert r.headers["x-cambist-attempts"] == "2"
    assert r.headers["x-cambist-endpoint"] == "ep_live"
    outcomes = [(e["data"]["endpoint"], e["data"]["outcome"]) for e in gw.events]
    assert outcomes == [("ep_dead", "connect"), ("ep_live", "ok")]
    assert all(e["kind"] == "route.decision" for e in gw.events)
    # the dead endpoint's circuit is open: the next request goes straight to the live one
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.headers["x-cambist-attempts"] == "1"
    [first, second] = gw.wallet.records
    assert first.endpoint_id == second.endpoint_id == "ep_live"


async def test_retry_when_an_endpoint_returns_500(gw: Harness) -> None:
    bad = await gw.upstream("bad", cost_per_hour="0.50")
    good = await gw.upstream("good", cost_per_hour="4.00")
    bad.fail_status = 500
    r = await gw.client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.status_code == 200
    assert r.headers["x-cambist-attempts"] == "2"
    assert r.text.endswith("data: [DONE]\n\n")
    assert bad.received[0] == good.received[0]  # the same body on every attempt
    assert gw.table.stats("ep_bad").consecutive_failures == 1


async def test_all_attempts_failing_is_502_and_releases_the_hold(gw: Harness) -> None:
    for name in ("a", "b"):
        up = await gw.upstream(name)
        up.fail_status = 503
    await gw.dead_upstream("c")
    await gw.upstream("d")  # never reached: max_attempts is 3
    gw.table.stats("ep_d").in_flight = 100  # make it the worst choice
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_error" and err["type"] == "server_error"
    assert "3 attempts" in err["message"]
    assert r.headers["x-cambist-attempts"] == "3"
    assert gw.wallet.records == [] and gw.wallet.holds == {}
    assert gw.wallet.balance(TENANT) == Decimal("10")


async def test_broken_stream_ends_with_error_event_and_partial_charge(gw: Harness) -> None:
    up = await gw.upstream("a")
    up.die_after = 4
    body = chat_body(stream=True)
    async with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        text = (await r.aread()).decode()
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    err = orjson.loads(events[-3].removeprefix("data: "))
    assert err["error"]["code"] == "upstream_error"
    assert err["error"]["type"] == "server_error" and err["error"]["param"] is None
    delivered = "".join(PIECES[:4])
    [rec] = gw.wallet.records
    assert rec.status == "partial"
    prompt = count_chat_tokens(body["messages"])
    assert (rec.prompt_tokens, rec.completion_tokens) == (prompt, count_text_tokens(delivered))
    assert rec.price == gw.price.charge(prompt, count_text_tokens(delivered))
    assert gw.wallet.holds == {}
    assert gw.table.stats("ep_a").in_flight == 0


async def test_client_disconnect_mid_stream_settles_what_was_delivered(gw: Harness) -> None:
    up = await gw.upstream("a")
    up.chunk_delay_s = 0.05
    async with gw.client.stream("POST", "/v1/chat/completions",
                                json=chat_body(stream=True)) as r:
        lines = r.aiter_lines()
        seen = 0
        async for line in lines:
            seen += line.startswith("data: ")
            if seen == 3:
                break
    for _ in range(200):
        if gw.wallet.records:
            break
        await asyncio.sleep(0.01)
    [rec] = gw.wallet.records
    assert rec.status == "partial"
    assert 0 < rec.completion_tokens < count_text_tokens("".join(PIECES))
    assert gw.wallet.holds == {}
    for _ in range(200):
        if gw.table.stats("ep_a").in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert gw.table.stats("ep_a").in_flight == 0


async def test_no_healthy_endpoint_when_circuits_and_flags_exclude_all(gw: Harness) -> None:
    await gw.upstream("a", healthy=False)
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "no_healthy_endpoint"
