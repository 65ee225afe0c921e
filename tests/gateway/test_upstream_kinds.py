"""One contract suite, run against every upstream kind: an own deployment, an
external provider (a fake that requires a bearer key the gateway reads from an
environment variable), and a local server registered through the REST API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest

from cambist.domain.tokens import count_chat_tokens, count_text_tokens

from .conftest import Harness, chat_body
from .upstream_app import PIECES, FakeUpstream

KINDS = ("deployment", "external", "local")
KEY_MARK = "zebra-upstream-key"


def key_of(name: str) -> str:
    return f"sk-{name}-{KEY_MARK}-0123456789"


async def add(gw: Harness, kind: str, name: str, *, cheap: bool = False) -> FakeUpstream:
    """One upstream of ``kind``; ``cheap`` ones are chosen first."""
    if kind == "deployment":
        return await gw.upstream(name, cost_per_hour="0.50" if cheap else "2.00")
    prices = ("0.05", "0.10") if cheap else ("0.10", "0.40")
    if kind == "external":
        return await gw.upstream(name, kind="external", prices=prices, api_key=key_of(name))
    return await gw.register_local(name, prices=prices)


@pytest.fixture(params=KINDS)
async def kind(request: pytest.FixtureRequest, gw: Harness,
               caplog: pytest.LogCaptureFixture) -> AsyncIterator[str]:
    """The kind under test; afterwards, no upstream key in any log line."""
    with caplog.at_level(logging.DEBUG):
        yield request.param
    assert KEY_MARK not in caplog.text


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY_MARK not in text


def expected_cost(gw: Harness, kind: str, prompt: int, completion: int) -> Decimal:
    route = gw.table.routes(gw.endpoints[0].model)[0]
    if kind == "deployment":
        return Decimal("0.50") * completion / Decimal(repr(1000.0)) / 3600
    assert route.per_token
    return (Decimal("0.05") * prompt + Decimal("0.10") * completion) / Decimal(1_000_000)


async def test_non_stream(gw: Harness, kind: str) -> None:
    up = await add(gw, kind, "one", cheap=True)
    body = chat_body()
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert_no_key(r.text, str(r.headers))
    prompt, completion = count_chat_tokens(body["messages"]), count_text_tokens("".join(PIECES))
    assert r.json()["usage"]["completion_tokens"] == completion
    [rec] = gw.wallet.records
    assert rec.price == gw.price.charge(prompt, completion)  # the caller's price list
    assert rec.compute_cost == expected_cost(gw, kind, prompt, completion)
    assert rec.endpoint_id == r.headers["x-cambist-endpoint"]
    if kind == "external":
        assert up.authorizations == [f"Bearer {key_of('one')}"]
    else:
        assert up.authorizations == [None]


async def test_stream_with_include_usage(gw: Harness, kind: str) -> None:
    await add(gw, kind, "one")
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with gw.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        text = (await r.aread()).decode()
    assert_no_key(text, str(r.headers))
    payloads = [e.removeprefix("data: ") for e in text[:-2].split("\n\n")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    [usage] = [c["usage"] for c in chunks if not c["choices"]]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "".join(PIECES)
    [rec] = gw.wallet.records
    assert (rec.status, rec.stream, rec.completion_tokens) == (
        "ok", True, usage["completion_tokens"])


async def test_error_mapping(gw: Harness, kind: str) -> None:
    up = await add(gw, kind, "one")
    up.fail_status = 400
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 400 and r.json()["error"]["message"] == "boom"
    up.fail_status = 500
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 502
    err = r.json()["error"]
    assert (err["code"], err["type"]) == ("upstream_error", "server_error")
    assert_no_key(r.text, str(r.headers))
    assert gw.wallet.records == [] and gw.wallet.holds == {}
    assert len(gw.wallet.released) == 2


async def test_retry_before_first_byte(gw: Harness, kind: str) -> None:
    bad = await add(gw, kind, "bad", cheap=True)
    good = await add(gw, kind, "good")
    bad.fail_status = 503
    r = await gw.client.post("/v1/chat/completions", json=chat_body(stream=True))
    assert r.status_code == 200
    assert r.headers["x-cambist-attempts"] == "2"
    assert r.text.endswith("data: [DONE]\n\n")
    assert bad.received[0] == good.received[0]
    [rec] = gw.wallet.records
    assert rec.endpoint_id == r.headers["x-cambist-endpoint"] != gw.endpoints[0].id
    assert_no_key(r.text, str(r.headers), str(gw.events))


async def test_external_key_missing_or_refused(gw: Harness) -> None:
    """An external endpoint whose key variable is unset is skipped; one whose
    key the upstream refuses fails over (the caller's key was fine)."""
    await add(gw, "external", "nokey", cheap=True)
    gw.secrets.clear()
    gw.table.swap(gw.endpoints)
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_endpoint"
    refused = await add(gw, "external", "refused", cheap=True)
    refused.api_key = "sk-something-else"
    await add(gw, "deployment", "own")
    r = await gw.client.post("/v1/chat/completions",
                             json=chat_body(provider={"order": ["sup_refused"]}))
    assert r.status_code == 200
    assert r.headers["x-cambist-endpoint"] == "ep_own"
    assert [e["data"]["outcome"] for e in gw.events] == ["status_401", "ok"]
    assert_no_key(r.text, str(gw.events))
