"""Deterministic generation: what the reference engine says, one token at a time.

The same prompt always yields the same completion. Every emitted token is one
*piece* of text that ``cambist.domain.tokens.count_text_tokens`` counts as
exactly one token, and the pieces concatenate to the final text, so
``count_text_tokens(text) == completion_tokens`` holds for prose, JSON,
reasoning and tool-call arguments alike (see :func:`split_tokens`).

A plan is made once per request (:func:`plan_generation`): reasoning tokens
first for reasoning models, then either the answer (prose, a JSON object, or
a minimal instance of a JSON schema) or one tool call (name, then
arguments). ``stop`` strings cut the answer; ``max_tokens`` caps the total
with finish reason ``"length"``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cambist.domain.errors import InvalidRequest
from cambist.engine.schema import minimal_instance

__all__ = [
    "VOCABULARY",
    "Generation",
    "GenerationRequest",
    "Token",
    "TokenKind",
    "ToolCall",
    "choice_seed",
    "choose_tool",
    "plan_generation",
    "prompt_seed",
    "split_tokens",
]

TokenKind = Literal["reasoning", "content", "tool_name", "tool_args"]

_PIECE = re.compile(r"\w+|[^\w\s]")
_WORDS = (
    "the", "a", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "by",
    "at", "from", "this", "we", "you", "can", "will", "be", "are", "not", "or", "an", "all",
    "more", "one", "two", "time", "data", "node", "load", "rate", "cost", "fast", "slow",
    "plan", "mode", "step", "work", "then", "next", "each", "when", "what", "how", "most",
    "best", "low", "high", "core", "unit", "path", "risk", "gain", "part", "sure",
)
VOCABULARY: tuple[str, ...] = _WORDS
"""The words prose is made of (one token each); alternatives in logprobs come from it."""
_THINK_OPEN = ("Okay", ",", "the", "user", "asks")
CONTENT_RANGE = (20, 120)
"""Natural answer length in tokens (inclusive), drawn from the prompt hash."""
REASONING_RANGE = (16, 64)
"""Natural reasoning length in tokens (inclusive) for reasoning models."""


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into pieces that each count as one token and concatenate to it.

    Mirrors the counting rule: a word run of ``n`` characters becomes
    ``ceil(n / 4)`` chunks, a symbol one piece; whitespace rides on the next
    piece (trailing whitespace on the last). Whitespace-only text has no pieces.
    """
    pieces: list[str] = []
    pos = 0
    for m in _PIECE.finditer(text):
        run = m.group()
        if run[0].isalnum() or run[0] == "_":
            chunks = [run[i : i + 4] for i in range(0, len(run), 4)]
        else:
            chunks = [run]
        chunks[0] = text[pos : m.start()] + chunks[0]
        pieces.extend(chunks)
        pos = m.end()
    if pieces and pos < len(text):
        pieces[-1] += text[pos:]
    return pieces


