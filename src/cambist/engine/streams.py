"""Server-Sent-Event streams of chat and text completions, every choice interleaved.

Chunks go out as the engine emits tokens, choice by choice in arrival order,
each carrying its choice ``index``: chat opens each choice with a role chunk,
every choice ends with its own finish chunk, then (``include_usage``) one
``choices: []`` usage chunk and ``[DONE]``. When logprobs were requested each
chunk carries those of the tokens in it (an empty list when it has none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson

from cambist.engine.jobs import Choice, FeedMerge, Job
from cambist.engine.logprobs import chat_logprobs, legacy_logprobs
from cambist.engine.text import Generation

__all__ = ["DONE", "chat_delta", "chat_events", "completion_events", "sse"]

DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    """One Server-Sent-Event frame carrying ``obj`` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chat_delta(gen: Generation, i: int) -> dict[str, Any] | None:
    """The chat ``delta`` of token ``i`` (None: held back, a tool name goes out whole)."""
    tok = gen.tokens[i]
    if tok.kind == "reasoning":
        return {"reasoning_content": tok.text}
    if tok.kind == "content":
        return {"content": tok.text}
    if tok.kind == "tool_name":
        nxt = gen.tokens[i + 1].kind if i + 1 < len(gen.tokens) else None
        if nxt == "tool_name":
            return None
        call = gen.tool_call
        assert call is not None
        fn = {"name": call.name, "arguments": ""}
        return {"tool_calls": [{"index": 0, "id": call.id, "type": "function", "function": fn}]}
    return {"tool_calls": [{"index": 0, "function": {"arguments": tok.text}}]}


class _Renderer(Protocol):
    def opening(self, choice: Choice) -> list[bytes]: ...

    def tokens(self, choice: Choice, start: int, end: int) -> list[bytes]: ...

    def finish(self, choice: Choice) -> bytes: ...

    def usage(self) -> bytes: ...


async def _events(job: Job, render: _Renderer) -> AsyncIterator[bytes]:
    merge = FeedMerge([c.feed for c in job.choices])
    sent = [0] * len(job.choices)
    opened = [False] * len(job.choices)
    try:
        while events := await merge.next():
            out: list[bytes] = []
            for i, count in events:
                choice = job.choices[i]
                if not opened[i]:
                    out += render.opening(choice)
                    opened[i] = True
                if count is None:
                    out.append(render.finish(choice))
                else:
                    out += render.tokens(choice, sent[i], count)
                    sent[i] = count
            if out:
                yield b"".join(out)
    finally:
        merge.close()  # also on disconnect: every choice's sequence leaves the engine
    tail = [render.usage()] if job.include_usage else []
    tail.append(DONE)
    job.log_done()
    yield b"".join(tail)


class _Chunks:
    """Chunk envelopes shared by both stream kinds."""

    def __init__(self, job: Job, model: str, obj: str) -> None:
        self.job = job
        self.base = {"id": job.id, "object": obj, "created": job.created, "model": model}

    def chunk(self, choice: dict[str, Any]) -> bytes:
        body: dict[str, Any] = {**self.base, "choices": [choice]}
        if self.job.include_usage:
            body["usage"] = None
        return sse(body)


class _ChatRenderer(_Chunks):
    def __init__(self, job: Job, model: str) -> None:
        super().__init__(job, model, "chat.completion.chunk")

    def frame(self, choice: Choice, delta: dict[str, Any], position: int | None = None,
              finish: str | None = None) -> bytes:
        lp: dict[str, Any] | None = None
        top = self.job.logprobs
        if top is not None:
            # only content tokens have logprobs; other chunks carry an empty list, never null
            entries = [choice.logprob(position, top)] if position is not None else []
            lp = chat_logprobs(entries)
        return self.chunk({"index": choice.index, "delta": delta, "logprobs": lp,
                           "finish_reason": finish})

    def opening(self, choice: Choice) -> list[bytes]:
        return [self.frame(choice, {"role": "assistant", "content": ""})]

    def tokens(self, choice: Choice, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        for i in range(start, end):
            delta = chat_delta(choice.gen, i)
            if delta is not None:
                content = choice.gen.tokens[i].kind == "content"
                out.append(self.frame(choice, delta, i if content else None))
        return out

    def finish(self, choice: Choice) -> bytes:
        return self.frame(choice, {}, finish=choice.gen.finish_reason)

    def usage(self) -> bytes:
        return sse({**self.base, "choices": [], "usage": self.job.usage(details=True)})


class _CompletionRenderer(_Chunks):
    def __init__(self, job: Job, model: str) -> None:
        super().__init__(job, model, "text_completion")
        self.offsets = [0] * len(job.choices)

    def frame(self, choice: Choice, text: str, position: int | None = None,
              finish: str | None = None) -> bytes:
        lp: dict[str, Any] | None = None
        top = self.job.logprobs
        if top is not None:
            entries = [choice.logprob(position, top)] if position is not None else []
            lp = legacy_logprobs(entries, self.offsets[choice.index])
        self.offsets[choice.index] += len(text)
        return self.chunk({"index": choice.index, "text": text, "logprobs": lp,
                           "finish_reason": finish})

    def opening(self, choice: Choice) -> list[bytes]:
        return []

    def tokens(self, choice: Choice, start: int, end: int) -> list[bytes]:
        return [self.frame(choice, choice.gen.tokens[i].text, i) for i in range(start, end)]

    def finish(self, choice: Choice) -> bytes:
        return self.frame(choice, "", finish=choice.gen.finish_reason)

    def usage(self) -> bytes:
        return sse({**self.base, "choices": [], "usage": self.job.usage(details=False)})


def chat_events(job: Job, model: str) -> AsyncIterator[bytes]:
    """The ``chat.completion.chunk`` stream of ``job``."""
    return _events(job, _ChatRenderer(job, model))


def completion_events(job: Job, model: str) -> AsyncIterator[bytes]:
    """The ``text_completion`` stream of ``job``."""
    return _events(job, _CompletionRenderer(job, model))
