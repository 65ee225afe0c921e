"""Limits on what a client may send before any handler runs.

The HTTP parser (httptools) accepts request heads of any size; this ASGI
wrapper answers 431 (OpenAI error shape) when the headers are too many or too
large, so a client cannot make every handler walk megabytes of headers.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["MAX_HEADERS", "MAX_HEADER_BYTES", "header_guard"]

MAX_HEADER_BYTES = 64 * 1024
"""Largest total size of a request's header names and values."""
MAX_HEADERS = 128
"""Most header lines one request may carry."""


def _refusal(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "invalid_request_error",
                                   "param": None, "code": "request_header_fields_too_large"}})


def header_guard(app: ASGIApp, *, max_bytes: int = MAX_HEADER_BYTES,
                 max_count: int = MAX_HEADERS) -> ASGIApp:
    """Wrap ``app`` so oversized request heads get 431 instead of reaching it."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(k) + len(v) for k, v in headers)
            if len(headers) > max_count or size > max_bytes:
                body = _refusal(f"request headers too large: at most {max_count} headers "
                                f"and {max_bytes} bytes")
                await send({"type": "http.response.start", "status": 431, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded
