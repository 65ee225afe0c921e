"""Limits on what a client may send: header count and size (431), message
count (400), and a body that arrives too slowly (408), each in OpenAI's error
shape and never a 5xx."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from cambist.app.guard import MAX_HEADERS, header_guard
from cambist.domain.errors import InvalidRequest
from cambist.gateway.deps import GatewaySettings
from cambist.gateway.protocol import MAX_MESSAGES, parse_request
from tests.gateway.conftest import Harness


def _app() -> TestClient:
    async def ok(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/", ok)])
    return TestClient(header_guard(inner, max_bytes=1024, max_count=MAX_HEADERS))


def test_header_guard() -> None:
    with _app() as c:
        assert c.get("/").text == "ok"
        big = c.get("/", headers={"x-big": "a" * 2000})
        assert big.status_code == 431
        assert big.json()["error"]["code"] == "request_header_fields_too_large"
        many = c.get("/", headers={f"x-h{i}": "1" for i in range(MAX_HEADERS + 1)})
        assert many.status_code == 431


def test_message_count_limit() -> None:
    body = b'{"model": "m", "messages": [' + b",".join(
        [b'{"role": "user", "content": "x"}'] * (MAX_MESSAGES + 1)) + b"]}"
    with pytest.raises(InvalidRequest) as err:
        parse_request(body, "chat", max_tokens_cap=100)
    assert err.value.param == "messages" and str(MAX_MESSAGES) in err.value.message


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings(upstream_connect_timeout_s=2.0, upstream_read_timeout_s=5.0,
                           body_timeout_s=0.3)


async def test_slow_client_gets_408(gw: Harness) -> None:
    """A client that sends its headers and half its body, then stalls, is
    answered 408 once ``body_timeout_s`` passes, not held forever."""
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"model": "m", "messages": []}'
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + gw.secret.encode() + b"\r\n"
                 b"Content-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), timeout=5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head[:80]
    assert b"request_timeout" in head
