"""A submitted request: its ``n`` choices, each a sequence in the engine's batch.

Every choice is planned and submitted on its own (as vLLM fans ``n`` out into
``n`` sequences), so ``n`` costs batch capacity and KV like ``n`` requests.
:class:`FeedMerge` follows all their token feeds at once, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cambist.engine.logprobs import TokenLogprob, token_logprob
from cambist.engine.runtime import EngineRuntime, TokenFeed
from cambist.engine.text import Generation

__all__ = ["Choice", "FeedMerge", "Job", "submit_job"]

log = logging.getLogger("cambist.engine")


@dataclass(slots=True)
class Choice:
    """One choice of a job: its generation, the feed of its sequence, its seed."""

    index: int
    seed: str
    gen: Generation
    feed: TokenFeed

    def logprob(self, position: int, top: int) -> TokenLogprob:
        """The logprob entry of token ``position`` of this choice."""
        return token_logprob(self.seed, self.index, position, self.gen.tokens[position].text, top)


@dataclass(slots=True)
class Job:
    """A request in the engine: ids, its choices and what the caller asked to see."""

    id: str
    object: str
    created: int
    prompt_tokens: int
    choices: list[Choice]
    include_usage: bool
    logprobs: int | None
    """Alternatives per token when logprobs were requested, else None."""
    started: float

    @property
    def completion_tokens(self) -> int:
        """Tokens of every choice together (what n sequences emit)."""
        return sum(c.gen.completion_tokens for c in self.choices)

    def usage(self, details: bool) -> dict[str, Any]:
        """The ``usage`` object: the prompt once, completions summed over choices."""
        c = self.completion_tokens
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": c,
            "total_tokens": self.prompt_tokens + c,
        }
        if details:
            reasoning = sum(ch.gen.reasoning_tokens for ch in self.choices)
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage

    def log_done(self) -> None:
        """Log the finished request at debug level."""
        log.debug(
            "engine request %s finished: choices=%d prompt_tokens=%d completion_tokens=%d "
            "seconds=%.3f", self.id, len(self.choices), self.prompt_tokens,
            self.completion_tokens, time.monotonic() - self.started,
        )


def submit_job(
    runtime: EngineRuntime,
    *,
    rid: str,
    obj: str,
    created: int,
    prompt_tokens: int,
    plans: Sequence[tuple[str, Generation]],
    include_usage: bool,
    logprobs: int | None,
) -> Job:
    """Submit one sequence per (seed, generation) plan; all or none stay in the engine."""
    choices: list[Choice] = []
    try:
        for i, (seed, gen) in enumerate(plans):
            seq_id = rid if len(plans) == 1 else f"{rid}.{i}"
            feed = runtime.submit(seq_id, prompt_tokens, gen.completion_tokens)
            choices.append(Choice(index=i, seed=seed, gen=gen, feed=feed))
    except BaseException:
        for c in choices:
            c.feed.close()
        raise
    return Job(
        id=rid, object=obj, created=created, prompt_tokens=prompt_tokens, choices=choices,
        include_usage=include_usage, logprobs=logprobs, started=time.monotonic(),
    )


Event = tuple[int, int | None]
"""(choice index, new token total), or (choice index, None) when that choice finished."""


class FeedMerge:
    """The token feeds of a job's choices, merged in the order their tokens arrive.

    One task per feed pushes into a queue; :meth:`close` cancels the tasks and
    closes every feed, so a client going away frees all the sequences.
    """

    def __init__(self, feeds: Sequence[TokenFeed]) -> None:
        self._feeds = list(feeds)
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._open = len(self._feeds)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(i, f)) for i, f in enumerate(self._feeds)]

    async def _follow(self, index: int, feed: TokenFeed) -> None:
        try:
            while (count := await feed.wait()) is not None:
                self._queue.put_nowait((index, count))
            self._queue.put_nowait((index, None))
        except Exception as exc:  # hand the driver's failure to the reader, not the loop
            self._queue.put_nowait(exc)

    async def next(self) -> list[Event]:
        """Every event available now (waiting for at least one); [] once all finished."""
        if self._open == 0:
            return []
        events: list[Event] = []
        item = await self._queue.get()
        while True:
            if isinstance(item, BaseException):
                raise item
            events.append(item)
            if item[1] is None:
                self._open -= 1
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return events

    async def drain(self) -> None:
        """Wait until every choice finished."""
        while await self.next():
            pass

    def close(self) -> None:
        """Cancel the followers and close every feed (idempotent, never blocks)."""
        for t in self._tasks:
            t.cancel()
        for f in self._feeds:
            with contextlib.suppress(Exception):
                f.close()
