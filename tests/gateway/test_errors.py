"""Every bad input gets an OpenAI-shaped 4xx/5xx with the right status, code and param."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cambist.gateway import GatewaySettings

from .conftest import MODEL, Harness, chat_body

MSG = [{"role": "user", "content": "hi"}]


def assert_error(r: httpx.Response, status: int, code: str | None, param: str | None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert (err["code"], err["param"]) == (code, param), err
    return err


async def test_missing_and_invalid_keys_are_401(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("a")
    async with gw.http_client() as anon:
        for headers in ({}, {"authorization": "Bearer sk-wrong"}, {"authorization": "Basic x"}):
            r = await anon.post("/v1/chat/completions", json=chat_body(), headers=headers)
            err = assert_error(r, 401, "invalid_api_key", None)
            assert err["type"] == "invalid_request_error"
        r = await anon.get("/v1/models")
        assert_error(r, 401, "invalid_api_key", None)


async def test_admin_key_without_tenant_is_403(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("a")
    admin, _ = gw.auth.issue(None, scope="admin")
    r = await gw.client.post("/v1/chat/completions", json=chat_body(),
                             headers={"authorization": f"Bearer {admin}"})
    err = assert_error(r, 403, "permission_denied", None)
    assert "tenant" in err["message"]


BAD_BODIES: list[tuple[str, Any, int, str, str | None]] = [
    ("chat", b"{not json", 400, "invalid_json", None),
    ("chat", b"[1, 2]", 400, "invalid_json", None),
    ("chat", {"messages": MSG}, 400, "invalid_request", "model"),
    ("chat", {"model": 7, "messages": MSG}, 400, "invalid_request", "model"),
    ("chat", {"model": "no-such-model", "messages": MSG}, 404, "model_not_found", "model"),
    ("chat", {"model": MODEL}, 400, "invalid_request", "messages"),
    ("chat", {"model": MODEL, "messages": []}, 400, "invalid_request", "messages"),
    ("chat", {"model": MODEL, "messages": "hi"}, 400, "invalid_request", "messages"),
    ("chat", {"model": MODEL, "messages": ["hi"]}, 400, "invalid_request", "messages[0]"),
    ("chat", {"model": MODEL, "messages": [{"content": "x"}]}, 400, "invalid_request",
     "messages[0].role"),
    ("chat", {"model": MODEL, "messages": [{"role": 1}]}, 400, "invalid_request",
     "messages[0].role"),
    ("chat", {"model": MODEL, "messages": [{"role": "assistant", "tool_calls": 3}]}, 400,
     "invalid_request", "messages[0].tool_calls"),
    ("chat", {"model": MODEL, "messages": MSG, "max_tokens": 0}, 400, "invalid_request",
     "max_tokens"),
    ("chat", {"model": MODEL, "messages": MSG, "max_tokens": "5"}, 400, "invalid_request",
     "max_tokens"),
    ("chat", {"model": MODEL, "messages": MSG, "max_tokens": 1.5}, 400, "invalid_request",
     "max_tokens"),
    ("chat", {"model": MODEL, "messages": MSG, "max_tokens": 200_000}, 400, "invalid_request",
     "max_tokens"),
    ("chat", {"model": MODEL, "messages": MSG, "max_tokens": 9000}, 400, "invalid_request",
     "max_tokens"),  # above the 8192 context length
    ("chat", {"model": MODEL, "messages": MSG, "max_completion_tokens": -1}, 400,
     "invalid_request", "max_completion_tokens"),
    ("chat", {"model": MODEL, "messages": MSG, "max_completion_tokens": 9000}, 400,
     "invalid_request", "max_completion_tokens"),
    ("chat", {"model": MODEL, "messages": MSG, "stream": "yes"}, 400, "invalid_request",
     "stream"),
    ("chat", {"model": MODEL, "messages": MSG, "temperature": "hot"}, 400, "invalid_request",
     "temperature"),
    ("chat", {"model": MODEL, "messages": MSG, "temperature": True}, 400, "invalid_request",
     "temperature"),
    ("chat", {"model": MODEL, "messages": MSG, "n": 1.0}, 400, "invalid_request", "n"),
    ("chat", {"model": MODEL, "messages": MSG, "n": 0}, 400, "invalid_request", "n"),
    ("chat", {"model": MODEL, "messages": MSG, "stream": True, "stream_options": 1}, 400,
     "invalid_request", "stream_options"),
    ("completions", {"model": MODEL}, 400, "invalid_request", "prompt"),
    ("completions", {"model": MODEL, "prompt": [1, "a"]}, 400, "invalid_request", "prompt"),
    ("completions", {"model": MODEL, "prompt": "x", "best_of": 0}, 400, "invalid_request",
     "best_of"),
    ("embeddings", {"model": MODEL}, 400, "invalid_request", "input"),
    ("embeddings", {"model": MODEL, "input": []}, 400, "invalid_request", "input"),
    ("embeddings", {"model": MODEL, "input": {"a": 1}}, 400, "invalid_request", "input"),
]
PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
        "embeddings": "/v1/embeddings"}


@pytest.mark.parametrize(("kind", "body", "status", "code", "param"), BAD_BODIES)
async def test_bad_bodies(
    gw_local: Harness, kind: str, body: Any, status: int, code: str, param: str | None
) -> None:
    gw = gw_local
    await gw.dead_upstream("a", context_length=8192)
    if isinstance(body, bytes):
        r = await gw.client.post(PATH[kind], content=body,
                                 headers={"content-type": "application/json"})
    else:
        r = await gw.client.post(PATH[kind], json=body)
    assert_error(r, status, code, param)
    assert r.headers["x-request-id"].startswith("req_")
    assert gw.events == []  # no upstream was tried
    assert gw.wallet.holds == {} and gw.wallet.records == []


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings(max_body_bytes=2048)


async def _post_in_pieces(gw: Harness, *message: bytes) -> Any:
    """POST a chat request whose one message is ``message``, sent as separate
    pieces without a content-length."""
    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"model": "' + MODEL.encode() + b'", "messages": ['
        for piece in message:
            yield piece
        yield b"]}"

    return await gw.client.post("/v1/chat/completions", content=pieces(),
                                headers={"content-type": "application/json"})


async def test_body_over_the_limit_is_413(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("a")
    big = chat_body(messages=[{"role": "user", "content": "x" * 4096}])
    r = await gw.client.post("/v1/chat/completions", json=big)
    assert_error(r, 413, "payload_too_large", None)

    # No content-length: the limit holds while streaming the body.
    r = await _post_in_pieces(gw, b'{"role": "user", "content": "', *[b"y" * 512] * 10, b'"}')
    assert_error(r, 413, "payload_too_large", None)


async def test_a_body_sent_in_pieces_is_read_whole(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("a")

    r = await _post_in_pieces(gw, b'{"role": "user", ', *[b" " * 100] * 3, b'"content": "hi"}')
    assert r.status_code >= 500  # parsed, then refused for want of an upstream (not 400/413)
    assert r.json()["error"]["code"] not in ("invalid_json", "payload_too_large")


async def test_known_model_without_healthy_endpoint_is_503(gw_local: Harness) -> None:
    gw = gw_local
    gw.prices.set("qwen2.5-7b", "0.05", "0.10")  # priced, no endpoint at all
    r = await gw.client.post("/v1/chat/completions",
                             json={"model": "qwen2.5-7b", "messages": MSG})
    assert_error(r, 503, "no_healthy_endpoint", None)
    await gw.dead_upstream("down", healthy=False)  # routed, but unhealthy
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    assert_error(r, 503, "no_healthy_endpoint", None)


async def test_routed_but_unpriced_model_is_503(gw: Harness) -> None:
    up = await gw.upstream("a", model="free-model")
    r = await gw.client.post("/v1/chat/completions",
                             json={"model": "free-model", "messages": MSG})
    err = assert_error(r, 503, "model_not_priced", None)
    assert "not priced" in err["message"]
    assert up.received == []


async def test_unknown_path_and_method_are_openai_shaped(gw_local: Harness) -> None:
    gw = gw_local
    r = await gw.client.get("/v1/nothing-here")
    assert_error(r, 404, "not_found", None)
    r = await gw.client.get("/v1/chat/completions")
    assert_error(r, 405, "http_405", None)


async def test_unexpected_exception_is_a_clean_500(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("a")

    def broken_authenticate(secret: str) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    gw.auth.authenticate = broken_authenticate  # type: ignore[method-assign]
    r = await gw.client.post("/v1/chat/completions", json=chat_body())
    err = assert_error(r, 500, "internal_error", None)
    assert "passwd" not in r.text and "Traceback" not in r.text
    assert err["type"] == "server_error"
