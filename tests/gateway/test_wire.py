"""The narrow HTTP/1.1 client (``gateway.wire``) and the pool over it, against
raw loopback servers written with ``asyncio.start_server`` so each test controls
the framing byte for byte: keep-alive, close, stale connections, chunked and
EOF-delimited bodies, gzip, timeouts, abandoned streams, the connection limit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import itertools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from cambist.gateway import wire as wire_module
from cambist.gateway.pool import TransportError, UpstreamPool, UpstreamResponse
from cambist.gateway.wire import Origin, Wire, WireError

PATH = "/v1/chat/completions"
FAST = {"connect_s": 2.0, "read_s": 2.0}


# -- a raw loopback upstream --------------------------------------------------


@dataclass
class Request:
    line: bytes
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[0] if found else None


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request off ``reader`` (``content-length`` framed); None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *rest = head[:-4].split(b"\r\n")
    headers = []
    for raw in rest:
        name, _, value = raw.partition(b":")
        headers.append((name.decode("latin-1").lower(), value.strip().decode("latin-1")))
    length = int(dict(headers).get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Request(line, headers, body)


Handler = Callable[["Upstream", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Upstream:
    """A server on a free loopback port running ``handler`` per connection,
    counting connections (accepted, open now, most open at once)."""

    handler: Handler
    accepted: int = 0
    open_now: int = 0
    peak: int = 0
    requests: list[Request] = field(default_factory=list)
    eof_at: list[float] = field(default_factory=list)
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, target: str = PATH) -> str:
        return f"http://127.0.0.1:{self.port}{target}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # stopped at teardown: end quietly
            pass
        finally:
            self.open_now -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def next_request(self, reader: asyncio.StreamReader) -> Request | None:
        request = await read_request(reader)
        if request is not None:
            self.requests.append(request)
        return request

    async def until_eof(self, reader: asyncio.StreamReader) -> None:
        """Wait for the client to close (the time noted in ``eof_at``)."""
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        self.eof_at.append(time.monotonic())


Serve = Callable[[Handler], Awaitable[Upstream]]


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Serve]:
    """Start upstreams on demand; stop them (and their handlers) on exit."""
    started: list[Upstream] = []

    async def start(handler: Handler) -> Upstream:
        upstream = Upstream(handler)
        upstream.server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        started.append(upstream)
        return upstream

    try:
        yield start
    finally:
        for upstream in started:
            assert upstream.server is not None
            upstream.server.close()
            for writer in upstream.writers:
                writer.close()
            for task in upstream.tasks:
                task.cancel()
            if upstream.tasks:
                await asyncio.wait(upstream.tasks, timeout=1.0)
            await upstream.server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with serving() as start:
        yield start


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream_pool = UpstreamPool()
    yield upstream_pool
    await upstream_pool.aclose()


def wire_of(pool: UpstreamPool) -> Wire:
    wire = pool._wire
    assert wire is not None
    return wire


def response(body: bytes = b"ok", *, status: str = "200 OK", extra: bytes = b"",
             version: bytes = b"HTTP/1.1") -> bytes:
    return (version + b" " + status.encode() + b"\r\ncontent-type: application/json\r\n"
            + b"content-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)


CHUNKED_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n")


def keep_alive(body: bytes = b"ok", delay_s: float = 0.0) -> Handler:
    """Answer every request on the connection with ``body``, keep-alive."""

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            if delay_s:
                await asyncio.sleep(delay_s)
            writer.write(response(body))
            await writer.drain()

    return handler


async def fetch(pool: UpstreamPool, url: str, payload: bytes = b"{}",
                **timeouts: float) -> tuple[int, bytes]:
    resp = await pool.post(url, payload, {}, **(timeouts or FAST))
    try:
        return resp.status, await resp.read()
    finally:
        resp.close()


async def all_events(resp: UpstreamResponse, idle_timeout_s: float | None = 2.0) -> list[bytes]:
    out: list[bytes] = []
    async for batch in resp.events(idle_timeout_s):
        out += batch
    return out


async def eventually(check: Callable[[], bool], within_s: float = 1.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- 1. keep-alive reuse ------------------------------------------------------


async def test_sequential_requests_share_one_keep_alive_connection(
        serve: Serve, pool: UpstreamPool) -> None:
    up = await serve(keep_alive(b'{"n":1}'))
    for _ in range(6):
        assert await fetch(pool, up.url()) == (200, b'{"n":1}')
    assert up.accepted == 1 and len(up.requests) == 6
    wire = wire_of(pool)
    assert wire._open == 1
    assert [len(q) for q in wire._idle.values()] == [1]


async def test_a_fully_read_response_goes_back_to_the_idle_list(
        serve: Serve, pool: UpstreamPool) -> None:
    up = await serve(keep_alive())
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    wire = wire_of(pool)
    assert not any(wire._idle.values())  # in use: not idle
    assert await resp.read() == b"ok"
    resp.close()
    resp.close()  # idempotent: released once
    (idle,) = wire._idle.values()
    assert len(idle) == 1 and wire._open == 1
    assert idle[0].served == 1


async def test_two_paths_on_one_origin_share_connections(
        serve: Serve, pool: UpstreamPool) -> None:
    up = await serve(keep_alive())
    await fetch(pool, up.url("/v1/completions"))
    await fetch(pool, up.url("/v1/embeddings?x=1"))
    assert up.accepted == 1
    assert [r.line for r in up.requests] == [b"POST /v1/completions HTTP/1.1",
                                             b"POST /v1/embeddings?x=1 HTTP/1.1"]


# -- 2. Connection: close / HTTP/1.0 -------------------------------------------


@pytest.mark.parametrize("answer", [
    response(b"ok", extra=b"connection: close\r\n"),
    response(b"ok", version=b"HTTP/1.0"),
], ids=["connection-close", "http-1.0"])
async def test_a_connection_the_server_will_close_is_not_reused(
        serve: Serve, pool: UpstreamPool, answer: bytes) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(answer)
        await up.until_eof(reader)  # leave closing to the client

    up = await serve(handler)
    for _ in range(3):
        assert await fetch(pool, up.url()) == (200, b"ok")
    assert up.accepted == 3
    await eventually(lambda: len(up.eof_at) == 3)  # each closed by the client
    wire = wire_of(pool)
    assert wire._open == 0 and not any(wire._idle.values())


async def test_http_1_0_keep_alive_is_honoured(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(response(b"ok", version=b"HTTP/1.0",
                                  extra=b"connection: keep-alive\r\n"))

    up = await serve(handler)
    for _ in range(3):
        assert await fetch(pool, up.url()) == (200, b"ok")
    assert up.accepted == 1


# -- 3. stale connections --------------------------------------------------------


async def test_a_reused_connection_closed_by_the_server_is_retried_once_on_a_new_one(
        serve: Serve, pool: UpstreamPool) -> None:
    """The server answers one request per connection, then reads the next and
    closes without a byte: that request goes out again on a new connection."""

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(response(b"first"))  # claims keep-alive
        await up.next_request(reader)  # then drops the next request on the floor

    up = await serve(handler)
    assert await fetch(pool, up.url(), b"a") == (200, b"first")
    assert await fetch(pool, up.url(), b"b") == (200, b"first")
    assert up.accepted == 2
    assert [r.body for r in up.requests] == [b"a", b"b", b"b"]  # b sent twice, answered once


@pytest.mark.parametrize("pause_s", [0.0, 0.05])
async def test_an_idle_connection_the_server_closed_is_not_used(
        serve: Serve, pool: UpstreamPool, pause_s: float) -> None:
    """The server closes right after answering (no ``connection: close``): with
    a pause the client has seen the FIN; without one it may not have yet."""

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(response(b"ok"))
        await writer.drain()

    up = await serve(handler)
    for _ in range(4):
        assert await fetch(pool, up.url()) == (200, b"ok")
        await asyncio.sleep(pause_s)
    assert up.accepted == 4 and len(up.requests) == 4


async def test_a_new_connection_closed_without_an_answer_is_a_read_error(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)  # and close

    up = await serve(handler)
    with pytest.raises(TransportError) as caught:
        await pool.post(up.url(), b"{}", {}, **FAST)
    assert caught.value.reason == "read"
    assert up.accepted == 1  # not retried: it may have run
    assert wire_of(pool)._open == 0

    wire = Wire()
    try:
        with pytest.raises(WireError) as raw:
            await wire.post(up.url(), b"{}", {}, **FAST)
        assert raw.value.reason == "read" and not raw.value.fresh
        assert up.accepted == 2 and wire._open == 0
    finally:
        wire.close()


def answer_first_request_only() -> Handler:
    """Answer the first request on the first connection; drop every other."""
    answer = {"n": 0}

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        if answer["n"] == 0:
            answer["n"] += 1
            writer.write(response(b"ok"))
            await up.next_request(reader)  # the reuse: dropped

    return handler


async def test_a_stale_connection_is_retried_only_once(
        serve: Serve, pool: UpstreamPool) -> None:
    """Only the first request on a connection is ever answered: the retry, on a
    new connection, is answered; a server that drops even that is an error."""
    up = await serve(answer_first_request_only())
    assert await fetch(pool, up.url()) == (200, b"ok")
    with pytest.raises(TransportError) as caught:
        await pool.post(up.url(), b"{}", {}, **FAST)
    assert caught.value.reason == "read"
    assert up.accepted == 2 and len(up.requests) == 3  # sent twice, no more
    assert wire_of(pool)._open == 0


async def test_failed_exchanges_leave_no_cycles(serve: Serve, pool: UpstreamPool) -> None:
    """A connection that failed is freed as soon as nothing refers to it: the
    errors raised are copies (a raised error's traceback holds the frames that
    hold the connection) and a closed connection's parser calls nothing."""
    up = await serve(answer_first_request_only())
    assert await fetch(pool, up.url()) == (200, b"ok")
    gc.collect()
    gc.disable()  # what is freed now is freed by reference counting alone
    try:
        try:
            await pool.post(up.url(), b"{}", {}, **FAST)
        except TransportError as exc:
            assert exc.reason == "read"
        else:
            raise AssertionError("the dropped request should fail")
        for _ in range(3):
            await asyncio.sleep(0)  # the loop's callbacks of the failure have run
        closed = [o for o in gc.get_objects()
                  if isinstance(o, wire_module.Connection) and o.closed]
        assert closed == []
    finally:
        gc.enable()


