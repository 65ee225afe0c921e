"""The engine core: continuous batching over a simulated GPU, in virtual time.

Pure: no I/O, no sleeping, no clock. The caller submits requests (prompt
length and how many tokens they will emit), calls :meth:`EngineCore.step`
and advances its own clock by the returned duration; the live server sleeps
it, the simulator adds it to its virtual time.

Scheduling follows vLLM's defaults in spirit:

- **Admission** is first-come first-served. A waiting request joins the batch
  while the batch is under ``est.max_batch`` and the KV cache can hold its
  whole eventual context (prompt plus output), reserved on admission so a
  running sequence is never preempted. The head of the queue blocks the rest.
- **Prefill** is chunked: each step processes up to ``max_prefill_tokens``
  prompt tokens (admission order) at ``est.prefill_tok_s``; the time is added
  to the step, which is why time to first token grows with the prompt.
- **Decode**: every running sequence whose prompt is fully processed emits
  one token per step; the step lasts ``PerfModel.step_time_s`` for that batch
  at its average context. A sequence's first token comes out of the step
  that finishes its prefill.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from cambist.domain.errors import Conflict, InvalidRequest
from cambist.domain.models import ModelSpec
from cambist.perf import PerfEstimate, PerfModel

__all__ = ["DEFAULT_MAX_PREFILL_TOKENS", "EngineCore", "StepResult"]

DEFAULT_MAX_PREFILL_TOKENS = 8192
"""Prompt tokens prefilled per step (vLLM's ``max_num_batched_tokens`` default)."""


@dataclass(slots=True)
class _Sequence:
    request_id: str
    prompt_tokens: int
    output_tokens: int
    prefilled: int = 0
    generated: int = 0

    @property
    def kv_need(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def context(self) -> int:
        return self.prompt_tokens + self.generated


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one engine step did."""

    duration_s: float
    """Modeled seconds the step takes on the GPU (0.0 when there was nothing to do)."""
    emitted: Mapping[str, int] = field(default_factory=dict)
    """Tokens emitted this step, by request id (1 per decoding sequence)."""
    finished: tuple[str, ...] = ()
    """Requests that emitted their last token (or needed none) this step."""
    prefill_tokens: int = 0
    """Prompt tokens processed this step."""

    @property
    def batch(self) -> int:
        """Sequences that emitted a token this step."""
        return len(self.emitted)


class EngineCore:
    """Continuous-batching scheduler of one engine; see the module docstring."""

    def __init__(
        self,
        model: ModelSpec,
        estimate: PerfEstimate,
        perf: PerfModel | None = None,
        *,
        max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS,
    ) -> None:
        if not estimate.fits or estimate.max_batch < 1 or estimate.prefill_tok_s <= 0:
            where = f"{estimate.gpu_count}x {estimate.sku}"
            raise InvalidRequest(estimate.reason or f"{model.name} does not fit on {where}")
        if max_prefill_tokens < 1:
            raise ValueError("max_prefill_tokens must be at least 1")
        self.model = model
        self.estimate = estimate
        self.perf = perf or PerfModel()
        self.max_prefill_tokens = max_prefill_tokens
        self._waiting: deque[_Sequence] = deque()
        self._running: dict[str, _Sequence] = {}
        self._ids: set[str] = set()
        self._kv_used = 0
        self.prompt_tokens_total = 0
        """Prompt tokens prefilled since start."""
        self.generation_tokens_total = 0
        """Tokens emitted since start."""
        self.finished_total = 0
        """Requests finished since start (cancelled ones excluded)."""

    # -- state -------------------------------------------------------------
    @property
    def max_model_len(self) -> int:
        """Longest context (prompt plus output) one request may have."""
        return min(self.model.context_length, self.estimate.kv_capacity_tokens)

    @property
    def running(self) -> int:
        """Requests in the batch (prefilling or decoding)."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Requests queued for admission."""
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Whether there is nothing to run."""
        return not self._running and not self._waiting

    @property
    def kv_used_tokens(self) -> int:
        """KV-cache tokens reserved by the running batch."""
        return self._kv_used

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    # -- requests ----------------------------------------------------------
    def submit(self, request_id: str, prompt_tokens: int, output_tokens: int) -> None:
        """Queue a request that will emit exactly ``output_tokens`` tokens.

        Raises ``InvalidRequest`` when its context can never fit this engine and
        ``Conflict`` when ``request_id`` is already queued or running.
        """
        if prompt_tokens < 0 or output_tokens < 0:
            raise InvalidRequest("token counts must not be negative")
        if prompt_tokens + output_tokens > self.max_model_len:
            raise InvalidRequest(
                f"{prompt_tokens} prompt + {output_tokens} output tokens exceed this "
                f"engine's maximum context of {self.max_model_len} tokens"
            )
        if request_id in self._ids:
            raise Conflict(f"request {request_id!r} is already in the engine")
        self._ids.add(request_id)
        self._waiting.append(_Sequence(request_id, prompt_tokens, output_tokens))

    def cancel(self, request_id: str) -> bool:
        """Drop a request wherever it is, freeing its KV; False if unknown."""
        if request_id not in self._ids:
            return False
        self._ids.discard(request_id)
        seq = self._running.pop(request_id, None)
        if seq is not None:
            self._kv_used -= seq.kv_need
        else:
            self._waiting = deque(s for s in self._waiting if s.request_id != request_id)
        return True

    # -- stepping ----------------------------------------------------------
    def _admit(self) -> None:
        est = self.estimate
        while self._waiting and len(self._running) < est.max_batch:
            head = self._waiting[0]
            if self._kv_used + head.kv_need > est.kv_capacity_tokens:
                break
            self._waiting.popleft()
            self._running[head.request_id] = head
            self._kv_used += head.kv_need

    def _prefill(self) -> int:
        budget = self.max_prefill_tokens
        done = 0
        for seq in self._running.values():
            if budget <= 0:
                break
            left = seq.prompt_tokens - seq.prefilled
            if left > 0:
                chunk = min(left, budget)
                seq.prefilled += chunk
                budget -= chunk
                done += chunk
        return done

    def _finish(self, seq: _Sequence) -> None:
        del self._running[seq.request_id]
        self._ids.discard(seq.request_id)
        self._kv_used -= seq.kv_need
        self.finished_total += 1

    def step(self) -> StepResult:
        """Run one engine step: admit, prefill a chunk, decode one token per ready sequence."""
        self._admit()
        prefill_tokens = self._prefill()
        self.prompt_tokens_total += prefill_tokens
        ready = [s for s in self._running.values() if s.prefilled >= s.prompt_tokens]
        emitting = [s for s in ready if s.generated < s.output_tokens]
        finished = [s.request_id for s in ready if s.generated >= s.output_tokens]
        duration = prefill_tokens / self.estimate.prefill_tok_s
        if emitting:
            avg_ctx = sum(s.context for s in emitting) / len(emitting)
            duration += self.perf.step_time_s(self.estimate, self.model, len(emitting), avg_ctx)
        elif prefill_tokens:
            duration += self.estimate.step_overhead_s
        emitted: dict[str, int] = {}
        for seq in emitting:
            seq.generated += 1
            emitted[seq.request_id] = 1
            if seq.generated >= seq.output_tokens:
                finished.append(seq.request_id)
        self.generation_tokens_total += len(emitting)
        for rid in finished:
            self._finish(self._running[rid])
        return StepResult(
            duration_s=duration,
            emitted=emitted,
            finished=tuple(finished),
            prefill_tokens=prefill_tokens,
        )
