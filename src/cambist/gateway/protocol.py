"""Request validation for the OpenAI-compatible endpoints.

The body is parsed once with orjson, checked field by field (each failure an
``InvalidRequest`` naming its ``param``), changed only where it must be
(Cambist's own routing fields removed, a ``:floor``/``:nitro`` suffix dropped
from the model; streaming requests always ask the upstream for the final usage
chunk) and serialized once. The serialized bytes are what every upstream
attempt sends; only a fallback model from ``models`` gets its own copy with
its name. Fields the gateway does not know are passed through untouched and
logged by name only (by count in the content-free tiers). The routing fields
are parsed in :mod:`.policy`, the privacy tier in :mod:`.privacy`; in the
``anonymous`` tier the identity fields are removed before serializing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from cambist.domain.endpoint import PrivacyTier
from cambist.domain.errors import InvalidRequest
from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.gateway.errors import InvalidJson
from cambist.gateway.policy import Target, parse_targets
from cambist.gateway.privacy import CONTENT_FREE_TIERS, parse_privacy, strip_identity

__all__ = ["OWN_FIELDS", "Kind", "ParsedRequest", "check_context_length", "parse_request"]

log = logging.getLogger("cambist.gateway")

Kind = Literal["chat", "completions", "embeddings"]

OWN_FIELDS = ("provider", "models", "privacy")
"""Cambist's own request fields: read by the gateway, never sent upstream."""

_SAMPLING = {
    "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n", "stop",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "user", "seed",
}
_KNOWN: dict[str, frozenset[str]] = {
    "chat": frozenset(_SAMPLING | {
        "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "reasoning_effort", "metadata", "store",
        "service_tier", "modalities", "audio", "prediction", "functions", "function_call",
        *OWN_FIELDS,
    }),
    "completions": frozenset(_SAMPLING | {"prompt", "echo", "best_of", "suffix", *OWN_FIELDS}),
    "embeddings": frozenset(
        {"model", "input", "encoding_format", "dimensions", "user", *OWN_FIELDS}
    ),
}
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_NOT_PARAMETERS = frozenset({
    "model", "messages", "prompt", "input", "stream", "stream_options", "user", "metadata",
    "store", "service_tier", *OWN_FIELDS,
})


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated request, ready to forward.

    ``payload`` is the one serialization of the (minimally changed) body;
    ``prompt_tokens`` the estimate used for the reservation and for charging a
    broken stream; ``choices`` how many completions the upstream will produce;
    ``privacy`` the tier the request asked for.
    """

    kind: Kind
    model: str
    payload: bytes
    stream: bool
    client_wants_usage: bool
    max_tokens: int | None
    max_tokens_param: str
    choices: int
    prompt_tokens: int
    unknown_fields: tuple[str, ...]
    targets: tuple[Target, ...] = ()
    parameters: frozenset[str] = frozenset()
    body: dict[str, Any] | None = None
    privacy: PrivacyTier = "standard"

    def payload_for(self, model: str) -> bytes:
        """The bytes to send for ``model``: the one serialization for the
        requested model, a copy naming the fallback model otherwise."""
        if model == self.model or self.body is None:
            return self.payload
        return orjson.dumps({**self.body, "model": model})

    def reserve_completion_tokens(self, default_max_tokens: int) -> int:
        """Completion tokens to hold credit for (none for embeddings)."""
        if self.kind == "embeddings":
            return 0
        return (self.max_tokens or default_max_tokens) * self.choices


def parse_request(raw: bytes, kind: Kind, *, max_tokens_cap: int,
                  privacy_header: str | None = None,
                  allowed_tiers: frozenset[str] | None = None,
                  cap_owner: str = "this gateway") -> ParsedRequest:
    """Parse, validate and rewrite one request body; raise ``InvalidRequest`` on
    bad input. ``privacy_header`` is the value of the ``x-cambist-privacy`` header;
    ``allowed_tiers`` the caller's tier policy (``parse_privacy``); ``cap_owner``
    names who set ``max_tokens_cap`` in the error (the gateway or a plan)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the request body is not valid JSON ({exc.msg})") from None
    if not isinstance(body, dict):
        raise InvalidJson("the request body must be a JSON object")
    privacy = parse_privacy(body.get("privacy"), privacy_header, allowed_tiers)
    model = body.get("model")
    if model is None and isinstance(body.get("models"), list) and body["models"]:
        model = body["models"][0]
    if model is None:
        raise InvalidRequest("you must provide a model parameter", param="model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model must be a non-empty string", param="model")
    targets = parse_targets(body, model, privacy)
    stream = _optional_bool(body, "stream") if kind != "embeddings" else False
    _check_numbers(body)
    choices = _positive_int(body, "n") or 1
    max_tokens_param = "max_tokens"
    if kind == "chat":
        prompt_tokens = _chat_prompt_tokens(body.get("messages"))
        legacy = _max_tokens(body, "max_tokens", max_tokens_cap, cap_owner)
        max_tokens = _max_tokens(body, "max_completion_tokens", max_tokens_cap, cap_owner)
        if max_tokens is not None:
            max_tokens_param = "max_completion_tokens"
        else:
            max_tokens = legacy
    elif kind == "completions":
        prompt_tokens = _text_input_tokens(body, "prompt")
        max_tokens = _max_tokens(body, "max_tokens", max_tokens_cap, cap_owner)
        choices = max(choices, _positive_int(body, "best_of") or 1)
    else:
        prompt_tokens = _text_input_tokens(body, "input")
        max_tokens = None
    unknown = tuple(sorted(k for k in body if k not in _KNOWN[kind]))
    if unknown:
        log.debug("passing through unknown %s fields: %s", kind,
                  f"{len(unknown)} field(s)" if privacy in CONTENT_FREE_TIERS
                  else ", ".join(unknown))
    parameters = frozenset(k for k in body if k not in _NOT_PARAMETERS)
    wants_usage = _rewrite(body, stream)
    if privacy == "anonymous":
        strip_identity(body)
    body["model"] = targets[0].model
    return ParsedRequest(
        kind=kind,
        model=targets[0].model,
        payload=orjson.dumps(body),
        stream=stream,
        client_wants_usage=wants_usage,
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        choices=choices,
        prompt_tokens=prompt_tokens,
        unknown_fields=unknown,
        targets=targets,
        parameters=parameters,
        body=body if len(targets) > 1 else None,
        privacy=privacy,
    )


