"""``n`` choices, ``seed`` and logprobs on the reference engine, with the SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from cambist.domain.clock import SystemClock
from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.engine import EngineConfig, EngineCore, create_app, resolve_engine
from cambist.engine.protocol import parse_chat
from cambist.engine.runtime import EngineRuntime
from cambist.engine.serving import EngineService
from cambist.engine.text import GenerationRequest, plan_generation, prompt_seed

MODEL = "llama-3.1-8b"
REASONER = "deepseek-r1-distill-llama-70b"
SKU = "H100-80GB-SXM"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about GPUs."}]
PROMPT = "The cheapest GPU is"
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}


@dataclass
class Engine:
    http: httpx.AsyncClient
    sdk: openai.AsyncOpenAI
    runtime: EngineRuntime


async def _engine(model: str) -> AsyncIterator[Engine]:
    app = create_app(EngineConfig(model, SKU, time_scale=0.005))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as http:
            sdk = openai.AsyncOpenAI(base_url="http://engine/v1", api_key="unused",
                                     http_client=http, max_retries=0)
            yield Engine(http, sdk, app.state.runtime)


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async for e in _engine(MODEL):
        yield e


@pytest.fixture
async def reasoner() -> AsyncIterator[Engine]:
    async for e in _engine(REASONER):
        yield e


def sse_events(text: str) -> list[Any]:
    assert text.endswith("\n\n")
    frames = [f.removeprefix("data: ") for f in text.split("\n\n")[:-1]]
    return [f if f == "[DONE]" else json.loads(f) for f in frames]


async def chat(e: Engine, **body: Any) -> httpx.Response:
    return await e.http.post("/v1/chat/completions",
                             json={"model": MODEL, "messages": USER, **body})


async def complete(e: Engine, **body: Any) -> httpx.Response:
    return await e.http.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, **body})


def assert_error(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] and err["message"] and err["code"]


def check_ranked(entry: dict[str, Any], top: int) -> None:
    """One chat logprob entry: chosen token most likely, alternatives lower, sorted, distinct."""
    assert entry["logprob"] <= 0 and entry["bytes"] == list(entry["token"].encode())
    alts = entry["top_logprobs"]
    assert len(alts) == top
    if top:
        assert alts[0]["token"] == entry["token"] and alts[0]["logprob"] == entry["logprob"]
    lps = [a["logprob"] for a in alts]
    assert all(a > b for a, b in itertools.pairwise(lps))
    assert len({a["token"] for a in alts}) == len(alts)
    assert all(a["bytes"] == list(a["token"].encode()) for a in alts)


def by_index(chunks: list[dict[str, Any]], field: str) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for c in chunks:
        for ch in c["choices"]:
            out[ch["index"]].append(ch[field])
    return out


# -- n -------------------------------------------------------------------------------


async def test_n_chat_non_stream_sdk(engine: Engine) -> None:
    single = await engine.sdk.chat.completions.create(model=MODEL, messages=USER)
    done = await engine.sdk.chat.completions.create(model=MODEL, messages=USER, n=3)
    assert [c.index for c in done.choices] == [0, 1, 2]
    texts = [c.message.content or "" for c in done.choices]
    assert texts[0] == single.choices[0].message.content  # choice 0 is the plain answer
    assert len(set(texts)) == 3
    assert all(c.finish_reason == "stop" and c.logprobs is None for c in done.choices)
    usage = done.usage
    assert usage is not None and usage.prompt_tokens == count_chat_tokens(USER)
    assert usage.completion_tokens == sum(count_text_tokens(t) for t in texts)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_n_chat_stream_matches_non_stream(engine: Engine) -> None:
    plain = (await chat(engine, n=3, max_tokens=40)).json()
    r = await chat(engine, n=3, max_tokens=40, stream=True,
                   stream_options={"include_usage": True})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks, usage_chunk = events[:-2], events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in chunks)
    deltas, finishes = by_index(chunks, "delta"), by_index(chunks, "finish_reason")
    assert sorted(deltas) == [0, 1, 2]
    for choice in plain["choices"]:
        i = choice["index"]
        assert deltas[i][0] == {"role": "assistant", "content": ""}
        assert "".join(d.get("content", "") for d in deltas[i]) == choice["message"]["content"]
        assert [f for f in finishes[i] if f is not None] == [choice["finish_reason"]]
        assert finishes[i][-1] is not None  # the finish chunk is that choice's last
    order = [c["choices"][0]["index"] for c in chunks]
    assert order != sorted(order)  # interleaved as tokens arrive, not choice after choice


async def test_n_chat_stream_sdk(engine: Engine) -> None:
    plain = await engine.sdk.chat.completions.create(model=MODEL, messages=USER, n=2, seed=7)
    stream = await engine.sdk.chat.completions.create(
        model=MODEL, messages=USER, n=2, seed=7, stream=True,
        stream_options={"include_usage": True})
    text: dict[int, str] = defaultdict(str)
    usage = None
    async for chunk in stream:
        for ch in chunk.choices:
            text[ch.index] += ch.delta.content or ""
        usage = chunk.usage or usage
    assert [text[c.index] for c in plain.choices] == [c.message.content for c in plain.choices]
    assert usage == plain.usage


async def test_n_reasoning_tokens_are_summed(reasoner: Engine) -> None:
    body = {"model": REASONER, "messages": USER, "n": 2}
    data = (await reasoner.http.post("/v1/chat/completions", json=body)).json()
    msgs = [c["message"] for c in data["choices"]]
    reasoning = sum(count_text_tokens(m["reasoning_content"]) for m in msgs)
    usage = data["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning
    assert usage["completion_tokens"] == reasoning + sum(count_text_tokens(m["content"])
                                                         for m in msgs)


async def test_n_completions_stream_and_not(engine: Engine) -> None:
    plain = (await complete(engine, n=3, max_tokens=12)).json()
    assert [c["index"] for c in plain["choices"]] == [0, 1, 2]
    assert plain["usage"]["completion_tokens"] == 36
    single = (await complete(engine, max_tokens=12)).json()
    assert plain["choices"][0]["text"] == single["choices"][0]["text"]
    r = await complete(engine, n=3, max_tokens=12, stream=True,
                       stream_options={"include_usage": True})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"] == plain["usage"]
    texts = by_index(events[:-2], "text")
    assert {i: "".join(t) for i, t in texts.items()} == {
        c["index"]: c["text"] for c in plain["choices"]}


async def test_n_choices_are_separate_sequences(engine: Engine) -> None:
    slow = asyncio.create_task(chat(engine, n=4, max_tokens=200))
    running = 0
    for _ in range(400):
        running = engine.runtime.core.running
        if running:
            break
        await asyncio.sleep(0.002)
    assert running == 4
    data = (await slow).json()
    texts = [c["message"]["content"] for c in data["choices"]]
    assert data["usage"]["completion_tokens"] == sum(count_text_tokens(t) for t in texts)
    assert engine.runtime.core.idle


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_client_going_away_frees_every_choice(how: str) -> None:
    resolved = resolve_engine(EngineConfig(MODEL, SKU))
    # real time: a natural answer takes about a second, so the stream is still running
    runtime = EngineRuntime(EngineCore(resolved.model, resolved.estimate), time_scale=1.0)
    service = EngineService(runtime, resolved.model, resolved.served_name, SystemClock())
    body = {"model": MODEL, "messages": USER, "n": 3, "stream": True}
    stream = await service.chat(parse_chat(body, MODEL))
    assert not isinstance(stream, dict)
    first = await anext(stream)
    assert b'"role":"assistant"' in first and runtime.core.running == 3
    if how == "aclose":
        await stream.aclose()
    else:  # what Starlette does when the client disconnects mid-wait
        async def read_all() -> None:
            async for _ in stream:
                pass

        task = asyncio.create_task(read_all())
        await asyncio.sleep(0.05)
        assert runtime.core.running == 3  # still generating when the client leaves
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert runtime.core.idle
    await runtime.close()


@pytest.mark.parametrize("n", [0, 17, "2", 1.5, True, -1])
async def test_n_bounds(engine: Engine, n: Any) -> None:
    assert_error(await chat(engine, n=n), "n")
    assert_error(await complete(engine, n=n), "n")


async def test_n_max_and_best_of(engine: Engine) -> None:
    data = (await chat(engine, n=16, max_tokens=2)).json()
    assert len(data["choices"]) == 16 and data["usage"]["completion_tokens"] == 32
    assert (await complete(engine, n=2, best_of=2, max_tokens=2)).status_code == 200
    assert_error(await complete(engine, n=2, best_of=3), "best_of")
    assert_error(await complete(engine, best_of=2), "best_of")
    assert_error(await complete(engine, echo=True), "echo")
    assert_error(await complete(engine, suffix=" end."), "suffix")


# -- seed ----------------------------------------------------------------------------


async def test_seed_is_deterministic(engine: Engine) -> None:
    def content(r: httpx.Response) -> list[str]:
        return [c["message"]["content"] for c in r.json()["choices"]]

    unseeded = content(await chat(engine))
    expected = plan_generation(GenerationRequest(seed=prompt_seed(USER))).content_text
    assert unseeded == [expected]  # no seed: the answer the engine always gave
    a, b = content(await chat(engine, seed=42, n=2)), content(await chat(engine, seed=42, n=2))
    assert a == b and a[0] != unseeded[0]
    assert content(await chat(engine, seed=43, n=2)) != a
    assert content(await chat(engine, seed=42))[0] == a[0]  # choice i does not depend on n
    texts = [(await complete(engine, seed=s, max_tokens=8)).json()["choices"][0]["text"]
             for s in (1, 1, 2)]
    assert texts[0] == texts[1] != texts[2]


@pytest.mark.parametrize("seed", ["1", 1.5, True, 2**64, [1]])
async def test_bad_seed(engine: Engine, seed: Any) -> None:
    assert_error(await chat(engine, seed=seed), "seed")
    assert_error(await complete(engine, seed=seed), "seed")


# -- chat logprobs ---------------------------------------------------------------------


async def test_chat_logprobs_sdk(engine: Engine) -> None:
    done = await engine.sdk.chat.completions.create(
        model=MODEL, messages=USER, n=2, logprobs=True, top_logprobs=5, max_tokens=30)
    for choice in done.choices:
        lp = choice.logprobs
        assert lp is not None and lp.content is not None and lp.refusal is None
        assert "".join(t.token for t in lp.content) == choice.message.content
        assert len(lp.content) == count_text_tokens(choice.message.content or "")
        for t in lp.content:
            check_ranked(t.model_dump(), 5)


async def test_chat_logprobs_raw_shapes(engine: Engine) -> None:
    body = (await chat(engine, logprobs=True, top_logprobs=5, max_tokens=20)).json()
    (choice,) = body["choices"]
    lp = choice["logprobs"]
    assert set(lp) == {"content", "refusal"} and lp["refusal"] is None
    assert set(lp["content"][0]) == {"token", "logprob", "bytes", "top_logprobs"}
    assert set(lp["content"][0]["top_logprobs"][0]) == {"token", "logprob", "bytes"}
    again = (await chat(engine, logprobs=True, top_logprobs=5, max_tokens=20)).json()
    assert again["choices"][0]["logprobs"] == lp  # deterministic
    fewer = (await chat(engine, logprobs=True, top_logprobs=2, max_tokens=20)).json()
    for small, big in zip(fewer["choices"][0]["logprobs"]["content"], lp["content"], strict=True):
        assert small["top_logprobs"] == big["top_logprobs"][:2]
    bare = (await chat(engine, logprobs=True, max_tokens=20)).json()["choices"][0]["logprobs"]
    assert all(e["top_logprobs"] == [] for e in bare["content"]) and bare["content"]
    for flag in ({}, {"logprobs": False}, {"logprobs": None}):
        assert (await chat(engine, max_tokens=2, **flag)).json()["choices"][0]["logprobs"] is None
    seeded = (await chat(engine, logprobs=True, top_logprobs=3, seed=5, max_tokens=20)).json()
    assert seeded["choices"][0]["logprobs"] != fewer["choices"][0]["logprobs"]


async def test_chat_logprobs_never_null_without_content(engine: Engine, reasoner: Engine) -> None:
    r = await chat(engine, tools=[WEATHER], tool_choice="required", logprobs=True)
    assert r.json()["choices"][0]["logprobs"] == {"content": [], "refusal": None}
    body = {"model": REASONER, "messages": USER, "logprobs": True, "top_logprobs": 1}
    choice = (await reasoner.http.post("/v1/chat/completions", json=body)).json()["choices"][0]
    tokens = [e["token"] for e in choice["logprobs"]["content"]]
    assert "".join(tokens) == choice["message"]["content"]  # reasoning has no logprobs


async def test_chat_logprobs_stream(engine: Engine) -> None:
    plain = (await chat(engine, n=2, logprobs=True, top_logprobs=3, max_tokens=25)).json()
    r = await chat(engine, n=2, logprobs=True, top_logprobs=3, max_tokens=25, stream=True)
    chunks = sse_events(r.text)[:-1]
    got: dict[int, list[Any]] = defaultdict(list)
    for c in chunks:
        (ch,) = c["choices"]
        lp = ch["logprobs"]
        assert lp is not None and lp["refusal"] is None and isinstance(lp["content"], list)
        assert len(lp["content"]) == (1 if ch["delta"].get("content") else 0)
        if lp["content"]:
            assert lp["content"][0]["token"] == ch["delta"]["content"]
        got[ch["index"]] += lp["content"]
    assert [got[c["index"]] for c in plain["choices"]] == [
        c["logprobs"]["content"] for c in plain["choices"]]


@pytest.mark.parametrize(("body", "param"), [
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": "3"}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 2.0}, "top_logprobs"),
    ({"logprobs": 1}, "logprobs"),
])
async def test_chat_logprobs_validation(engine: Engine, body: dict[str, Any], param: str) -> None:
    assert_error(await chat(engine, **body), param)


async def test_chat_logprobs_validation_sdk(engine: Engine) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await engine.sdk.chat.completions.create(model=MODEL, messages=USER, top_logprobs=2)
    assert info.value.status_code == 400 and info.value.param == "top_logprobs"


# -- legacy completions logprobs -----------------------------------------------------------


def check_legacy(lp: dict[str, Any], text: str, k: int) -> None:
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == text
    assert lp["text_offset"] == [len("".join(lp["tokens"][:i])) for i in range(len(lp["tokens"]))]
    for tok, chosen, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                strict=True):
        assert chosen <= 0 and top[tok] == chosen and max(top.values()) == chosen
        assert len(top) == max(k, 1)
        assert all(v < chosen for t, v in top.items() if t != tok)


async def test_legacy_logprobs(engine: Engine) -> None:
    data = (await complete(engine, n=2, logprobs=3, max_tokens=15)).json()
    for choice in data["choices"]:
        check_legacy(choice["logprobs"], choice["text"], 3)
    zero = (await complete(engine, logprobs=0, max_tokens=5)).json()["choices"][0]
    check_legacy(zero["logprobs"], zero["text"], 0)
    assert (await complete(engine, max_tokens=2)).json()["choices"][0]["logprobs"] is None
    r = await complete(engine, n=2, logprobs=3, max_tokens=15, stream=True)
    merged: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for c in sse_events(r.text)[:-1]:
        (ch,) = c["choices"]
        for key, values in ch["logprobs"].items():
            merged[ch["index"]][key] += values
    assert [dict(merged[c["index"]]) for c in data["choices"]] == [
        c["logprobs"] for c in data["choices"]]


async def test_legacy_logprobs_sdk(engine: Engine) -> None:
    done = await engine.sdk.completions.create(model=MODEL, prompt=PROMPT, logprobs=2,
                                               max_tokens=6, n=2, seed=3)
    assert [c.index for c in done.choices] == [0, 1]
    for c in done.choices:
        assert c.logprobs is not None and c.logprobs.tokens is not None
        assert "".join(c.logprobs.tokens) == c.text


@pytest.mark.parametrize("value", [6, -1, True, "2", 1.5])
async def test_legacy_logprobs_validation(engine: Engine, value: Any) -> None:
    assert_error(await complete(engine, logprobs=value), "logprobs")
