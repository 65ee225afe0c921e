"""The engine's API logic: plan a completion, run it on the engine, shape the answer.

Routes (``server``) stay thin; this module turns validated requests into
OpenAI-shaped response bodies or Server-Sent-Event byte streams. A request is
submitted to the engine before anything is returned, so every refusal is a
4xx status, never an error in the middle of a stream.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cambist.domain.clock import Clock
from cambist.domain.models import ModelSpec
from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.engine.embeddings import embed, encode_base64
from cambist.engine.protocol import (
    ChatRequest,
    CompletionRequest,
    ContextLengthExceeded,
    EmbeddingRequest,
)
from cambist.engine.runtime import EngineRuntime, TokenFeed
from cambist.engine.text import Generation, GenerationRequest, plan_generation, prompt_seed

__all__ = ["EngineService", "sse"]

log = logging.getLogger("cambist.engine")

DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    """One Server-Sent-Event frame carrying ``obj`` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@dataclass(slots=True)
class _Job:
    id: str
    object: str
    created: int
    prompt_tokens: int
    gen: Generation
    feed: TokenFeed
    include_usage: bool
    started: float


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                parts = (p.get("text") for p in content if isinstance(p, Mapping))
                return " ".join(t for t in parts if isinstance(t, str))
            return ""
    return ""