def prompt_seed(payload: Any) -> str:
    """A stable hex digest of a request's prompt (messages or prompt text)."""
    canon = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def choice_seed(prompt: str, index: int = 0, seed: int | None = None) -> str:
    """The generation seed of choice ``index`` of a request whose prompt seed is ``prompt``.

    Choice 0 without a caller ``seed`` keeps the prompt seed itself, so a plain
    request answers as it always has; any other choice, or a caller ``seed``,
    hashes them in (same prompt, seed and index: same answer).
    """
    if index == 0 and seed is None:
        return prompt
    salt = "" if seed is None else str(seed)
    return hashlib.sha256(f"{prompt}:seed={salt}:choice={index}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Token:
    """One emitted token: its text and which part of the answer it belongs to."""

    kind: TokenKind
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call as returned to the caller."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What generation depends on, extracted from an API request."""

    seed: str
    max_tokens: int | None = None
    reasoning: bool = False
    response_format: Mapping[str, Any] | None = None
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: Any = None
    last_user_text: str = ""
    stop: Sequence[str] = ()
    continuation: bool = False
    """Text completion: the answer continues the prompt (leading space, no capital)."""


@dataclass(frozen=True, slots=True)
class Generation:
    """The planned completion: every token in order, and why it ends."""

    tokens: tuple[Token, ...]
    finish_reason: str
    tool_call_id: str | None = None

    @property
    def completion_tokens(self) -> int:
        """All emitted tokens, reasoning included."""
        return len(self.tokens)

    @property
    def reasoning_tokens(self) -> int:
        """Tokens of reasoning."""
        return sum(1 for t in self.tokens if t.kind == "reasoning")

    def text(self, kind: TokenKind) -> str:
        """Concatenated text of the tokens of one kind."""
        return "".join(t.text for t in self.tokens if t.kind == kind)

    @property
    def reasoning_text(self) -> str:
        """The reasoning, as text."""
        return self.text("reasoning")

    @property
    def content_text(self) -> str:
        """The answer, as text (empty for a tool call)."""
        return self.text("content")

    @property
    def tool_call(self) -> ToolCall | None:
        """The tool call, if the answer is one (arguments as emitted, maybe truncated)."""
        if self.tool_call_id is None:
            return None
        return ToolCall(self.tool_call_id, self.text("tool_name"), self.text("tool_args"))


def _prose(rng: random.Random, n: int, capital: bool, opening: Sequence[str] = ()) -> str:
    """``n`` one-token units of prose (words of at most 4 characters and punctuation)."""
    units: list[str] = list(opening[:n])
    since_stop = len(units)
    while len(units) < n:
        left = n - len(units)
        after_word = bool(units) and units[-1] not in (".", ",")
        if after_word and (left == 1 or (since_stop >= rng.randint(6, 12) and left >= 3)):
            units.append(".")
            since_stop = 0
        elif after_word and since_stop >= 3 and left >= 3 and rng.random() < 0.08:
            units.append(",")
        else:
            units.append(rng.choice(_WORDS))
            since_stop += 1
    out: list[str] = []
    cap_next = capital
    for u in units:
        if u in (".", ","):
            out.append(u)
            cap_next = u == "."
        else:
            out.append((" " if out else "") + (u.capitalize() if cap_next else u))
            cap_next = False
    return "".join(out)


def choose_tool(
    tools: Sequence[Mapping[str, Any]], tool_choice: Any, last_user_text: str
) -> Mapping[str, Any] | None:
    """The function definition to call, or None for a plain answer.

    ``"required"`` calls the tool named in the last user message (else the
    first); a named choice calls that tool; ``"auto"`` or no choice calls a
    tool only when the last user message mentions its name; ``"none"`` never.
    """
    fns = [t["function"] for t in tools if isinstance(t.get("function"), Mapping)]
    if not fns or tool_choice == "none":
        return None
    if isinstance(tool_choice, Mapping):
        wanted = (tool_choice.get("function") or {}).get("name")
        for fn in fns:
            if fn.get("name") == wanted:
                return fn
        raise InvalidRequest(f"tool_choice names unknown function {wanted!r}", param="tool_choice")
    lowered = last_user_text.lower()
    mentioned = [fn for fn in fns if str(fn.get("name", "")).lower() in lowered]
    if mentioned:
        return max(mentioned, key=lambda fn: len(str(fn.get("name", ""))))
    return fns[0] if tool_choice == "required" else None


def _answer_text(req: GenerationRequest, rng: random.Random) -> str:
    n = rng.randint(*CONTENT_RANGE)
    rf = req.response_format or {}
    kind = rf.get("type", "text")
    if kind == "json_object":
        return json.dumps({"answer": _prose(rng, n, capital=True)})
    if kind == "json_schema":
        spec = rf.get("json_schema") or {}
        schema = spec.get("schema", {}) if isinstance(spec, Mapping) else {}
        return json.dumps(minimal_instance(schema, word=rng.choice(_WORDS)))
    text = _prose(rng, n, capital=not req.continuation)
    return " " + text if req.continuation else text


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def plan_generation(req: GenerationRequest) -> Generation:
    """Plan the full completion of ``req`` (deterministic in ``req``)."""
    rng = random.Random(int(req.seed[:16], 16) if req.seed else 0)
    tokens: list[Token] = []
    if req.reasoning:
        n = rng.randint(*REASONING_RANGE)
        think = _prose(rng, n, capital=False, opening=_THINK_OPEN)
        tokens += [Token("reasoning", p) for p in split_tokens(think)]
    tool = choose_tool(req.tools, req.tool_choice, req.last_user_text)
    call_id: str | None = None
    if tool is not None:
        call_id = "call_" + hashlib.sha256(f"{req.seed}:tool".encode()).hexdigest()[:24]
        params = tool.get("parameters")
        schema = params if params is not None else {}
        args = minimal_instance(schema, word=rng.choice(_WORDS), param="tools")
        tokens += [Token("tool_name", p) for p in split_tokens(str(tool.get("name", "")))]
        tokens += [Token("tool_args", p) for p in split_tokens(json.dumps(args))]
        finish = "tool_calls"
    else:
        answer, _ = _cut_at_stop(_answer_text(req, rng), req.stop)
        tokens += [Token("content", p) for p in split_tokens(answer)]
        finish = "stop"
    if req.max_tokens is not None and len(tokens) > req.max_tokens:
        tokens = tokens[: req.max_tokens]
        finish = "length"
    return Generation(tokens=tuple(tokens), finish_reason=finish, tool_call_id=call_id)
