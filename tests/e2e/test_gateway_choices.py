"""``n``, ``logprobs``/``top_logprobs`` and ``seed`` through a real gateway to a reference
engine: the choices come back exactly as the engine answers them directly, streamed and
not, and the usage of every choice is metered and charged (also when the caller
did not ask for usage in the stream)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion

from tests.e2e.exchange_process import ExchangeProcess, reference_engine

pytestmark = pytest.mark.e2e

SERVED = "e2e-choices-qwen"  # a name the price list does not know: declared prices apply
BODY: dict[str, Any] = {
    "model": SERVED, "messages": [{"role": "user", "content": "Name two GPU clouds"}],
    "n": 2, "logprobs": True, "top_logprobs": 3, "seed": 1234, "max_tokens": 24,
}
MICRO = Decimal("0.000001")


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """A reference engine on a free port, stopped at the end."""
    with reference_engine(SERVED) as url:
        yield url


@pytest.fixture(scope="module")
def endpoint(exchange: ExchangeProcess, engine_url: str) -> Iterator[dict[str, Any]]:
    """The engine registered as a local endpoint; yields its model listing (with prices)."""
    r = exchange.cli("endpoints", "add", engine_url, "--model", SERVED, "--price-in", "0.02",
                     "--price-out", "0.05", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    ep_id = json.loads(r.stdout)["id"]
    try:
        with exchange.client(exchange.connection["demo_key"]) as c:
            deadline = time.monotonic() + 15
            while (model := {m["id"]: m for m in c.get("/v1/models").json()["data"]}
                   .get(SERVED)) is None:
                assert time.monotonic() < deadline, f"{SERVED} never became routable"
                time.sleep(0.2)
        yield model
    finally:
        exchange.cli("endpoints", "remove", ep_id)


def _events(text: str) -> list[dict[str, Any]]:
    frames = [f.removeprefix("data: ") for f in text.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    return [json.loads(f) for f in frames[:-1]]


def _reassemble(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streamed choices as (index, content, logprobs content, finish_reason)."""
    got: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"content": "", "logprobs": [], "finish_reason": None})
    for chunk in chunks:
        for ch in chunk["choices"]:
            acc = got[ch["index"]]
            acc["content"] += ch["delta"].get("content") or ""
            acc["logprobs"] += (ch["logprobs"] or {}).get("content") or []
            acc["finish_reason"] = ch["finish_reason"] or acc["finish_reason"]
    return [{"index": i, **got[i]} for i in sorted(got)]


def _flat(choices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": c["index"], "content": c["message"]["content"],
             "logprobs": c["logprobs"]["content"], "finish_reason": c["finish_reason"]}
            for c in choices]


def _charge(pricing: dict[str, str], usage: dict[str, Any]) -> Decimal:
    exact = (Decimal(pricing["prompt"]) * usage["prompt_tokens"]
             + Decimal(pricing["completion"]) * usage["completion_tokens"]) / Decimal(10**6)
    return exact.quantize(MICRO, rounding=ROUND_HALF_UP)


def _metered(exchange: ExchangeProcess, key: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 10
    with exchange.client(key) as c:
        while True:
            rows = {u["request_id"]: u
                    for u in c.get("/v1/usage", params={"limit": 10000}).json()["data"]}
            if ids <= set(rows) or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)


def test_choices_logprobs_and_seed_pass_through(
    exchange: ExchangeProcess, engine_url: str, endpoint: dict[str, Any]
) -> None:
    key = exchange.connection["demo_key"]
    direct = httpx.post(f"{engine_url}/chat/completions", json=BODY, timeout=30).json()
    assert len(direct["choices"]) == 2 and direct["choices"][0]["logprobs"]["content"]
    stream_body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    with exchange.client(key) as c:
        plain = c.post("/v1/chat/completions", json=BODY)
        streamed = c.post("/v1/chat/completions", json=stream_body)
        quiet = c.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert plain.status_code == 200, plain.text
    assert streamed.status_code == 200, streamed.text
    chunks = _events(streamed.text)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == direct["usage"]

    # The parameters reach the engine unchanged: both answers equal the direct one.
    assert plain.json()["choices"] == direct["choices"]
    assert plain.json()["usage"] == direct["usage"]
    parsed = ChatCompletion.model_validate(plain.json())  # the SDK's own shapes
    assert [len(c.logprobs.content or []) if c.logprobs else None for c in parsed.choices] == [
        len(c["logprobs"]["content"]) for c in direct["choices"]]
    assert _reassemble(chunks[:-1]) == _flat(direct["choices"])
    quiet_chunks = _events(quiet.text)  # usage not asked for: no usage chunk comes back
    assert all(ch["choices"] for ch in quiet_chunks)
    assert _reassemble(quiet_chunks) == _flat(direct["choices"])

    # Every choice is metered: completion tokens of both, charged at the listed price.
    assert direct["usage"]["completion_tokens"] == sum(
        len(c["logprobs"]["content"]) for c in direct["choices"])
    ids = {r.headers["x-request-id"] for r in (plain, streamed, quiet)}
    rows = _metered(exchange, key, ids)
    for r in (plain, streamed, quiet):
        row = rows[r.headers["x-request-id"]]
        assert (row["prompt_tokens"], row["completion_tokens"]) == (
            direct["usage"]["prompt_tokens"], direct["usage"]["completion_tokens"])
    assert Decimal(plain.headers["x-cambist-cost"]) == _charge(endpoint["pricing"],
                                                              direct["usage"])


def test_stream_without_usage_request_has_no_usage_fields(
    exchange: ExchangeProcess, endpoint: dict[str, Any]
) -> None:
    """OpenAI: a chunk has a ``usage`` field only when the caller set include_usage."""
    with exchange.client(exchange.connection["demo_key"]) as c:
        quiet = c.post("/v1/chat/completions", json={**BODY, "stream": True})
    assert quiet.status_code == 200, quiet.text
    chunks = _events(quiet.text)
    assert chunks and all(ch["choices"] for ch in chunks)  # no usage chunk
    assert not any("usage" in ch for ch in chunks)