def check_context_length(request: ParsedRequest, context_length: int) -> None:
    """Refuse a ``max_tokens`` above the model's context length (0 means unknown)."""
    if context_length > 0 and request.max_tokens is not None and (
        request.max_tokens > context_length
    ):
        raise InvalidRequest(
            f"{request.max_tokens_param} is {request.max_tokens} but {request.model} has a "
            f"context length of {context_length} tokens",
            param=request.max_tokens_param,
        )


def _rewrite(body: dict[str, Any], stream: bool) -> bool:
    """Drop Cambist's own fields; make a stream end with usage. Returns whether
    the client itself asked for the usage chunk."""
    for name in OWN_FIELDS:
        body.pop(name, None)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    wants = False
    if isinstance(options, dict):
        flag = options.get("include_usage")
        if flag is not None and not isinstance(flag, bool):
            raise InvalidRequest(
                "stream_options.include_usage must be a boolean",
                param="stream_options.include_usage",
            )
        wants = bool(flag)
    if stream:
        body["stream_options"] = {**(options or {}), "include_usage": True}
    return wants


def _optional_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be a boolean", param=name)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_numbers(body: Mapping[str, Any]) -> None:
    for name in _NUMBERS:
        value = body.get(name)
        if value is not None and not _is_number(value):
            raise InvalidRequest(f"{name} must be a number", param=name)


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer", param=name)
    return value


def _max_tokens(body: Mapping[str, Any], name: str, cap: int, owner: str) -> int | None:
    value = _positive_int(body, name)
    if value is not None and value > cap:
        raise InvalidRequest(f"{name} is {value}; the most {owner} allows is {cap}", param=name)
    return value


MAX_MESSAGES = 4096
"""Most chat messages one request may carry (agents with long tool loops stay
well under; a bigger list is almost surely a client bug or abuse)."""


def _chat_prompt_tokens(messages: Any) -> int:
    if messages is None:
        raise InvalidRequest("you must provide a messages parameter", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty array", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"messages has {len(messages)} entries; at most {MAX_MESSAGES} "
                             "are accepted", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        if not isinstance(m.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}].role must be a string", param=f"messages[{i}].role"
            )
        calls = m.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list)
            and all(isinstance(c, dict) and isinstance(c.get("function", {}), dict) for c in calls)
        ):
            raise InvalidRequest(
                f"messages[{i}].tool_calls must be an array of tool call objects",
                param=f"messages[{i}].tool_calls",
            )
    return count_chat_tokens(messages)


def _text_input_tokens(body: Mapping[str, Any], name: str) -> int:
    """Tokens of a completions ``prompt`` or an embeddings ``input``: a string, an
    array of strings, an array of token ids or an array of token-id arrays."""
    value = body.get(name)
    if value is None:
        raise InvalidRequest(f"you must provide a {name} parameter", param=name)
    if isinstance(value, str):
        return count_text_tokens(value)
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return sum(count_text_tokens(v) for v in value)
        if all(_is_token_id(v) for v in value):
            return len(value)
        if all(isinstance(v, list) and v and all(_is_token_id(t) for t in v) for v in value):
            return sum(len(v) for v in value)
    raise InvalidRequest(
        f"{name} must be a string, an array of strings, or an array of token ids", param=name
    )


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
