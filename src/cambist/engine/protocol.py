"""Request parsing and validation for the engine's OpenAI-compatible API.

Every bad input becomes a typed error (``cambist.domain.errors`` or the
subclasses here) carrying the offending ``param``; ``server`` maps them to
the OpenAI error shape once. Unknown fields are accepted and ignored, as
OpenAI-compatible servers do; features the engine cannot honour are refused,
never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cambist.domain.errors import InvalidRequest, NotFound

__all__ = [
    "MAX_CHOICES",
    "MAX_LEGACY_LOGPROBS",
    "MAX_TOP_LOGPROBS",
    "ChatRequest",
    "CompletionRequest",
    "ContextLengthExceeded",
    "EmbeddingRequest",
    "ModelNotFound",
    "RequestTooLarge",
    "parse_chat",
    "parse_completion",
    "parse_embedding",
    "parse_json_body",
]

MAX_CHOICES = 16
"""Largest ``n`` (each choice is its own sequence in the batch)."""
MAX_TOP_LOGPROBS = 20
"""Largest chat ``top_logprobs`` (OpenAI's limit)."""
MAX_LEGACY_LOGPROBS = 5
"""Largest legacy completions ``logprobs`` (OpenAI's limit)."""
_SEED_RANGE = (-(2**63), 2**63 - 1)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_FORMATS = frozenset({"text", "json_object", "json_schema"})
EMBEDDING_DIM = 256


class ModelNotFound(NotFound):
    """The request names a model this engine does not serve."""

    code = "model_not_found"


class RequestTooLarge(InvalidRequest):
    """The body is over the configured limit."""

    status = 413
    code = "request_too_large"


class ContextLengthExceeded(InvalidRequest):
    """Prompt plus requested output do not fit the engine's context."""

    code = "context_length_exceeded"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated ``/v1/chat/completions`` request."""

    messages: list[Mapping[str, Any]]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    response_format: Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = None
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/completions`` request."""

    prompt: str
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    logprobs: int | None = None
    """Legacy ``logprobs``: most likely tokens listed per position (None: not requested)."""


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """A validated ``/v1/embeddings`` request."""

    inputs: tuple[str, ...]
    encoding_format: str = "float"
    dimensions: int = EMBEDDING_DIM


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or ``InvalidRequest``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def _check_model(body: Mapping[str, Any], served_name: str) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    if model != served_name:
        raise ModelNotFound(
            f"the model {model!r} does not exist; this engine serves {served_name!r}",
            param="model",
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _max_tokens(body: Mapping[str, Any], *keys: str) -> int | None:
    chosen: int | None = None
    for key in keys:
        v = body.get(key)
        if v is None:
            continue
        if not _is_int(v) or v <= 0:
            raise InvalidRequest(f"'{key}' must be a positive integer, got {v!r}", param=key)
        chosen = v if chosen is None else chosen
    return chosen


@dataclass(frozen=True, slots=True)
class _Common:
    """Fields shared by chat and completions."""

    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    n: int
    seed: int | None


def _choices(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    if n is None:
        n = 1
    if not _is_int(n) or not 1 <= n <= MAX_CHOICES:
        raise InvalidRequest(f"'n' must be an integer from 1 to {MAX_CHOICES}, got {n!r}",
                             param="n")
    best_of = body.get("best_of")
    # best_of > n would need ranking by likelihood; equal to n it is just n.
    if best_of is not None and (not _is_int(best_of) or best_of != n):
        raise InvalidRequest(f"'best_of' must equal n ({n}) on this engine, got {best_of!r}",
                             param="best_of")
    return n


def _seed(body: Mapping[str, Any]) -> int | None:
    seed = body.get("seed")
    if seed is None:
        return None
    if not _is_int(seed) or not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise InvalidRequest("'seed' must be a 64-bit integer", param="seed")
    return int(seed)


def _common(body: Mapping[str, Any], served_name: str) -> _Common:
    """Checks shared by chat and completions."""
    _check_model(body, served_name)
    n = _choices(body)
    seed = _seed(body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not isinstance(opts, Mapping):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        iu = opts.get("include_usage", False)
        if not isinstance(iu, bool):
            raise InvalidRequest("'include_usage' must be a boolean", param="stream_options")
        include_usage = iu
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = tuple(stop)
    else:
        raise InvalidRequest("'stop' must be a string or up to 4 strings", param="stop")
    # Refused rather than ignored: silently dropping them would change the answer's meaning.
    if body.get("echo") not in (None, False):
        raise InvalidRequest("'echo' is not supported by this engine (it never returns the "
                             "prompt); leave it out or false", param="echo")
    if body.get("suffix") not in (None, False, ""):
        raise InvalidRequest("'suffix' (insertion) is not supported by this engine; "
                             "leave it out", param="suffix")
    return _Common(stream=stream, include_usage=include_usage, stop=stops, n=n, seed=seed)


def _chat_logprobs(body: Mapping[str, Any]) -> tuple[bool, int]:
    """Chat ``logprobs`` (a boolean) and ``top_logprobs`` (0..20, needs logprobs)."""
    logprobs = body.get("logprobs")
    if logprobs is None:
        logprobs = False
    if not isinstance(logprobs, bool):
        raise InvalidRequest("'logprobs' must be a boolean", param="logprobs")
    top = body.get("top_logprobs")
    if top is None:
        return logprobs, 0
    if not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {top!r}",
            param="top_logprobs",
        )
    if not logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true",
                             param="top_logprobs")
    return True, int(top)


def _legacy_logprobs(body: Mapping[str, Any]) -> int | None:
    """Legacy completions ``logprobs``: an integer 0..5, or None when not requested."""
    logprobs = body.get("logprobs")
    if logprobs is None or logprobs is False:
        return None
    if not _is_int(logprobs) or not 0 <= logprobs <= MAX_LEGACY_LOGPROBS:
        raise InvalidRequest(
            f"'logprobs' must be an integer from 0 to {MAX_LEGACY_LOGPROBS}, got {logprobs!r}",
            param="logprobs",
        )
    return int(logprobs)


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidRequest(f"messages[{i}] must be an object", param="messages")
        if m.get("role") not in _ROLES:
            raise InvalidRequest(
                f"messages[{i}].role must be one of {sorted(_ROLES)}", param="messages"
            )
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"messages[{i}].content must be a string or a list of parts", param="messages"
            )
        calls = m.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list)
            and all(isinstance(c, Mapping) and isinstance(c.get("function", {}), Mapping)
                    for c in calls)
        ):
            raise InvalidRequest(
                f"messages[{i}].tool_calls must be a list of function calls", param="messages"
            )
    return messages


