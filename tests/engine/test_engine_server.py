"""The engine's HTTP API in-process: shapes, streaming, modes, metrics and errors."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cambist.domain.errors import InvalidRequest, NotFound, UnquotableOffer
from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.engine import EngineConfig, EngineCore, create_app, resolve_engine
from cambist.engine.runtime import EngineRuntime

MODEL = "llama-3.1-8b"
REASONER = "deepseek-r1-distill-llama-70b"
SKU = "H100-80GB-SXM"
USER = [{"role": "user", "content": "Tell me about GPUs."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


async def _client(config: EngineConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as c:
            yield c


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    config = EngineConfig(MODEL, SKU, time_scale=0.01, max_body_bytes=64 * 1024)
    async for c in _client(config):
        yield c


@pytest.fixture
async def reasoner() -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(EngineConfig(REASONER, SKU, time_scale=0.005)):
        yield c


def sse_events(text: str) -> list[Any]:
    """Parse SSE frames; checks the framing on the way."""
    assert text.endswith("\n\n")
    events: list[Any] = []
    for frame in text.split("\n\n")[:-1]:
        assert frame.startswith("data: "), frame
        payload = frame[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def chat(c: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await c.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param
    return err


# -- happy paths ------------------------------------------------------------------


async def test_chat_non_stream_shape(client: httpx.AsyncClient) -> None:
    r = await chat(client)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == MODEL
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    msg = choice["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert "reasoning_content" not in msg and "tool_calls" not in msg
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_chat_tokens(USER)
    assert usage["completion_tokens"] == count_text_tokens(msg["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = (await chat(client)).json()
    assert again["choices"][0]["message"]["content"] == msg["content"]


async def test_chat_stream_framing_with_usage(client: httpx.AsyncClient) -> None:
    plain = (await chat(client)).json()
    r = await chat(client, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk, finish_chunk = chunks[-1], chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-2]]
    assert all(isinstance(d, str) and count_text_tokens(d) == 1 for d in deltas)
    assert len(deltas) == plain["usage"]["completion_tokens"]
    assert "".join(deltas) == plain["choices"][0]["message"]["content"]


async def test_chat_stream_without_usage(client: httpx.AsyncClient) -> None:
    r = await chat(client, stream=True, max_tokens=3)
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) == 1 + 3 + 1  # role, three tokens, finish


async def test_completions_stream_and_not(client: httpx.AsyncClient) -> None:
    body = {"model": MODEL, "prompt": "The cheapest GPU is", "max_tokens": 12}
    r = await client.post("/v1/completions", json=body)
    data = r.json()
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    text = data["choices"][0]["text"]
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"] == {
        "prompt_tokens": count_text_tokens(body["prompt"]),
        "completion_tokens": 12,
        "total_tokens": count_text_tokens(body["prompt"]) + 12,
    }
    assert count_text_tokens(text) == 12
    r = await client.post(
        "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"] == data["usage"]
    pieces = [e["choices"][0]["text"] for e in events[:-3]]
    assert "".join(pieces) == text and len(pieces) == 12
    assert events[-3]["choices"][0]["finish_reason"] == "length"


async def test_embeddings(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", json={"model": MODEL, "input": ["alpha", "beta gamma"]})
    data = r.json()
    assert data["object"] == "list" and data["model"] == MODEL
    n = count_text_tokens("alpha") + count_text_tokens("beta gamma")
    assert data["usage"] == {"prompt_tokens": n, "total_tokens": n}
    vecs = [d["embedding"] for d in data["data"]]
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert all(len(v) == 256 for v in vecs)
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9) for v in vecs)
    assert vecs[0] != vecs[1]
    single = await client.post("/v1/embeddings", json={"model": MODEL, "input": "alpha"})
    assert single.json()["data"][0]["embedding"] == vecs[0]
    b64 = await client.post(
        "/v1/embeddings", json={"model": MODEL, "input": "alpha", "encoding_format": "base64"}
    )
    raw = base64.b64decode(b64.json()["data"][0]["embedding"])
    decoded = struct.unpack("<256f", raw)
    pairs = zip(decoded, vecs[0], strict=True)
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7) for a, b in pairs)


async def test_models_and_health(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    (m,) = models["data"]
    assert m["id"] == MODEL and m["object"] == "model" and m["owned_by"]
    assert m["max_model_len"] == 131072
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_reasoning_model_fields(reasoner: httpx.AsyncClient) -> None:
    body = {"model": REASONER, "messages": USER}
    data = (await reasoner.post("/v1/chat/completions", json=body)).json()
    msg, usage = data["choices"][0]["message"], data["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning > 0 and reasoning == count_text_tokens(msg["reasoning_content"])
    assert usage["completion_tokens"] == reasoning + count_text_tokens(msg["content"])
    r = await reasoner.post("/v1/chat/completions", json={**body, "stream": True})
    chunks = sse_events(r.text)[:-1]
    thought = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    said = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert thought == msg["reasoning_content"] and said == msg["content"]


async def test_tool_calls(client: httpx.AsyncClient) -> None:
    r = await chat(client, tools=[WEATHER], tool_choice="required")
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["city"], str)
    fn = call["function"]
    expected = count_text_tokens(fn["name"]) + count_text_tokens(fn["arguments"])
    assert r.json()["usage"]["completion_tokens"] == expected
    auto = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "tools": [WEATHER],
              "messages": [{"role": "user", "content": "use get_weather for Paris"}]},
    )
    assert auto.json()["choices"][0]["finish_reason"] == "tool_calls"
    plain = await chat(client, tools=[WEATHER])
    assert plain.json()["choices"][0]["finish_reason"] == "stop"
    stream = await chat(client, tools=[WEATHER], tool_choice="required", stream=True)
    chunks = sse_events(stream.text)[:-1]
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
             if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["id"] == call["id"] and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"]["arguments"] for c in calls) == fn["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_json_modes(client: httpx.AsyncClient) -> None:
    r = await chat(client, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    schema = {"type": "object", "properties": {"n": {"type": "integer"},
              "names": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
              "required": ["n", "names"]}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    r = await chat(client, response_format=rf)
    value = json.loads(r.json()["choices"][0]["message"]["content"])
    assert isinstance(value["n"], int) and len(value["names"]) == 1


async def test_metrics(client: httpx.AsyncClient) -> None:
    slow = asyncio.create_task(chat(client, max_tokens=60))
    running = 0.0
    for _ in range(200):
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith("vllm:num_requests_running"))
        running = float(line.rsplit(" ", 1)[1])
        if running:
            break
        await asyncio.sleep(0.005)
    assert running == 1.0
    await slow
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    for name in ("cambist_engine_requests_running", "cambist_engine_requests_waiting",
                 "vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert values[name] == 0.0
    assert values["cambist_engine_prompt_tokens_total"] == count_chat_tokens(USER)
    assert values["cambist_engine_generation_tokens_total"] == 60
    assert values["cambist_engine_generation_tokens_per_second"] > 0


async def test_concurrent_requests_all_complete(client: httpx.AsyncClient) -> None:
    results = await asyncio.gather(*(
        client.post("/v1/chat/completions", json={
            "model": MODEL, "max_tokens": 20,
            "messages": [{"role": "user", "content": f"question {i}"}]})
        for i in range(16)
    ))
    assert all(r.status_code == 200 for r in results)
    assert all(r.json()["usage"]["completion_tokens"] <= 20 for r in results)


async def test_closing_a_feed_cancels_the_request() -> None:
    resolved = resolve_engine(EngineConfig(MODEL, SKU))
    runtime = EngineRuntime(EngineCore(resolved.model, resolved.estimate), time_scale=0.01)
    feed = runtime.submit("x", 10, 1000)
    assert await feed.wait() == 1
    feed.close()
    assert "x" not in runtime.core and runtime.core.idle
    await runtime.close()


# -- bad input ------------------------------------------------------------------------


async def test_malformed_and_non_object_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", content=b'{"model": ')
    assert_error(r, 400)
    r = await client.post("/v1/chat/completions", content=b"[1, 2]")
    assert_error(r, 400)


async def test_wrong_model_is_404(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json={"model": "gpt-9", "messages": USER})
    assert assert_error(r, 404, "model")["code"] == "model_not_found"
    r = await client.post("/v1/embeddings", json={"model": "gpt-9", "input": "x"})
    assert assert_error(r, 404)["code"] == "model_not_found"


@pytest.mark.parametrize("messages", [None, [], "hello", [{"content": "no role"}], [5]])
async def test_bad_messages(client: httpx.AsyncClient, messages: Any) -> None:
    body: dict[str, Any] = {"model": MODEL}
    if messages is not None:
        body["messages"] = messages
    assert_error(await client.post("/v1/chat/completions", json=body), 400, "messages")


@pytest.mark.parametrize("value", [0, -5, "10", 1.5, True])
@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_bad_max_tokens(client: httpx.AsyncClient, key: str, value: Any) -> None:
    assert_error(await chat(client, **{key: value}), 400, key)


async def test_bad_completion_max_tokens(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 0})
    assert_error(r, 400, "max_tokens")
    r = await client.post("/v1/completions", json={"model": MODEL, "prompt": 7})
    assert_error(r, 400, "prompt")


async def test_n_above_one(client: httpx.AsyncClient) -> None:
    assert_error(await chat(client, n=17), 400, "n")  # n from 2 to 16: test_engine_choices
    assert (await chat(client, n=1, max_tokens=2)).status_code == 200


async def test_body_too_large(client: httpx.AsyncClient) -> None:
    big = [{"role": "user", "content": "word " * 20_000}]
    r = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": big})
    assert assert_error(r, 413)["code"] == "request_too_large"


async def test_other_bad_fields(client: httpx.AsyncClient) -> None:
    assert_error(await chat(client, stream="yes"), 400, "stream")
    assert_error(await chat(client, response_format={"type": "xml"}), 400, "response_format")
    assert_error(await chat(client, tools=[{"type": "function"}]), 400, "tools")
    choice = {"type": "function", "function": {"name": "missing"}}
    assert_error(await chat(client, tools=[WEATHER], tool_choice=choice), 400, "tool_choice")
    assert_error(await chat(client, logprobs="yes"), 400, "logprobs")
    r = await client.post("/v1/embeddings", json={"model": MODEL, "input": []})
    assert_error(r, 400, "input")


async def test_context_length_exceeded(client: httpx.AsyncClient) -> None:
    r = await chat(client, max_tokens=200_000)
    assert assert_error(r, 400, "max_tokens")["code"] == "context_length_exceeded"


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing"), 404)
    assert_error(await client.get("/v1/chat/completions"), 405)


def test_create_app_refuses_bad_configs() -> None:
    with pytest.raises(NotFound):
        create_app(EngineConfig("no-such-model", SKU))
    with pytest.raises(InvalidRequest):
        create_app(EngineConfig("llama-3.1-405b", SKU))
    with pytest.raises(UnquotableOffer):
        create_app(EngineConfig(MODEL, "NOT-A-GPU"))
