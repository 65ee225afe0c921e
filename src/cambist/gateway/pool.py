"""The upstream connection pool: keep-alive HTTP/1.1 per process and event loop.

Why not httpx or aiohttp here: measured with ``bench/gateway/run.sh``, httpx
cost the gateway about 1.2 ms of CPU per proxied request (most of it in
httpcore's pool scanning every connection for expiry on each request), the
aiohttp client about 0.1 ms, and the narrow client in :mod:`cambist.gateway.wire`
(asyncio protocols and httptools) a fraction of that. httpx stays for
everything off the hot path (probes, health checks, the CLI).

Transport failures leave this module as :class:`TransportError` with a
``reason`` (``connect``, ``timeout``, ``read``). Connections belong to the
event loop that opened them; :meth:`UpstreamPool.aclose` closes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from cambist.gateway.wire import Connection, Wire, WireError, decoder

__all__ = ["TransportError", "UpstreamPool", "UpstreamResponse"]


class TransportError(ConnectionError):
    """An upstream could not be reached or stopped answering: ``reason`` is
    ``connect``, ``timeout`` or ``read``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamResponse:
    """A started upstream response: status and headers read, body not yet."""

    __slots__ = ("_conn", "_read_s", "_released", "_wire", "headers", "status")

    def __init__(self, wire: Wire, conn: Connection, read_s: float) -> None:
        self._wire = wire
        self._conn = conn
        self._read_s = read_s
        self._released = False
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self) -> bytes:
        """The whole body (decompressed); ``TransportError`` if it breaks."""
        try:
            body = await self._conn.read_all(self._read_s)
        except WireError as exc:
            raise TransportError(exc.reason) from None
        unzip = decoder(self.headers.get("content-encoding"))
        if unzip is not None:
            try:
                body = unzip.decompress(body) + unzip.flush()
            except Exception:
                raise TransportError("read") from None
        return body

    async def events(self, idle_timeout_s: float | None = None
                     ) -> AsyncIterator[list[bytes]]:
        """Server-sent events as they arrive, in batches: the complete events
        each network read brought (forwarded together, so a burst costs one
        write, while nothing waits for more). Each event is without its
        blank-line terminator, with ``\n`` line ends (see :func:`split_events`).
        Raises ``TransportError`` if the stream breaks or, with
        ``idle_timeout_s``, goes that long without a byte."""
        conn = self._conn
        unzip = decoder(self.headers.get("content-encoding"))
        buf = b""
        while True:
            try:
                chunk = await conn.read_some(idle_timeout_s)
                if unzip is not None:
                    chunk = unzip.decompress(chunk) if chunk else unzip.flush()
            except WireError as exc:
                raise TransportError(exc.reason) from None
            except Exception:  # a corrupt compressed stream
                raise TransportError("read") from None
            if not chunk:
                if conn.complete:
                    break
                continue
            events, buf = split_events(buf + chunk if buf else chunk)
            if events:
                yield events
        tail = buf.strip(b"\r\n")
        if tail:
            yield [tail.replace(b"\r\n", b"\n").replace(b"\r", b"\n")]

    def close(self) -> None:
        """Give the connection back: kept alive when the body was read to the
        end, closed otherwise (so an abandoned stream stops the upstream)."""
        if not self._released:
            self._released = True
            self._wire.release(self._conn)


def split_events(buf: bytes) -> tuple[list[bytes], bytes]:
    """Split complete SSE events off ``buf``: (events, rest). Line ends are
    normalised to ``\\n`` (``\\r\\n`` and lone ``\\r`` too); empty events
    (extra blank lines) are dropped; a trailing ``\\r`` stays in ``rest``
    in case its ``\\n`` is in the next chunk."""
    if b"\r" in buf:
        keep_cr = buf.endswith(b"\r")
        body = buf[:-1] if keep_cr else buf
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        parts = body.split(b"\n\n")
        rest = parts.pop() + (b"\r" if keep_cr else b"")
    else:
        parts = buf.split(b"\n\n")
        rest = parts.pop()
    return [q for p in parts if (q := p.strip(b"\n"))], rest


class UpstreamPool:
    """Keep-alive connections to every upstream (``limit`` open at most)."""

    def __init__(self, limit: int = 1000, keepalive_s: float = 30.0) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._wire: Wire | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> Wire:
        loop = asyncio.get_running_loop()
        wire = self._wire
        if wire is None or self._loop is not loop or wire.closed:
            wire = self._wire = Wire(self._limit, self._keepalive_s)
            self._loop = loop
        return wire

    async def post(self, url: str, payload: bytes, headers: Mapping[str, str], *,
                   connect_s: float, read_s: float) -> UpstreamResponse:
        """Send ``payload`` and wait for the status line and headers; raises
        ``TransportError``. The caller must :meth:`UpstreamResponse.close` it."""
        wire = self._open()
        try:
            conn = await wire.post(url, payload, headers, connect_s=connect_s, read_s=read_s)
        except WireError as exc:
            raise TransportError(exc.reason) from None
        return UpstreamResponse(wire, conn, read_s)

    async def aclose(self) -> None:
        """Close every idle connection (idempotent); those in use close when
        their responses are closed."""
        wire, self._wire = self._wire, None
        if wire is not None and self._loop is asyncio.get_running_loop():
            wire.close()