def _response_format(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, Mapping) or rf.get("type") not in _FORMATS:
        raise InvalidRequest(
            "'response_format.type' must be one of text, json_object, json_schema",
            param="response_format",
        )
    if rf["type"] == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), Mapping):
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be an object", param="response_format"
            )
    return rf


def _tools(body: Mapping[str, Any]) -> tuple[tuple[Mapping[str, Any], ...], Any]:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list", param="tools")
    names: set[str] = set()
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, Mapping) else None
        if not isinstance(t, Mapping) or t.get("type") != "function" or not isinstance(fn, Mapping):
            raise InvalidRequest(f"tools[{i}] must be a function tool", param="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{i}].function.name is required", param="tools")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            raise InvalidRequest(f"tools[{i}].function.parameters must be an object", param="tools")
        names.add(name)
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return tuple(tools), choice
    if choice == "required":
        if not tools:
            raise InvalidRequest("tool_choice 'required' needs tools", param="tool_choice")
        return tuple(tools), choice
    fn = choice.get("function") if isinstance(choice, Mapping) else None
    if not isinstance(fn, Mapping) or fn.get("name") not in names:
        raise InvalidRequest(
            "tool_choice must be none, auto, required or name one of the tools",
            param="tool_choice",
        )
    return tuple(tools), choice


def parse_chat(body: Mapping[str, Any], served_name: str) -> ChatRequest:
    """Validate a chat completion request body."""
    common = _common(body, served_name)
    messages = _messages(body)
    max_tokens = _max_tokens(body, "max_completion_tokens", "max_tokens")
    tools, choice = _tools(body)
    logprobs, top_logprobs = _chat_logprobs(body)
    return ChatRequest(
        messages=messages,
        stream=common.stream,
        include_usage=common.include_usage,
        max_tokens=max_tokens,
        response_format=_response_format(body),
        tools=tools,
        tool_choice=choice,
        stop=common.stop,
        n=common.n,
        seed=common.seed,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def parse_completion(body: Mapping[str, Any], served_name: str) -> CompletionRequest:
    """Validate a text completion request body."""
    common = _common(body, served_name)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string (or a list of one string)", param="prompt")
    return CompletionRequest(
        prompt=prompt,
        stream=common.stream,
        include_usage=common.include_usage,
        max_tokens=_max_tokens(body, "max_tokens"),
        stop=common.stop,
        n=common.n,
        seed=common.seed,
        logprobs=_legacy_logprobs(body),
    )


def parse_embedding(body: Mapping[str, Any], served_name: str) -> EmbeddingRequest:
    """Validate an embeddings request body."""
    _check_model(body, served_name)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(s, str) for s in inputs):
        raise InvalidRequest(
            "'input' must be a string or a non-empty list of strings", param="input"
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be float or base64", param="encoding_format")
    dims = body.get("dimensions")
    if dims is None:
        dims = EMBEDDING_DIM
    if not _is_int(dims) or not 1 <= dims <= EMBEDDING_DIM:
        raise InvalidRequest(
            f"'dimensions' must be an integer from 1 to {EMBEDDING_DIM}", param="dimensions"
        )
    return EmbeddingRequest(inputs=tuple(inputs), encoding_format=fmt, dimensions=dims)
