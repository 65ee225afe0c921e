"""Server-sent events framing, as OpenAI-compatible servers stream it.

An event is one or more ``field: value`` lines ended by a blank line; the
gateway forwards each event as it arrives with its framing intact. Events are
handled as bytes (split off the wire by :func:`cambist.gateway.pool.split_events`,
line ends normalised to ``\\n``), never decoded to text on the way through.
"""

from __future__ import annotations

import orjson

from cambist.gateway.errors import error_body

__all__ = ["DONE", "encode_event", "error_event", "event_data", "may_carry"]

DONE = b"data: [DONE]\n\n"


def event_data(event: bytes) -> bytes | None:
    """The ``data`` payload of an event, or ``None`` if it has none (comments, pings)."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]  # the usual one-line event, without a list and a join
    values = [line[5:].removeprefix(b" ") for line in event.split(b"\n")
              if line.startswith(b"data:")]
    return b"\n".join(values) if values else None


def encode_event(event: bytes) -> bytes:
    """An event back on the wire, blank-line terminated."""
    return event + b"\n\n"


def may_carry(data: bytes, key: bytes) -> bool:
    """Whether the JSON ``data`` may hold a non-null ``key`` (``b'"usage":'``).

    A cheap scan so the relay parses only chunks that can matter to metering:
    ``False`` is certain (no occurrence, or each followed by ``null``; inside a
    JSON string the quotes would be escaped, so text never matches); ``True``
    may be a false alarm (a nested key of the same name), which the caller
    settles by parsing."""
    at = data.find(key)
    while at >= 0:
        end = at + len(key)
        while data[end:end + 1] == b" ":
            end += 1
        if not data.startswith(b"null", end):
            return True
        at = data.find(key, end)
    return False


def error_event(message: str) -> bytes:
    """The OpenAI-style error event that ends a broken stream, then ``[DONE]``."""
    body = error_body(message, "server_error", "upstream_error")
    return b"data: " + orjson.dumps(body) + b"\n\n" + DONE