class EngineService:
    """OpenAI-compatible operations of one engine serving one model."""

    def __init__(
        self, runtime: EngineRuntime, model: ModelSpec, served_name: str, clock: Clock
    ) -> None:
        self.runtime = runtime
        self.model = model
        self.served_name = served_name
        self.clock = clock
        self.created = int(clock.now())
        self.embedding_prompt_tokens = 0
        """Prompt tokens of embedding inputs (they do not go through the batch)."""

    # -- helpers -----------------------------------------------------------
    def _cap(self, prompt_tokens: int, max_tokens: int | None, prompt_param: str) -> int:
        limit = self.runtime.core.max_model_len
        if prompt_tokens >= limit:
            raise ContextLengthExceeded(
                f"the prompt has {prompt_tokens} tokens; this model's maximum context length "
                f"is {limit} tokens",
                param=prompt_param,
            )
        if max_tokens is not None and prompt_tokens + max_tokens > limit:
            raise ContextLengthExceeded(
                f"{prompt_tokens} prompt tokens + max_tokens {max_tokens} exceed this model's "
                f"maximum context length of {limit} tokens",
                param="max_tokens",
            )
        return max_tokens if max_tokens is not None else limit - prompt_tokens

    def _submit(
        self, prefix: str, obj: str, prompt_tokens: int, gen: Generation, usage: bool
    ) -> _Job:
        rid = f"{prefix}-{uuid.uuid4().hex}"
        feed = self.runtime.submit(rid, prompt_tokens, gen.completion_tokens)
        return _Job(
            id=rid, object=obj, created=int(self.clock.now()), prompt_tokens=prompt_tokens,
            gen=gen, feed=feed, include_usage=usage, started=time.monotonic(),
        )

    def _usage(self, job: _Job, details: bool) -> dict[str, Any]:
        c = job.gen.completion_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": c,
            "total_tokens": job.prompt_tokens + c,
        }
        if details:
            usage["completion_tokens_details"] = {"reasoning_tokens": job.gen.reasoning_tokens}
        return usage

    def _log_done(self, job: _Job) -> None:
        log.debug(
            "engine request %s finished: prompt_tokens=%d completion_tokens=%d seconds=%.3f",
            job.id, job.prompt_tokens, job.gen.completion_tokens, time.monotonic() - job.started,
        )

    async def _drain(self, job: _Job) -> None:
        try:
            while await job.feed.wait() is not None:
                pass
        finally:
            job.feed.close()
        self._log_done(job)

    # -- chat ----------------------------------------------------------------
    async def chat(self, req: ChatRequest) -> dict[str, Any] | AsyncIterator[bytes]:
        """A chat completion body, or (``stream``) its SSE frames."""
        prompt_tokens = count_chat_tokens(req.messages)
        gen = plan_generation(
            GenerationRequest(
                seed=prompt_seed(req.messages),
                max_tokens=self._cap(prompt_tokens, req.max_tokens, "messages"),
                reasoning=self.model.reasoning,
                response_format=req.response_format,
                tools=req.tools,
                tool_choice=req.tool_choice,
                last_user_text=_last_user_text(req.messages),
                stop=req.stop,
            )
        )
        job = self._submit("chatcmpl", "chat.completion", prompt_tokens, gen, req.include_usage)
        if req.stream:
            return self._chat_events(job)
        await self._drain(job)
        return {
            "id": job.id,
            "object": job.object,
            "created": job.created,
            "model": self.served_name,
            "choices": [
                {
                    "index": 0,
                    "message": self._chat_message(gen),
                    "logprobs": None,
                    "finish_reason": gen.finish_reason,
                }
            ],
            "usage": self._usage(job, details=True),
        }

    def _chat_message(self, gen: Generation) -> dict[str, Any]:
        call = gen.tool_call
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": None if call is not None else gen.content_text,
            "refusal": None,
        }
        if self.model.reasoning:
            msg["reasoning_content"] = gen.reasoning_text
        if call is not None:
            msg["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            ]
        return msg

    def _chat_delta(self, gen: Generation, i: int) -> dict[str, Any] | None:
        tok = gen.tokens[i]
        if tok.kind == "reasoning":
            return {"reasoning_content": tok.text}
        if tok.kind == "content":
            return {"content": tok.text}
        if tok.kind == "tool_name":
            nxt = gen.tokens[i + 1].kind if i + 1 < len(gen.tokens) else None
            if nxt == "tool_name":
                return None  # the name goes out whole, with its last token
            call = gen.tool_call
            assert call is not None
            fn = {"name": call.name, "arguments": ""}
            return {"tool_calls": [{"index": 0, "id": call.id, "type": "function", "function": fn}]}
        return {"tool_calls": [{"index": 0, "function": {"arguments": tok.text}}]}

    async def _chat_events(self, job: _Job) -> AsyncIterator[bytes]:
        base = {"id": job.id, "object": "chat.completion.chunk", "created": job.created,
                "model": self.served_name}

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk: dict[str, Any] = {**base, "choices": [choice]}
            if job.include_usage:
                chunk["usage"] = None
            return sse(chunk)

        role = frame({"role": "assistant", "content": ""})
        sent = 0
        try:
            while (count := await job.feed.wait()) is not None:
                out = [role] if sent == 0 else []
                for i in range(sent, count):
                    delta = self._chat_delta(job.gen, i)
                    if delta is not None:
                        out.append(frame(delta))
                sent = count
                if out:
                    yield b"".join(out)
        finally:
            job.feed.close()
        tail = [role] if sent == 0 else []
        tail.append(frame({}, job.gen.finish_reason))
        if job.include_usage:
            tail.append(sse({**base, "choices": [], "usage": self._usage(job, details=True)}))
        tail.append(DONE)
        self._log_done(job)
        yield b"".join(tail)

    # -- text completions ----------------------------------------------------
    async def completion(self, req: CompletionRequest) -> dict[str, Any] | AsyncIterator[bytes]:
        """A text completion body, or (``stream``) its SSE frames."""
        prompt_tokens = count_text_tokens(req.prompt)
        gen = plan_generation(
            GenerationRequest(
                seed=prompt_seed(req.prompt),
                max_tokens=self._cap(prompt_tokens, req.max_tokens, "prompt"),
                stop=req.stop,
                continuation=True,
            )
        )
        job = self._submit("cmpl", "text_completion", prompt_tokens, gen, req.include_usage)
        if req.stream:
            return self._completion_events(job)
        await self._drain(job)
        return {
            "id": job.id,
            "object": job.object,
            "created": job.created,
            "model": self.served_name,
            "choices": [
                {"index": 0, "text": gen.content_text, "logprobs": None,
                 "finish_reason": gen.finish_reason}
            ],
            "usage": self._usage(job, details=False),
        }

    async def _completion_events(self, job: _Job) -> AsyncIterator[bytes]:
        base = {"id": job.id, "object": "text_completion", "created": job.created,
                "model": self.served_name}

        def frame(text: str, finish: str | None = None) -> bytes:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            chunk: dict[str, Any] = {**base, "choices": [choice]}
            if job.include_usage:
                chunk["usage"] = None
            return sse(chunk)

        sent = 0
        try:
            while (count := await job.feed.wait()) is not None:
                yield b"".join(frame(job.gen.tokens[i].text) for i in range(sent, count))
                sent = count
        finally:
            job.feed.close()
        tail = [frame("", job.gen.finish_reason)]
        if job.include_usage:
            tail.append(sse({**base, "choices": [], "usage": self._usage(job, details=False)}))
        tail.append(DONE)
        self._log_done(job)
        yield b"".join(tail)

    # -- embeddings and models -------------------------------------------------
    def embeddings(self, req: EmbeddingRequest) -> dict[str, Any]:
        """Deterministic embeddings of every input."""
        data = []
        tokens = 0
        for i, text in enumerate(req.inputs):
            vec = embed(text, req.dimensions)
            value: Any = encode_base64(vec) if req.encoding_format == "base64" else vec
            data.append({"object": "embedding", "index": i, "embedding": value})
            tokens += count_text_tokens(text)
        self.embedding_prompt_tokens += tokens
        return {
            "object": "list",
            "data": data,
            "model": self.served_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def models(self) -> dict[str, Any]:
        """The ``/v1/models`` listing: the one served model."""
        return {
            "object": "list",
            "data": [
                {
                    "id": self.served_name,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "cambist",
                    "root": self.model.hf_id,
                    "parent": None,
                    "max_model_len": self.runtime.core.max_model_len,
                }
            ],
        }
