"""The upstream connection pool: one aiohttp session per process and event loop.

Why aiohttp and not httpx here: measured with ``bench/gateway/run.sh``, httpx
cost the gateway about 1.2 ms of CPU per proxied request (most of it in
httpcore's pool scanning every connection for expiry on each request), the
whole aiohttp client about 0.1 ms. httpx stays for everything off the hot path
(probes, health checks, the CLI).

Transport failures leave this module as :class:`TransportError` with a
``reason`` (``connect``, ``timeout``, ``read``); aiohttp's exceptions are
translated here and nowhere else. The session is opened lazily inside the
running loop and closed by :meth:`UpstreamPool.aclose`, or, failing that, when
its loop shuts down (``asyncio.run`` cancels the keeper task that owns it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import aiohttp

__all__ = ["TransportError", "UpstreamPool", "UpstreamResponse"]


class TransportError(ConnectionError):
    """An upstream could not be reached or stopped answering: ``reason`` is
    ``connect``, ``timeout`` or ``read``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass the built-in
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    return "read"


_FAILURES = (aiohttp.ClientError, TimeoutError, OSError)


class UpstreamResponse:
    """A started upstream response: status and headers read, body not yet."""

    __slots__ = ("_raw", "headers", "status")

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw
        self.status = raw.status
        self.headers: Mapping[str, str] = raw.headers

    async def read(self) -> bytes:
        """The whole body (decompressed); ``TransportError`` if it breaks."""
        try:
            return await self._raw.read()
        except _FAILURES as exc:
            raise TransportError(_reason(exc)) from None

    async def events(self, idle_timeout_s: float | None = None
                     ) -> AsyncIterator[list[bytes]]:
        """Server-sent events as they arrive, in batches: the complete events
        each network read brought (forwarded together, so a burst costs one
        write, while nothing waits for more). Each event is without its
        blank-line terminator, with ``\n`` line ends (see :func:`split_events`).
        Raises ``TransportError`` if the stream breaks or, with
        ``idle_timeout_s``, goes that long without a byte."""
        content = self._raw.content
        buf = b""
        while True:
            try:
                if idle_timeout_s is None:
                    chunk = await content.readany()
                else:
                    async with asyncio.timeout(idle_timeout_s):
                        chunk = await content.readany()
            except _FAILURES as exc:
                raise TransportError(_reason(exc)) from None
            if not chunk:
                break
            events, buf = split_events(buf + chunk if buf else chunk)
            if events:
                yield events
        tail = buf.strip(b"\r\n")
        if tail:
            yield [tail.replace(b"\r\n", b"\n").replace(b"\r", b"\n")]

    def close(self) -> None:
        """Give the connection back: kept alive when the body was read to the
        end, closed otherwise (so an abandoned stream stops the upstream)."""
        raw = self._raw
        if raw.content.is_eof():
            raw.release()
        else:
            raw.close()


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
    return [p.strip(b"\n") for p in parts if p.strip(b"\n")], rest


class UpstreamPool:
    """Keep-alive connections to every upstream (``limit`` open at most)."""

    def __init__(self, limit: int = 1000, keepalive_s: float = 30.0) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop and not session.closed:
            return session
        connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0,
                                         keepalive_timeout=self._keepalive_s,
                                         ttl_dns_cache=300)
        session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                        cookie_jar=aiohttp.DummyCookieJar())
        self._session, self._loop = session, loop
        self._keeper = loop.create_task(self._keep(session), name="gateway.upstream-pool")
        return session

    @staticmethod
    async def _keep(session: aiohttp.ClientSession) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await session.close()

    def _timeout(self, connect_s: float, read_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((connect_s, read_s))
        if timeout is None:
            timeout = self._timeouts[(connect_s, read_s)] = aiohttp.ClientTimeout(
                total=None, connect=connect_s * 2, sock_connect=connect_s, sock_read=read_s)
        return timeout

    async def post(self, url: str, payload: bytes, headers: Mapping[str, str], *,
                   connect_s: float, read_s: float) -> UpstreamResponse:
        """Send ``payload`` and wait for the status line and headers; raises
        ``TransportError``. The caller must :meth:`UpstreamResponse.close` it."""
        session = self._open()
        try:
            raw = await session.post(url, data=payload, headers=headers,
                                     timeout=self._timeout(connect_s, read_s),
                                     allow_redirects=False)
        except _FAILURES as exc:
            raise TransportError(_reason(exc)) from None
        return UpstreamResponse(raw)

    async def aclose(self) -> None:
        """Close every connection (idempotent)."""
        keeper, self._keeper = self._keeper, None
        session, self._session = self._session, None
        if self._loop is not asyncio.get_running_loop():
            return  # opened on another loop: its shutdown closes it
        if keeper is not None and not keeper.done():
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        elif session is not None and not session.closed:
            await session.close()
