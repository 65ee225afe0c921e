"""uvicorn's httptools protocol, with each response head sent in the same
write as the body that follows it, and checked in two regex searches.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start`` and the body in a second write: two system calls per
response where one does (each write on loopback costs about as much CPU as a
few Python function calls' worth of gateway work; ``bench/gateway`` measured
the gateway's writes at a tenth of its CPU). aiohttp holds headers for the
first body write the same way. The head is held only until the body's write,
or until the event loop's next turn when none comes at once (a response that
sends its head and then waits), so nothing is delayed by more than a turn.

uvicorn also checks every response header with two regex searches (no
separator or control character in a name, no CR, LF or NUL in a value) and
builds the head header by header: ~9 µs for the gateway's sixteen headers,
more than its rate limiting. :class:`_Cycle` checks the same bytes with one
``bytes.translate`` over all values joined (a joined string holds a
forbidden byte exactly when one of its parts does) and names once each (kept
lowered: an app sends the same few), formatting the head in the same pass
over the headers: ~3 µs. A head that fails the check, or a cycle in any other state, goes to
uvicorn's own code, which raises its usual error.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

__all__ = ["HeadHoldingProtocol"]

_HEAD = b"HTTP/1.1 "


class _HeadHold:
    """A transport that holds one response head for the next write."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data.startswith(_HEAD):  # uvicorn writes each head whole, in one piece
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (the body did not follow within the turn)."""
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_BAD_NAME = bytes(range(0x20)) + b'\x7f()<>@,;:[]={} \t\\"'  # what uvicorn's HEADER_RE refuses
_BAD_VALUE = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"  # and HEADER_VALUE_RE
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_NAMES: dict[bytes, bytes] = {}
"""Header names already checked, lowered (an app sends the same few names)."""
_NAMES_MAX = 4096


def _checked_name(name: bytes) -> bytes | None:
    """``name`` lowered, or ``None`` if uvicorn would refuse it."""
    low = _NAMES.get(name)
    if low is None:
        if len(name.translate(None, _BAD_NAME)) != len(name):
            return None
        low = name.lower()
        if len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = low
    return low


class _Cycle(RequestResponseCycle):
    """uvicorn's request cycle with a cheaper check and build of the response head."""

    async def send(self, message: Any) -> None:
        if (self.response_started or self.disconnected or self.access_log
                or self.flow.write_paused or message["type"] != "http.response.start"):
            return await super().send(message)
        # One pass: each name checked (once per process) and lowered, each
        # line formatted; the values checked together after; the framing
        # headers (few) worked through as uvicorn does once all is known good.
        content = [STATUS_LINE[message["status"]]]
        values = []
        framing = []
        names = _NAMES
        for name, value in self.default_headers + list(message.get("headers", [])):
            low = names.get(name) or _checked_name(name)
            if low is None:
                return await super().send(message)  # raises uvicorn's error for it
            if low in _FRAMING:
                framing.append((low, value))
            content.append(b"%s: %s\r\n" % (low, value))
            values.append(value)
        joined = b"".join(values)
        if len(joined.translate(None, _BAD_VALUE)) != len(joined):
            return await super().send(message)  # raises uvicorn's error for the bad one
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        has_connection_close = False
        for name, value in framing:
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in [
                    token.lower().strip() for token in value.split(b",")]:
                self.keep_alive = False
                has_connection_close = True
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if (self.chunked_encoding is None and self.scope["method"] != "HEAD"
                and status not in (204, 304)):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))


class HeadHoldingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through :class:`_HeadHold`, its
    request cycles :class:`_Cycle`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        hold = _HeadHold(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, hold))

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # The cycle's task has been created, not started: it looks ``send`` up
        # on its first step, so the class can still change.
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = _Cycle
