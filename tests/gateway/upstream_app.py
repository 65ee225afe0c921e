"""A small, deterministic OpenAI-compatible upstream for gateway tests.

It answers chat completions, completions and embeddings with fixed text,
honours ``stream`` and ``stream_options.include_usage``, counts tokens with
Cambist's rule, and can be told to fail: return an HTTP status (optionally
with ``Retry-After``), die after a number of streamed chunks, pause between
chunks, or wait on a gate. It records everything it receives: raw bodies,
parsed bodies and headers, and counts the streams it was cut off from; it can
serve a Prometheus ``/metrics`` page. Given an ``api_key`` it answers 401 to requests
without ``Authorization: Bearer <api_key>``, like a hosted provider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cambist.domain.tokens import count_chat_tokens, count_text_tokens

__all__ = ["FakeUpstream"]

PIECES = ["Hello", " from", " the", " upstream", "!", " The", " quick", " brown", " fox", "."]
REASONING = ["Let", " me", " think", " about", " it", "."]


class FakeUpstream:
    """State and behaviour of one fake endpoint; ``app`` is its ASGI app."""

    def __init__(self, name: str, *, reasoning: bool = False, api_key: str | None = None,
                 served: tuple[str, ...] = ()) -> None:
        self.name = name
        self.reasoning = reasoning
        self.api_key = api_key
        self.served = served
        self.authorizations: list[str | None] = []
        self.retry_after: str | None = None
        self.on_request: Callable[[], None] | None = None
        self.fail_status: int | None = None
        self.die_after: int | None = None
        self.chunk_delay_s = 0.0
        self.gate: asyncio.Event | None = None
        self.received: list[dict[str, Any]] = []
        self.received_raw: list[bytes] = []
        self.received_headers: list[list[tuple[str, str]]] = []
        self.streams_abandoned = 0
        """Streams that stopped before their end (the gateway went away)."""
        self.metrics_text: str | None = None
        """What ``GET /metrics`` answers (404 while ``None``)."""
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ])

    @property
    def content(self) -> str:
        return "".join(PIECES)

    def usage(self, prompt_tokens: int) -> dict[str, Any]:
        reasoning = count_text_tokens("".join(REASONING)) if self.reasoning else 0
        completion = count_text_tokens(self.content) + reasoning
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        if self.reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    def _unauthorized(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization")
        self.authorizations.append(auth)
        if self.api_key is None or auth == f"Bearer {self.api_key}":
            return None
        err = {"error": {"message": "Incorrect API key provided.", "type":
                         "invalid_request_error", "param": None, "code": "invalid_api_key"}}
        return Response(orjson.dumps(err), 401, media_type="application/json")

    async def _models(self, request: Request) -> Response:
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        return _json({"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": self.name} for m in self.served]})

    async def _health(self, request: Request) -> Response:
        return Response(b"", 200)

    async def _metrics(self, request: Request) -> Response:
        if self.metrics_text is None:
            return Response(b"", 404)
        return Response(self.metrics_text.encode(), media_type="text/plain")

    async def _begin(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        raw = await request.body()
        self.received_raw.append(raw)
        self.received_headers.append([(k.decode("latin-1"), v.decode("latin-1"))
                                      for k, v in request.scope["headers"]])
        body = orjson.loads(raw)
        refused = self._unauthorized(request)
        if refused is not None:
            return body, refused
        self.received.append(body)
        if self.on_request is not None:
            self.on_request()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_status is not None:
            err = {"error": {"message": "boom", "type": "server_error", "param": None,
                             "code": None}}
            headers = {"retry-after": self.retry_after} if self.retry_after else None
            return body, Response(orjson.dumps(err), self.fail_status, headers=headers,
                                  media_type="application/json")
        return body, None

    async def _chat(self, request: Request) -> Response:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        prompt = count_chat_tokens(body["messages"])
        if body.get("stream"):
            return self._stream(body, prompt, chat=True)
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.reasoning:
            message["reasoning_content"] = "".join(REASONING)
        return _json({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": self.usage(prompt),
        })

    async def _completions(self, request: Request) -> Response:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        prompt = count_text_tokens(body["prompt"])
        if body.get("stream"):
            return self._stream(body, prompt, chat=False)
        return _json({
            "id": "cmpl-1", "object": "text_completion", "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "text": self.content, "finish_reason": "stop"}],
            "usage": self.usage(prompt),
        })

    async def _embeddings(self, request: Request) -> Response:
        body, failed = await self._begin(request)
        if failed is not None:
            return failed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        tokens = sum(count_text_tokens(t) for t in inputs)
        return _json({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                     for i in range(len(inputs))],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    def _stream(self, body: dict[str, Any], prompt: int, *, chat: bool) -> Response:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._events(body["model"], prompt, chat, include_usage),
            media_type="text/event-stream",
        )

    async def _events(
        self, model: str, prompt: int, chat: bool, include_usage: bool
    ) -> AsyncIterator[bytes]:
        try:
            async for event in self._event_stream(model, prompt, chat, include_usage):
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            self.streams_abandoned += 1
            raise

    async def _event_stream(
        self, model: str, prompt: int, chat: bool, include_usage: bool
    ) -> AsyncIterator[bytes]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice: dict[str, Any] | None, usage: Any = None) -> bytes:
            data = {"id": "c-1", "object": kind, "created": 1, "model": model,
                    "choices": [choice] if choice else []}
            if usage is not None:
                data["usage"] = usage
            return b"data: " + orjson.dumps(data) + b"\n\n"

        if chat:
            yield chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                         "finish_reason": None})
            for piece in REASONING if self.reasoning else ():
                yield chunk({"index": 0, "delta": {"reasoning_content": piece},
                             "finish_reason": None})
        for i, piece in enumerate(PIECES):
            if self.die_after is not None and i >= self.die_after:
                raise RuntimeError("upstream died mid-stream (test)")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            part = {"delta": {"content": piece}} if chat else {"text": piece}
            yield chunk({"index": 0, **part, "finish_reason": None})
        last = {"delta": {}} if chat else {"text": ""}
        yield chunk({"index": 0, **last, "finish_reason": "stop"})
        if include_usage:
            yield chunk(None, self.usage(prompt))
        yield b"data: [DONE]\n\n"


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")
