"""The engine's API logic: plan a completion, run it on the engine, shape the answer.

Routes (``server``) stay thin; this module turns validated requests into
OpenAI-shaped response bodies or Server-Sent-Event byte streams (``streams``).
A request is submitted to the engine before anything is returned, so every
refusal is a 4xx status, never an error in the middle of a stream. ``n``
choices are ``n`` generations, each seeded from the prompt, the caller's
``seed`` and its index, and each its own sequence in the batch (``jobs``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from cambist.domain.clock import Clock
from cambist.domain.models import ModelSpec
from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.engine.embeddings import embed, encode_base64
from cambist.engine.jobs import Choice, FeedMerge, Job, submit_job
from cambist.engine.logprobs import chat_logprobs, legacy_logprobs
from cambist.engine.protocol import (
    ChatRequest,
    CompletionRequest,
    ContextLengthExceeded,
    EmbeddingRequest,
)
from cambist.engine.runtime import EngineRuntime
from cambist.engine.streams import chat_events, completion_events, sse
from cambist.engine.text import (
    Generation,
    GenerationRequest,
    choice_seed,
    plan_generation,
    prompt_seed,
)

__all__ = ["EngineService", "sse"]


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


def _plans(base: GenerationRequest, n: int, seed: int | None) -> list[tuple[str, Generation]]:
    """(seed, generation) of each of ``n`` choices; choice 0 unseeded is the plain answer."""
    plans = []
    for i in range(n):
        s = choice_seed(base.seed, i, seed)
        plans.append((s, plan_generation(dataclasses.replace(base, seed=s))))
    return plans


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
        self, prefix: str, obj: str, prompt_tokens: int, plans: list[tuple[str, Generation]],
        usage: bool, logprobs: int | None,
    ) -> Job:
        return submit_job(
            self.runtime, rid=f"{prefix}-{uuid.uuid4().hex}", obj=obj,
            created=int(self.clock.now()), prompt_tokens=prompt_tokens, plans=plans,
            include_usage=usage, logprobs=logprobs,
        )

    async def _drain(self, job: Job) -> None:
        merge = FeedMerge([c.feed for c in job.choices])
        try:
            await merge.drain()
        finally:
            merge.close()
        job.log_done()

    def _envelope(self, job: Job) -> dict[str, Any]:
        return {"id": job.id, "object": job.object, "created": job.created,
                "model": self.served_name}

    # -- chat ----------------------------------------------------------------
    async def chat(self, req: ChatRequest) -> dict[str, Any] | AsyncIterator[bytes]:
        """A chat completion body, or (``stream``) its SSE frames."""
        prompt_tokens = count_chat_tokens(req.messages)
        base = GenerationRequest(
            seed=prompt_seed(req.messages),
            max_tokens=self._cap(prompt_tokens, req.max_tokens, "messages"),
            reasoning=self.model.reasoning,
            response_format=req.response_format,
            tools=req.tools,
            tool_choice=req.tool_choice,
            last_user_text=_last_user_text(req.messages),
            stop=req.stop,
        )
        top = req.top_logprobs if req.logprobs else None
        job = self._submit("chatcmpl", "chat.completion", prompt_tokens,
                           _plans(base, req.n, req.seed), req.include_usage, top)
        if req.stream:
            return chat_events(job, self.served_name)
        await self._drain(job)
        return {
            **self._envelope(job),
            "choices": [self._chat_choice(job, c) for c in job.choices],
            "usage": job.usage(details=True),
        }

    def _chat_choice(self, job: Job, choice: Choice) -> dict[str, Any]:
        gen = choice.gen
        lp: dict[str, Any] | None = None
        if job.logprobs is not None:
            lp = chat_logprobs([choice.logprob(i, job.logprobs)
                                for i, t in enumerate(gen.tokens) if t.kind == "content"])
        return {"index": choice.index, "message": self._chat_message(gen), "logprobs": lp,
                "finish_reason": gen.finish_reason}

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

    # -- text completions ----------------------------------------------------
    async def completion(self, req: CompletionRequest) -> dict[str, Any] | AsyncIterator[bytes]:
        """A text completion body, or (``stream``) its SSE frames."""
        prompt_tokens = count_text_tokens(req.prompt)
        base = GenerationRequest(
            seed=prompt_seed(req.prompt),
            max_tokens=self._cap(prompt_tokens, req.max_tokens, "prompt"),
            stop=req.stop,
            continuation=True,
        )
        job = self._submit("cmpl", "text_completion", prompt_tokens,
                           _plans(base, req.n, req.seed), req.include_usage, req.logprobs)
        if req.stream:
            return completion_events(job, self.served_name)
        await self._drain(job)
        return {
            **self._envelope(job),
            "choices": [self._completion_choice(job, c) for c in job.choices],
            "usage": job.usage(details=False),
        }

    def _completion_choice(self, job: Job, choice: Choice) -> dict[str, Any]:
        gen = choice.gen
        lp: dict[str, Any] | None = None
        if job.logprobs is not None:
            lp = legacy_logprobs([choice.logprob(i, job.logprobs)
                                  for i in range(gen.completion_tokens)])
        return {"index": choice.index, "text": gen.content_text, "logprobs": lp,
                "finish_reason": gen.finish_reason}

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
