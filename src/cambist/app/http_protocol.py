"""uvicorn's httptools protocol, with each response head sent in the same
write as the body that follows it.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start`` and the body in a second write: two system calls per
response where one does (each write on loopback costs about as much CPU as a
few Python function calls' worth of gateway work; ``bench/gateway`` measured
the gateway's writes at a tenth of its CPU). aiohttp holds headers for the
first body write the same way. The head is held only until the body's write,
or until the event loop's next turn when none comes at once (a response that
sends its head and then waits), so nothing is delayed by more than a turn.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class HeadHoldingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through :class:`_HeadHold`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        hold = _HeadHold(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, hold))
