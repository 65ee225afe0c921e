"""Server-sent events framing, as OpenAI-compatible servers stream it.

An event is one or more ``field: value`` lines ended by a blank line; the
gateway forwards each event as it arrives with its framing intact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from cambist.gateway.errors import error_body

__all__ = ["DONE", "encode_event", "error_event", "event_data", "sse_events"]

DONE = b"data: [DONE]\n\n"


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Group decoded lines into events (the lines of one event joined by ``\\n``)."""
    buf: list[str] = []
    async for line in lines:
        if line:
            buf.append(line)
        elif buf:
            yield "\n".join(buf)
            buf = []
    if buf:
        yield "\n".join(buf)


def event_data(event: str) -> str | None:
    """The ``data`` payload of an event, or ``None`` if it has none (comments, pings)."""
    values = [
        line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:")
    ]
    return "\n".join(values) if values else None


def encode_event(event: str) -> bytes:
    """An event back on the wire, blank-line terminated."""
    return f"{event}\n\n".encode()


def error_event(message: str) -> bytes:
    """The OpenAI-style error event that ends a broken stream, then ``[DONE]``."""
    body = error_body(message, "server_error", "upstream_error")
    return b"data: " + orjson.dumps(body) + b"\n\n" + DONE
