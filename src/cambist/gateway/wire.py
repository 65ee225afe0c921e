"""HTTP/1.1 to upstreams over asyncio protocols and httptools' parser.

Why not aiohttp's client (used here before): on the gateway's hot path it cost
about 0.1 ms of CPU per proxied request, a fifth of everything Cambist did for
a request (``bench/gateway``: URL objects, multidicts, payload registry,
timer and tracing layers per request). The gateway needs a narrow slice of
HTTP: one ``POST`` with a known-length body, a response read whole or as it
arrives, keep-alive reuse, TLS, and three timeouts. That slice is written here
over uvicorn's own parser (httptools, llhttp underneath), which also does the
chunked decoding; everything else about HTTP stays with the libraries.

A connection carries one request at a time. A response that is not read to
its end closes its connection (an abandoned stream must stop the upstream);
one read to the end goes back to the idle list if the server allows keep-alive.
A reused connection that the server had already closed fails before any
response byte arrives: the request is then sent once more on a new connection
(it never reached the application, so nothing runs twice that ran once).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Connection", "Origin", "Wire", "WireError"]

_HIGH_WATER = 1 << 20
"""Bytes buffered from the upstream before reading pauses (a slow client)."""


class WireError(ConnectionError):
    """The exchange with an upstream failed: ``reason`` is ``connect``,
    ``timeout`` or ``read``; ``fresh`` is true when no response byte came on a
    connection that had served requests before (safe to send again)."""

    def __init__(self, reason: str, fresh: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fresh = fresh

    def copy(self) -> WireError:
        """A new error saying the same (without this one's traceback)."""
        return WireError(self.reason, self.fresh)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL's requests go, and the request line's target."""

    scheme: str
    host: str
    port: int
    target: bytes
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        """Split an ``http(s)://host[:port]/path?query`` URL; ``ValueError`` otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = port == (443 if parts.scheme == "https" else 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        host_header = host if default else f"{host}:{port}"
        return cls(parts.scheme, parts.hostname, port, target.encode("ascii"),
                   host_header.encode("ascii"))

    @property
    def key(self) -> tuple[str, str, int]:
        """Connections are shared per (scheme, host, port)."""
        return (self.scheme, self.host, self.port)


_NO_CALLBACKS = object()
"""What a closed connection's parser reports to: nothing."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; its current response's state is kept inline
    (one request at a time), so a request allocates almost nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, str, int]) -> None:
        self._loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.served = 0
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._name = b""
        self._got_bytes = False
        self._head_done = False
        self.complete = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: WireError | None = None
        self._until_eof = False
        self._keep_alive = False

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(WireError("read"))
            self._close_transport()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # The parser calls back into this connection (a reference cycle): swap
        # it for one that calls nothing, so a closed connection is freed by
        # reference counting, not left to the collector (an upstream that
        # closes every connection would leave one such cycle per request).
        self._parser = httptools.HttpResponseParser(_NO_CALLBACKS)
        if self._head_done and self._until_eof and not self.complete:
            self.complete = True  # a body delimited by the connection's end
            self._wake()
        elif not self.complete:
            self._fail(WireError("read", fresh=self.served > 0 and not self._got_bytes))

    def pause_writing(self) -> None:  # requests are small: nothing to hold back
        pass

    # -- httptools callbacks ------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # an interim response: the real one follows
            self.headers = {}
            return
        self._head_done = True
        self._until_eof = ("content-length" not in self.headers
                           and "chunked" not in self.headers.get("transfer-encoding", "")
                           and self.status not in (204, 304))
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._head_done:
            # asked here: llhttp forgets the message's keep-alive flags after it
            self._keep_alive = self._parser.should_keep_alive()
            self.complete = True
            self._wake()

    # -- the request --------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: WireError) -> None:
        if self._error is None:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # Raised errors are copies: a raised error's traceback holds the
            # frames that hold this connection, so keeping the raised one in
            # _error would leave a reference cycle per failed exchange.
            waiter.set_exception(error.copy())

    def _close_transport(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _expire(self) -> None:
        self._fail(WireError("timeout"))

    async def _wait(self, timeout_s: float | None) -> None:
        if self._error is not None:
            raise self._error.copy()
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout_s, self._expire) if timeout_s else None
        try:
            await waiter
        finally:
            self._waiter = None
            # A raised error's traceback keeps this frame: it must not keep the
            # future holding that error too (a reference cycle).
            del waiter
            if timer is not None:
                timer.cancel()

    def send(self, head: bytes, payload: bytes) -> None:
        """Write one request (head and body in one write)."""
        assert self.transport is not None
        if self._paused:  # closed unread after a read that crossed the mark
            self.transport.resume_reading()
        self._reset()
        self.transport.write(head + payload)

    async def read_head(self, timeout_s: float | None) -> None:
        """Wait for the status line and headers (``timeout_s``: time to first byte)."""
        while not self._head_done:
            await self._wait(timeout_s)

    async def read_some(self, timeout_s: float | None) -> bytes:
        """The body bytes that arrived since the last call, waiting up to
        ``timeout_s`` for some; ``b""`` at the end of the body."""
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait(timeout_s)
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def read_all(self, timeout_s: float | None) -> bytes:
        """The rest of the body (``timeout_s`` between reads)."""
        parts = []
        while data := await self.read_some(timeout_s):
            parts.append(data)
        return b"".join(parts)

    @property
    def reusable(self) -> bool:
        """Read to the end, and the server keeps the connection open."""
        return (self.complete and not self.closed and self._error is None
                and not self._until_eof and self._keep_alive)


class Wire:
    """Keep-alive connections to every origin, ``limit`` open at most."""

    def __init__(self, limit: int = 1000, keepalive_s: float = 30.0) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[str, str, int], deque[Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self._open = 0
        self._slots: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None
        self.closed = False

    def origin(self, url: str) -> Origin:
        """``url`` parsed once and remembered (upstream URLs are few)."""
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) > 4096:
                self._origins.clear()
            origin = self._origins[url] = Origin.parse(url)
        return origin

    def _take_idle(self, key: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._keepalive_s:
                return conn
            self._drop(conn)
        return None

    async def _connect(self, origin: Origin, timeout_s: float) -> Connection:
        self._open += 1
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, origin.key), origin.host, origin.port,
                    ssl=tls, server_hostname=origin.host if tls else None)
        except BaseException as exc:
            self._open -= 1
            self._free_slot()
            if isinstance(exc, TimeoutError):
                raise WireError("timeout") from None
            if isinstance(exc, OSError | ssl.SSLError):
                raise WireError("connect") from None
            raise
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:  # the request goes out in one write: never wait on Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def _acquire(self, origin: Origin, connect_s: float) -> Connection:
        while True:
            conn = self._take_idle(origin.key)
            if conn is not None:
                return conn
            if self._open < self._limit:
                return await self._connect(origin, connect_s)
            if self._evict_idle():
                continue
            slot = asyncio.get_running_loop().create_future()
            self._slots.append(slot)
            try:
                await slot
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():
                    self._free_slot()  # pass the wake-up on
                raise

    def _evict_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                self._drop(idle.popleft())
                return True
        return False

    def _free_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def _drop(self, conn: Connection) -> None:
        conn._close_transport()
        self._open -= 1
        self._free_slot()

    async def post(self, url: str, payload: bytes, headers: Mapping[str, str], *,
                   connect_s: float, read_s: float) -> Connection:
        """Send ``payload`` and wait for the response head. The caller reads
        the body from the returned connection and must :meth:`release` it."""
        if self.closed:
            raise WireError("connect")
        origin = self.origin(url)
        lines = [b"POST ", origin.target, b" HTTP/1.1\r\nhost: ", origin.host_header,
                 b"\r\ncontent-length: ", str(len(payload)).encode("ascii"), b"\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"header {name!r} holds a line break")
            lines += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        for _ in range(2):
            conn = await self._acquire(origin, connect_s)
            conn.send(head, payload)
            try:
                await conn.read_head(read_s)
            except WireError as exc:
                self._drop(conn)
                if exc.fresh:
                    continue  # the server had closed the reused connection
                raise
            except BaseException:
                self._drop(conn)
                raise
            return conn
        raise WireError("read")

    def release(self, conn: Connection) -> None:
        """Keep ``conn`` for the next request if its response was read to the
        end and the server allows it; close it otherwise."""
        if conn.reusable and not self.closed:
            conn.served += 1
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.key, deque()).append(conn)
            self._free_slot()
        else:
            self._drop(conn)

    def close(self) -> None:
        """Close every idle connection; connections in use close on release."""
        self.closed = True
        for idle in self._idle.values():
            while idle:
                self._drop(idle.pop())


def decoder(encoding: str | None) -> zlib._Decompress | None:
    """A decompressor for a ``content-encoding`` (gzip or deflate), else None.
    Cambist asks for identity; some servers compress anyway."""
    if not encoding:
        return None
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None