async def test_a_connection_reset_mid_body_is_a_read_error(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        await asyncio.sleep(0.02)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    with pytest.raises(TransportError) as caught:
        await resp.read()
    assert caught.value.reason == "read"
    resp.close()
    assert wire_of(pool)._open == 0


async def test_a_chunked_stream_cut_short_is_a_read_error(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(CHUNKED_HEAD + chunked(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(0.02)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    seen: list[bytes] = []
    with pytest.raises(TransportError) as caught:
        async for batch in resp.events(2.0):
            seen += batch
    assert caught.value.reason == "read" and seen == [b"data: 1"]
    resp.close()


async def test_a_garbled_response_is_a_read_error(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await up.until_eof(reader)

    up = await serve(handler)
    with pytest.raises(TransportError) as caught:
        await pool.post(up.url(), b"{}", {}, **FAST)
    assert caught.value.reason == "read"
    await eventually(lambda: len(up.eof_at) == 1)


# -- 4. chunked bodies and SSE ---------------------------------------------------


SSE_CRLF = (b"event: a\r\ndata: {\"i\":1}\r\n\r\n"
            b": keep-alive\r\n\r\n"
            b"data: {\"i\":2}\r\ndata: more\r\n\r\n"
            b"data: [DONE]\r\n\r\n")
SSE_EVENTS = [b"event: a\ndata: {\"i\":1}", b": keep-alive",
              b"data: {\"i\":2}\ndata: more", b"data: [DONE]"]


def cut(data: bytes, *at: int) -> list[bytes]:
    bounds = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def streaming(pieces: list[bytes], writes: list[int] | None = None,
              pause_s: float = 0.01) -> Handler:
    """A chunked response of ``pieces`` (one chunk each), its bytes sent in
    separate TCP writes cut at ``writes`` offsets with pauses between."""

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            wire_bytes = CHUNKED_HEAD + chunked(*pieces) + b"0\r\n\r\n"
            for part in cut(wire_bytes, *sorted(writes or [])):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(pause_s)

    return handler


async def test_a_chunked_body_is_read_whole_and_the_connection_kept(
        serve: Serve, pool: UpstreamPool) -> None:
    pieces = cut(SSE_CRLF, 5, 30, 31, 60)
    up = await serve(streaming(pieces, writes=[10, len(CHUNKED_HEAD) + 3, 90]))
    for _ in range(2):
        assert await fetch(pool, up.url()) == (200, SSE_CRLF)
    assert up.accepted == 1


@pytest.mark.parametrize("chunk_cuts,write_cuts", [
    ([], []),  # one chunk, one write
    ([1, 2, 3, 19, 20, 21, 22, 37, 38], []),  # many chunks, one write
    ([7, 20, 21], [len(CHUNKED_HEAD) + 2, len(CHUNKED_HEAD) + 8, 60, 61, 80]),
    (list(range(1, len(SSE_CRLF))), list(range(len(CHUNKED_HEAD), 400, 7))),  # byte by byte
], ids=["whole", "chunks", "chunks-and-writes", "bytewise"])
async def test_sse_events_survive_any_split(
        serve: Serve, pool: UpstreamPool, chunk_cuts: list[int], write_cuts: list[int]) -> None:
    up = await serve(streaming(cut(SSE_CRLF, *chunk_cuts), writes=write_cuts, pause_s=0.002))
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    try:
        assert resp.headers["content-type"] == "text/event-stream"
        assert await all_events(resp) == SSE_EVENTS
    finally:
        resp.close()
    assert any(wire_of(pool)._idle.values())  # read to its end: kept


async def test_events_arrive_as_they_are_sent(serve: Serve, pool: UpstreamPool) -> None:
    go = asyncio.Event()

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(CHUNKED_HEAD + chunked(b"data: 1\n\ndata: 2\n\n"))
        await go.wait()
        writer.write(chunked(b"data: 3\n\n") + b"0\r\n\r\n")
        await up.until_eof(reader)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    stream = resp.events(2.0)
    assert await anext(stream) == [b"data: 1", b"data: 2"]  # one read, one batch
    go.set()
    assert await anext(stream) == [b"data: 3"]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    resp.close()


async def test_a_final_event_without_its_blank_line_is_yielded(
        serve: Serve, pool: UpstreamPool) -> None:
    up = await serve(streaming([b"data: 1\r\n\r\ndata: last\r\n"]))
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    assert await all_events(resp) == [b"data: 1", b"data: last"]
    resp.close()


# -- 5. a body delimited by the connection's end ---------------------------------------


async def test_a_body_ended_by_close_is_read_whole(serve: Serve, pool: UpstreamPool) -> None:
    body = b"x" * 70_000 + b"end"

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
        for part in cut(body, 10, 40_000):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    up = await serve(handler)
    for n in range(2):
        assert await fetch(pool, up.url()) == (200, body)
        assert up.accepted == n + 1  # never reused
    assert wire_of(pool)._open == 0


async def test_sse_ended_by_close_yields_every_event(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        for part in cut(SSE_CRLF, 3, 27, 28, 50):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.005)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    assert await all_events(resp) == SSE_EVENTS
    resp.close()
    assert wire_of(pool)._open == 0


# -- 6. gzip ---------------------------------------------------------------------------


async def test_a_gzip_body_is_decompressed(serve: Serve, pool: UpstreamPool) -> None:
    body = b'{"choices":[' + b'{"text":"abc"},' * 500 + b"{}]}"

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(response(gzip.compress(body), extra=b"content-encoding: gzip\r\n"))

    up = await serve(handler)
    assert await fetch(pool, up.url()) == (200, body)
    assert await fetch(pool, up.url()) == (200, body)
    assert up.accepted == 1


async def test_a_gzip_event_stream_is_decompressed_as_it_arrives(
        serve: Serve, pool: UpstreamPool) -> None:
    packed = gzip.compress(SSE_CRLF)

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in cut(packed, 5, 11, 12, 30, len(packed) - 4):
            writer.write(chunked(part))
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.write(b"0\r\n\r\n")
        await up.until_eof(reader)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    assert await all_events(resp) == SSE_EVENTS
    resp.close()


async def test_a_corrupt_gzip_body_is_a_read_error(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(response(b"not gzip", extra=b"content-encoding: gzip\r\n"))

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    with pytest.raises(TransportError) as caught:
        await resp.read()
    assert caught.value.reason == "read"
    resp.close()
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    with pytest.raises(TransportError):
        await all_events(resp)
    resp.close()


# -- 7. timeouts and refusal ---------------------------------------------------------


async def test_no_answer_within_read_s_is_a_timeout(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        await up.until_eof(reader)  # never answers

    up = await serve(handler)
    start = time.monotonic()
    with pytest.raises(TransportError) as caught:
        await pool.post(up.url(), b"{}", {}, connect_s=1.0, read_s=0.3)
    elapsed = time.monotonic() - start
    assert caught.value.reason == "timeout"
    assert 0.25 <= elapsed < 1.0
    await eventually(lambda: len(up.eof_at) == 1)  # the connection was closed
    assert wire_of(pool)._open == 0


async def test_a_head_trickling_in_past_read_s_is_a_timeout(
        serve: Serve, pool: UpstreamPool) -> None:
    """``read_s`` bounds the wait for the whole head, not each byte of it."""

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        for byte in b"HTTP/1.1 200 OK\r\nx-slow: yes yes yes yes\r\n":
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    up = await serve(handler)
    start = time.monotonic()
    with pytest.raises(TransportError) as caught:
        await pool.post(up.url(), b"{}", {}, connect_s=1.0, read_s=0.3)
    assert caught.value.reason == "timeout" and time.monotonic() - start < 0.8


async def test_a_body_stalling_past_read_s_is_a_timeout(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await up.until_eof(reader)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, connect_s=1.0, read_s=0.2)
    start = time.monotonic()
    with pytest.raises(TransportError) as caught:
        await resp.read()
    assert caught.value.reason == "timeout" and time.monotonic() - start < 0.8
    resp.close()
    await eventually(lambda: len(up.eof_at) == 1)


async def test_a_silent_stream_times_out_after_idle_timeout(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(CHUNKED_HEAD + chunked(b"data: 1\r\n\r\n"))
        await up.until_eof(reader)  # then silence

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    seen: list[bytes] = []
    start = time.monotonic()
    with pytest.raises(TransportError) as caught:
        async for batch in resp.events(idle_timeout_s=0.2):
            seen += batch
    elapsed = time.monotonic() - start
    assert caught.value.reason == "timeout" and seen == [b"data: 1"]
    assert 0.15 <= elapsed < 0.8
    resp.close()
    await eventually(lambda: len(up.eof_at) == 1)


async def test_a_stream_longer_than_the_idle_timeout_lives_while_bytes_flow(
        serve: Serve, pool: UpstreamPool) -> None:
    """The idle timeout is per gap, not per stream: chunks every 0.05 s for
    ~0.6 s pass a 0.2 s idle timeout; a 0.5 s gap after them does not."""
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(CHUNKED_HEAD)
        for i in range(12):
            writer.write(chunked(f"data: {i}\r\n\r\n".encode()))
            await writer.drain()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        writer.write(chunked(b"data: late\r\n\r\n"))
        await up.until_eof(reader)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    seen: list[bytes] = []
    with pytest.raises(TransportError) as caught:
        async for batch in resp.events(idle_timeout_s=0.2):
            seen += batch
    assert caught.value.reason == "timeout"
    assert seen == [f"data: {i}".encode() for i in range(12)]
    resp.close()


async def test_a_refused_connection_is_a_connect_error(pool: UpstreamPool) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TransportError) as caught:
        await pool.post(f"http://127.0.0.1:{port}/v1/x", b"{}", {}, **FAST)
    assert caught.value.reason == "connect"
    assert wire_of(pool)._open == 0


async def test_a_closed_wire_refuses_requests() -> None:
    wire = Wire()
    wire.close()
    with pytest.raises(WireError) as caught:
        await wire.post("http://127.0.0.1:9/x", b"", {}, **FAST)
    assert caught.value.reason == "connect"


# -- 8. abandoned streams ------------------------------------------------------------


async def test_an_abandoned_stream_closes_its_connection(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(CHUNKED_HEAD + chunked(b"data: 1\n\n"))
        await up.until_eof(reader)  # more would follow: the client leaves first

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    stream = resp.events(2.0)
    assert await anext(stream) == [b"data: 1"]
    await stream.aclose()
    closed_at = time.monotonic()
    resp.close()
    await eventually(lambda: len(up.eof_at) == 1, within_s=0.5)
    assert up.eof_at[0] - closed_at < 0.5
    wire = wire_of(pool)
    assert wire._open == 0 and not any(wire._idle.values())
    # the next request opens a new connection
    up.handler = keep_alive()
    assert await fetch(pool, up.url()) == (200, b"ok")
    assert up.accepted == 2


async def test_a_response_closed_unread_after_it_fully_arrived_is_reused_cleanly(
        serve: Serve, pool: UpstreamPool) -> None:
    """A body that had fully arrived needs nothing stopped: the connection may
    be kept, but none of the unread bytes may leak into the next response."""
    answers = iter([b"a" * 100_000, b"second"])

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(response(next(answers)))

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    await eventually(lambda: resp._conn.complete)
    resp.close()
    assert await fetch(pool, up.url()) == (200, b"second")
    assert wire_of(pool)._open == 1


async def test_a_response_closed_before_its_body_arrived_closes_its_connection(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await up.until_eof(reader)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    resp.close()
    await eventually(lambda: len(up.eof_at) == 1, within_s=0.5)
    assert wire_of(pool)._open == 0


async def test_a_connection_paused_at_the_high_water_mark_is_not_reused_paused(
        serve: Serve, pool: UpstreamPool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire_module, "_HIGH_WATER", 16)  # one small read crosses it
    up = await serve(keep_alive(b"x" * 64))
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    await eventually(lambda: resp._conn.complete)
    assert resp._conn._paused  # the state under test: complete, reading paused
    resp.close()  # unread (e.g. the client went away)
    assert await fetch(pool, up.url(), connect_s=1.0, read_s=0.3) == (200, b"x" * 64)


async def test_closing_the_pool_closes_idle_connections(serve: Serve) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(response())
        up.eof_at.append(time.monotonic())

    up = await serve(handler)
    pool = UpstreamPool()
    assert await fetch(pool, up.url()) == (200, b"ok")
    await pool.aclose()
    await eventually(lambda: len(up.eof_at) == 1, within_s=0.5)
    assert await fetch(pool, up.url()) == (200, b"ok")  # a new wire after aclose
    assert up.accepted == 2
    await pool.aclose()


# -- 9. request framing -------------------------------------------------------------


async def test_the_request_is_framed_exactly(serve: Serve, pool: UpstreamPool) -> None:
    up = await serve(keep_alive())
    payload = '{"model":"m","messages":[{"content":"héllo\\r\\n"}]}'.encode()
    headers = {"authorization": "Bearer sk-1", "content-type": "application/json",
               "X-Request-Id": "req_1", "accept-encoding": "identity"}
    resp = await pool.post(up.url(PATH + "?api-version=2024-02-01&x=%20"), payload, headers,
                           **FAST)
    assert await resp.read() == b"ok"
    resp.close()
    (req,) = up.requests
    assert req.line == b"POST " + PATH.encode() + b"?api-version=2024-02-01&x=%20 HTTP/1.1"
    assert req.headers[:2] == [("host", f"127.0.0.1:{up.port}"),
                               ("content-length", str(len(payload)))]
    assert req.headers[2:] == [(k.lower(), v) for k, v in headers.items()]
    assert req.body == payload


async def test_an_empty_body_and_a_root_target(serve: Serve, pool: UpstreamPool) -> None:
    up = await serve(keep_alive())
    resp = await pool.post(f"http://127.0.0.1:{up.port}", b"", {}, **FAST)
    await resp.read()
    resp.close()
    (req,) = up.requests
    assert req.line == b"POST / HTTP/1.1" and req.header("content-length") == "0"
    assert req.body == b""


@pytest.mark.parametrize("value", ["a\r\nx-injected: 1", "a\nb", "a\rb"])
async def test_a_header_value_with_a_line_break_is_refused_before_sending(
        serve: Serve, pool: UpstreamPool, value: str) -> None:
    up = await serve(keep_alive())
    with pytest.raises(ValueError, match="line break"):
        await pool.post(up.url(), b"{}", {"x-ok": "1", "x-bad": value}, **FAST)
    await asyncio.sleep(0.02)
    assert up.accepted == 0 and up.requests == []
    assert await fetch(pool, up.url()) == (200, b"ok")  # the pool is unharmed
    assert up.requests[0].header("x-injected") is None


def test_origins_parse_targets_and_host_headers() -> None:
    plain = Origin.parse("http://up.example/v1/chat?x=1")
    assert (plain.scheme, plain.host, plain.port) == ("http", "up.example", 80)
    assert plain.target == b"/v1/chat?x=1" and plain.host_header == b"up.example"
    tls = Origin.parse("https://up.example:443")
    assert tls.port == 443 and tls.target == b"/" and tls.host_header == b"up.example"
    other = Origin.parse("https://up.example:8443/v1")
    assert other.host_header == b"up.example:8443" and other.key == ("https", "up.example", 8443)
    six = Origin.parse("http://[::1]:8000/v1")
    assert six.host == "::1" and six.host_header == b"[::1]:8000"
    for bad in ("ftp://x/y", "/v1/chat", "http:///nohost"):
        with pytest.raises(ValueError):
            Origin.parse(bad)


# -- 10. the connection limit ----------------------------------------------------------


async def test_the_limit_holds_with_connections_the_server_closes(serve: Serve) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        await asyncio.sleep(0.1)
        writer.write(response(b"ok", extra=b"connection: close\r\n"))
        await writer.drain()

    up = await serve(handler)
    pool = UpstreamPool(limit=2)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(fetch(pool, up.url()) for _ in range(4))), 3.0)
        assert results == [(200, b"ok")] * 4
        assert up.accepted == 4 and up.peak <= 2
    finally:
        await pool.aclose()


async def test_the_limit_holds_with_keep_alive_connections(serve: Serve) -> None:
    up = await serve(keep_alive(delay_s=0.1))
    pool = UpstreamPool(limit=2)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(fetch(pool, up.url()) for _ in range(4))), 1.5)
        assert results == [(200, b"ok")] * 4
        assert up.peak <= 2 and up.accepted <= 2
    finally:
        await pool.aclose()


# -- 11. 204, 304, interim responses, headers ----------------------------------------------


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
async def test_bodyless_statuses_complete_and_keep_the_connection(
        serve: Serve, pool: UpstreamPool, status: str) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 " + status.encode() + b"\r\nx-a: 1\r\n\r\n")

    up = await serve(handler)
    code = int(status[:3])
    for _ in range(2):
        assert await fetch(pool, up.url()) == (code, b"")
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    assert await all_events(resp) == []
    resp.close()
    assert up.accepted == 1


async def test_interim_responses_are_skipped(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n"
                         b"HTTP/1.1 201 Created\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"content-length: 4\r\nx-real: yes\r\n\r\ndone")

    up = await serve(handler)
    for _ in range(2):
        resp = await pool.post(up.url(), b"{}", {}, **FAST)
        assert resp.status == 201
        assert resp.headers.get("x-real") == "yes" and "link" not in resp.headers
        assert await resp.read() == b"done"
        resp.close()
    assert up.accepted == 1


async def test_error_statuses_and_repeated_headers(serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            writer.write(response(b'{"error":"busy"}', status="503 Service Unavailable",
                                  extra=b"X-Tag: a\r\nx-tag: b\r\nRetry-After: 3\r\n"))

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    assert resp.status == 503
    assert resp.headers["x-tag"] == "a, b" and resp.headers["retry-after"] == "3"
    assert await resp.read() == b'{"error":"busy"}'
    resp.close()
    assert await fetch(pool, up.url()) == (503, b'{"error":"busy"}')
    assert up.accepted == 1


# -- 12. large bodies (reading pauses past the high-water mark) -----------------------------


BIG = bytes(range(256)) * (5 * 4096)  # 5 MiB


def big_answer(framing: str) -> Handler:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await up.next_request(reader) is not None:
            if framing == "chunked":
                writer.write(CHUNKED_HEAD)
                for part in range(0, len(BIG), 256 * 1024):
                    writer.write(chunked(BIG[part:part + 256 * 1024]))
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(response(BIG))
            await writer.drain()

    return handler


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_large_body_is_read_whole(
        serve: Serve, pool: UpstreamPool, framing: str) -> None:
    up = await serve(big_answer(framing))
    resp = await pool.post(up.url(), b"{}", {}, connect_s=2.0, read_s=0.5)
    body = await resp.read()
    resp.close()
    assert body == BIG


async def test_a_large_body_streams_through_read_some(
        serve: Serve, pool: UpstreamPool) -> None:
    """Read piecewise (as the relay does), reading pauses and resumes; the
    buffer never holds much past the high-water mark."""
    up = await serve(big_answer("content-length"))
    for _ in range(2):
        resp = await pool.post(up.url(), b"{}", {}, **FAST)
        conn = resp._conn
        parts: list[bytes] = []
        while True:
            await asyncio.sleep(0.002)  # a slow reader: let the buffer fill
            part = await conn.read_some(2.0)
            if not part:
                break
            assert len(part) <= (1 << 20) + 300_000
            parts.append(part)
        resp.close()
        assert b"".join(parts) == BIG and len(parts) > 2
    assert up.accepted == 1  # read to the end: kept alive through the pauses


async def test_a_large_event_stream(serve: Serve, pool: UpstreamPool) -> None:
    event = b"data: " + b"x" * 4000 + b"\r\n\r\n"
    count = 1500  # ~6 MB

    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        writer.write(CHUNKED_HEAD)
        for _ in range(count // 100):
            writer.write(chunked(event * 100))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await up.until_eof(reader)

    up = await serve(handler)
    resp = await pool.post(up.url(), b"{}", {}, **FAST)
    events = await all_events(resp)
    resp.close()
    assert len(events) == count and events[0] == event.rstrip(b"\r\n")


# -- cancellation -----------------------------------------------------------------------


async def test_a_request_cancelled_while_waiting_for_the_head_closes_its_connection(
        serve: Serve, pool: UpstreamPool) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await up.next_request(reader)
        await up.until_eof(reader)  # never answers

    up = await serve(handler)
    task = asyncio.create_task(pool.post(up.url(), b"{}", {}, **FAST))
    await eventually(lambda: len(up.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: len(up.eof_at) == 1, within_s=0.5)
    assert wire_of(pool)._open == 0


# -- the same exchanges on uvloop (the gateway's loop in production) ------------------------


UVLOOP_CASES: dict[str, Callable[[Serve, UpstreamPool], Awaitable[None]]] = {
    "keep-alive": test_sequential_requests_share_one_keep_alive_connection,
    "idle-list": test_a_fully_read_response_goes_back_to_the_idle_list,
    "stale-retry": test_a_reused_connection_closed_by_the_server_is_retried_once_on_a_new_one,
    "stale-once": test_a_stale_connection_is_retried_only_once,
    "idle-closed": lambda serve, pool: test_an_idle_connection_the_server_closed_is_not_used(
        serve, pool, 0.0),
    "new-closed": test_a_new_connection_closed_without_an_answer_is_a_read_error,
    "reset-mid-body": test_a_connection_reset_mid_body_is_a_read_error,
    "chunked": test_a_chunked_body_is_read_whole_and_the_connection_kept,
    "sse-bytewise": lambda serve, pool: test_sse_events_survive_any_split(
        serve, pool, list(range(1, len(SSE_CRLF))), list(range(len(CHUNKED_HEAD), 400, 7))),
    "eof-body": test_a_body_ended_by_close_is_read_whole,
    "gzip-sse": test_a_gzip_event_stream_is_decompressed_as_it_arrives,
    "read-timeout": test_no_answer_within_read_s_is_a_timeout,
    "idle-timeout": test_a_silent_stream_times_out_after_idle_timeout,
    "abandoned": test_an_abandoned_stream_closes_its_connection,
    "framing": test_the_request_is_framed_exactly,
    "interim": test_interim_responses_are_skipped,
    "big-piecewise": test_a_large_body_streams_through_read_some,
    "cancelled": test_a_request_cancelled_while_waiting_for_the_head_closes_its_connection,
}


@pytest.mark.parametrize("name", list(UVLOOP_CASES))
def test_on_uvloop(name: str) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        pool = UpstreamPool()
        try:
            async with serving() as serve:
                await UVLOOP_CASES[name](serve, pool)
        finally:
            await pool.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
