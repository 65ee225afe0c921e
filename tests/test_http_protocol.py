"""The head-holding transport under uvicorn's protocol: a response head goes
out in the same write as the body that follows, never later than the loop's
next turn, and never out of order; and the cheaper head check builds the
bytes uvicorn builds and refuses what uvicorn refuses."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from cambist.app.http_protocol import HeadHoldingProtocol, _Cycle, _HeadHold


class _Wire:
    """A transport that records each write (one write = one system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


def _hold() -> tuple[_HeadHold, _Wire]:
    wire = _Wire()
    return _HeadHold(wire, asyncio.get_running_loop()), wire


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_a_head_and_its_body_go_out_in_one_write() -> None:
    hold, wire = _hold()
    hold.write(HEAD)
    hold.write(b"ok")
    assert wire.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert wire.writes == [HEAD + b"ok"]  # nothing left to flush


async def test_a_head_alone_goes_out_on_the_next_turn() -> None:
    hold, wire = _hold()
    hold.write(HEAD)  # a response that sends its head, then waits for its upstream
    assert wire.writes == []
    await asyncio.sleep(0)
    assert wire.writes == [HEAD]
    hold.write(b"ok")
    assert wire.writes == [HEAD, b"ok"]


async def test_closing_sends_a_held_head_first() -> None:
    hold, wire = _hold()
    hold.write(HEAD)
    hold.close()
    assert wire.writes == [HEAD] and wire.closed


async def test_an_interim_response_keeps_its_place() -> None:
    hold, wire = _hold()
    hold.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    hold.write(HEAD)  # the final head follows the interim one in the same write
    hold.write(b"ok")
    assert b"".join(wire.writes) == b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"ok"
    assert wire.writes[0].startswith(b"HTTP/1.1 100 Continue")


async def test_body_chunks_pass_straight_through_and_the_rest_is_the_transport() -> None:
    hold, wire = _hold()
    hold.write(b"5\r\nhello\r\n")
    assert wire.writes == [b"5\r\nhello\r\n"]
    assert hold.get_extra_info("sockname") == ("127.0.0.1", 8080)
    assert not hold.is_closing()


# -- the response head: built as uvicorn builds it, refused where uvicorn refuses


class _Flow:
    write_paused = False


def _cycles(method: str = "POST", keep_alive: bool = True) -> list[RequestResponseCycle]:
    """uvicorn's cycle and ours, each on its own recording transport."""
    return [cls(scope={"method": method},  # type: ignore[typeddict-item]
                transport=_Wire(), flow=_Flow(),  # type: ignore[arg-type]
                logger=logging.getLogger("test"), access_logger=logging.getLogger("test"),
                access_log=False, default_headers=[(b"server", b"cambist")],
                message_event=asyncio.Event(), expect_100_continue=False,
                keep_alive=keep_alive, on_response=lambda: None)
            for cls in (RequestResponseCycle, _Cycle)]


HEADS = [
    (200, [(b"content-type", b"application/json"), (b"content-length", b"2"),
           (b"x-ratelimit-reset-requests", b"6m0s"), (b"X-Request-Id", b"req_1")]),
    (200, [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]),  # chunked
    (200, [(b"Transfer-Encoding", b"chunked")]),
    (200, [(b"connection", b"keep-alive, Close"), (b"content-length", b"0")]),
    (204, []),
    (304, [(b"etag", b"\"v1\"\ttab-is-allowed")]),
    (429, [(b"retry-after", b"1"), (b"content-length", b"5"), (b"content-length", b"9")]),
]


@pytest.mark.parametrize(("status", "headers"), HEADS)
@pytest.mark.parametrize(("method", "keep_alive"), [("POST", True), ("HEAD", True),
                                                     ("GET", False)])
async def test_a_response_head_is_what_uvicorn_writes(
        status: int, headers: list[tuple[bytes, bytes]], method: str, keep_alive: bool) -> None:
    theirs, ours = _cycles(method, keep_alive)
    for cycle in (theirs, ours):
        await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
    assert ours.transport.writes == theirs.transport.writes  # type: ignore[attr-defined]
    state = ("keep_alive", "chunked_encoding", "expected_content_length", "response_started")
    assert [getattr(ours, a) for a in state] == [getattr(theirs, a) for a in state]


@pytest.mark.parametrize(("name", "value"), [
    (b"x-bad name", b"v"), (b"x-bad:name", b"v"), (b"x-\x00", b"v"),
    (b"x-ok", b"line\r\nx-injected: 1"), (b"x-ok", b"nul\x00"), (b"x-ok", b"\x7f"),
])
async def test_a_bad_header_is_refused_as_uvicorn_refuses_it(name: bytes, value: bytes) -> None:
    for cycle in _cycles():
        with pytest.raises(RuntimeError, match="Invalid HTTP header"):
            await cycle.send({"type": "http.response.start", "status": 200,
                              "headers": [(b"content-length", b"0"), (name, value)]})
        assert cycle.transport.writes == []  # type: ignore[attr-defined]


async def test_the_gateway_protocol_gives_each_request_the_cheaper_cycle() -> None:
    """End to end: a real uvicorn server on loopback with HeadHoldingProtocol."""
    seen: list[type] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(type(send.__self__))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"X-Thing", b"1")]})
        await send({"type": "http.response.body", "body": b"hi"})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=HeadHoldingProtocol,
                            lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(2):  # two requests on one keep-alive connection
                r = await client.get(f"http://127.0.0.1:{port}/")
                assert (r.status_code, r.text, r.headers["x-thing"]) == (200, "hi", "1")
                assert r.headers["transfer-encoding"] == "chunked"
    finally:
        server.should_exit = True
        await task
    assert seen == [_Cycle, _Cycle]
