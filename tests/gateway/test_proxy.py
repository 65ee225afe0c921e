"""The gateway end to end over loopback: metering, headers, streaming, endpoints."""

from __future__ import annotations

import logging
from decimal import Decimal

import orjson
import pytest

from cambist.domain.money import quantize_usd, to_micros
from cambist.domain.tokens import count_chat_tokens, count_text_tokens

from .conftest import MODEL, TENANT, Harness, chat_body
from .upstream_app import PIECES, REASONING


def sse_payloads(text: str) -> list[str]:
    """The data payloads of an SSE body, checking every event's framing."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


async def test_chat_non_stream_charges_exact_usage_and_sets_headers(gw: Harness) -> None:
    up = await gw.upstream("a", cost_per_hour="3.60", capacity_tok_s=500.0)
    body = chat_body(provider={"order": ["x"]}, models=["m"], privacy="zero_retention",
                     my_extension=7)
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    prompt = count_chat_tokens(body["messages"])
    completion = count_text_tokens("".join(PIECES))
    assert data["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    expected = (Decimal("0.20") * prompt + Decimal("0.80") * completion) / Decimal(1_000_000)
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-cambist-endpoint"] == "ep_a"
    assert r.headers["x-cambist-supplier"] == "sup_a"
    assert r.headers["x-cambist-attempts"] == "1"
    assert Decimal(r.headers["x-cambist-cost"]) == quantize_usd(expected)
    [rec] = gw.wallet.records
    assert rec.request_id == r.headers["x-request-id"]
    assert (rec.tenant_id, rec.key_id, rec.model, rec.status) == (
        TENANT, gw.principal.key_id, MODEL, "ok")
    assert (rec.prompt_tokens, rec.completion_tokens, rec.reasoning_tokens) == (
        prompt, completion, 0)
    assert rec.price == expected
    assert rec.compute_cost == Decimal("3.60") * completion / Decimal("500.0") / 3600
    assert rec.price_version == gw.price.version
    assert rec.latency_ms > 0 and rec.ttft_ms is not None and not rec.stream
    assert gw.wallet.balance(TENANT) == Decimal("10") - expected
    assert gw.wallet.holds == {}
    # own fields stripped, unknown ones passed through untouched
    [sent] = up.received
    assert "provider" not in sent and "models" not in sent and "privacy" not in sent
    assert sent["my_extension"] == 7 and "stream_options" not in sent


async def test_reasoning_tokens_are_recorded(gw: Harness) -> None:
    await gw.upstream("a", reasoning=True)
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 200
    [rec] = gw.wallet.records
    assert rec.reasoning_tokens == count_text_tokens("".join(REASONING))


async def test_stream_with_include_usage(gw: Harness) -> None:
    up = await gw.upstream("a")
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-cambist-endpoint"] == "ep_a"
        assert "x-cambist-cost" not in r.headers
        text = (await r.aread()).decode()
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "".join(PIECES)
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == 1
    assert up.received[0]["stream_options"] == {"include_usage": True}
    [rec] = gw.wallet.records
    assert rec.status == "ok" and rec.stream
    assert rec.completion_tokens == usage_chunks[0]["usage"]["completion_tokens"]
    assert rec.ttft_ms is not None


async def test_stream_usage_chunk_stripped_when_not_asked(gw: Harness) -> None:
    up = await gw.upstream("a")
    async with gw.client.stream("POST", "/v1/chat/completions",
                                json=chat_body(stream=True)) as r:
        text = (await r.aread()).decode()
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert up.received[0]["stream_options"] == {"include_usage": True}
    [rec] = gw.wallet.records
    prompt = count_chat_tokens(chat_body()["messages"])
    assert (rec.status, rec.prompt_tokens) == ("ok", prompt)
    assert rec.completion_tokens == count_text_tokens("".join(PIECES))


async def test_completions_non_stream_and_stream(gw: Harness) -> None:
    await gw.upstream("a")
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 20}
    r = await gw.client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "".join(PIECES)
    async with gw.client.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
        text = (await s.aread()).decode()
    payloads = sse_payloads(text)
    assert payloads[-1] == "[DONE]"
    got = "".join(orjson.loads(p)["choices"][0]["text"] for p in payloads[:-1])
    assert got == "".join(PIECES)
    assert [rec.status for rec in gw.wallet.records] == ["ok", "ok"]
    prompt = count_text_tokens("Once upon a time")
    assert all(rec.prompt_tokens == prompt for rec in gw.wallet.records)


async def test_embeddings_are_priced_on_input_tokens(gw: Harness) -> None:
    await gw.upstream("a")
    texts = ["the first text to embed", "and a second"]
    r = await gw.client.post("/v1/embeddings", json={"model": MODEL, "input": texts})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    tokens = sum(count_text_tokens(t) for t in texts)
    [rec] = gw.wallet.records
    assert (rec.prompt_tokens, rec.completion_tokens) == (tokens, 0)
    assert rec.price == Decimal("0.20") * tokens / Decimal(1_000_000)
    assert Decimal(r.headers["x-cambist-cost"]) == quantize_usd(rec.price)


async def test_models_lists_priced_models_with_healthy_endpoints(gw: Harness) -> None:
    await gw.upstream("a", context_length=8192)
    await gw.upstream("b", context_length=4096)
    await gw.upstream("c", healthy=False, context_length=32768)
    gw.prices.set("qwen2.5-7b", "0.05", "0.10")
    await gw.upstream("q", model="qwen2.5-7b", healthy=False)
    await gw.upstream("u", model="unpriced-model")
    r = await gw.client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert body["data"] == [{
        "id": MODEL, "object": "model", "created": 1_700_000_000, "owned_by": "cambist",
        "pricing": {"prompt": "0.20", "completion": "0.80"},
        "context_length": 8192, "endpoints": 2,
        "tiers": {"standard": 2, "zero_retention": 2},
    }]


async def test_upstream_client_error_is_passed_through_and_released(gw: Harness) -> None:
    up = await gw.upstream("a")
    up.fail_status = 400
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "boom"
    assert r.headers["x-cambist-attempts"] == "1"
    assert gw.wallet.records == [] and gw.wallet.holds == {}
    assert len(gw.wallet.released) == 1


async def test_insufficient_credit_is_402_and_charges_nothing(gw: Harness) -> None:
    up = await gw.upstream("a")
    poor, _ = gw.auth.issue("ten_poor")
    gw.wallet.deposit("ten_poor", "0.0000001")
    r = await gw.client.post("/v1/chat/completions", json=chat_body(max_tokens=1000),
                             headers={"authorization": f"Bearer {poor}"})
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["code"] == "insufficient_quota" and err["type"] == "insufficient_quota"
    assert up.received == []
    assert gw.wallet.records == [] and gw.wallet.holds == {}
    assert gw.wallet.balance("ten_poor") == Decimal("0.0000001")


async def test_reservation_covers_max_tokens_and_charge_never_exceeds_it(gw: Harness) -> None:
    await gw.upstream("a")
    body = chat_body(max_tokens=2)  # the upstream ignores it and returns more tokens
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    prompt = count_chat_tokens(body["messages"])
    cap = gw.price.charge(prompt, 2)
    [rec] = gw.wallet.records
    # The hold is the cap in whole micro-dollars; the charge books no more.
    assert rec.price <= max(cap, quantize_usd(cap)) and to_micros(rec.price) == to_micros(cap)
    assert Decimal(r.headers["x-cambist-cost"]) == quantize_usd(cap)


async def test_logs_hold_no_prompt_or_completion_text(
    gw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    up = await gw.upstream("a")
    secret_prompt = "zebra-sapphire-prompt"
    body = chat_body(messages=[{"role": "user", "content": secret_prompt}], odd_field=1)
    with caplog.at_level(logging.DEBUG, logger="cambist"):
        await gw.client.post("/v1/chat/completions", json=body)
        await gw.client.post("/v1/chat/completions", json={**body, "stream": True})
        up.die_after = 2
        await gw.client.post("/v1/chat/completions", json={**body, "stream": True})
    assert "odd_field" in caplog.text  # field names are logged ...
    assert secret_prompt not in caplog.text  # ... never their text
    assert all(p.strip() not in caplog.text for p in ("quick", "brown"))
