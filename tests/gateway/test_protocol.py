"""Request parsing: one parse, minimal rewrite, one serialization, only 4xx on bad input."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.domain.errors import InvalidRequest
from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.gateway.protocol import check_context_length, parse_request

MSG = [{"role": "user", "content": "hello there"}]


def parse(body: Any, kind: str = "chat") -> Any:
    raw = json.dumps(body).encode()  # stdlib: also big integers orjson would refuse
    return parse_request(raw, kind, max_tokens_cap=1000)  # type: ignore[arg-type]


def test_rewrite_is_minimal_and_serialized_once(caplog: pytest.LogCaptureFixture) -> None:
    body = {"model": "m", "messages": MSG, "provider": {"a": 1}, "models": ["x"],
            "privacy": "standard", "stream": True, "stream_options": {"other": 1},
            "zzz_custom": [1]}
    with caplog.at_level(logging.DEBUG, logger="cambist.gateway"):
        req = parse(body)
    sent = orjson.loads(req.payload)
    assert sent == {"model": "m", "messages": MSG, "stream": True, "zzz_custom": [1],
                    "stream_options": {"other": 1, "include_usage": True}}
    assert not req.client_wants_usage
    assert req.unknown_fields == ("zzz_custom",)
    assert "zzz_custom" in caplog.text and "hello" not in caplog.text
    assert req.prompt_tokens == count_chat_tokens(MSG)


def test_client_usage_request_is_remembered() -> None:
    req = parse({"model": "m", "messages": MSG, "stream": True,
                 "stream_options": {"include_usage": True}})
    assert req.client_wants_usage and req.stream


def test_non_stream_body_passes_through_byte_for_byte_equivalent() -> None:
    body = {"model": "m", "messages": MSG, "temperature": 0.5, "n": 2, "max_tokens": 7}
    req = parse(body)
    assert orjson.loads(req.payload) == body
    assert (req.max_tokens, req.choices) == (7, 2)
    assert req.reserve_completion_tokens(1024) == 14


def test_max_completion_tokens_wins_and_reservation_defaults() -> None:
    req = parse({"model": "m", "messages": MSG, "max_tokens": 5, "max_completion_tokens": 9})
    assert (req.max_tokens, req.max_tokens_param) == (9, "max_completion_tokens")
    assert parse({"model": "m", "messages": MSG}).reserve_completion_tokens(1024) == 1024
    with pytest.raises(InvalidRequest) as e:
        check_context_length(req, 8)
    assert e.value.param == "max_completion_tokens"
    check_context_length(req, 0)  # unknown context length: no check


def test_prompt_and_input_shapes() -> None:
    assert parse({"model": "m", "prompt": "a b c"}, "completions").prompt_tokens == (
        count_text_tokens("a b c"))
    assert parse({"model": "m", "prompt": [1, 2, 3]}, "completions").prompt_tokens == 3
    assert parse({"model": "m", "input": [[1, 2], [3]]}, "embeddings").prompt_tokens == 3
    emb = parse({"model": "m", "input": ["ab", "cd"], "stream": "ignored"}, "embeddings")
    assert emb.reserve_completion_tokens(1024) == 0 and not emb.stream
    best = parse({"model": "m", "prompt": "x", "n": 2, "best_of": 3, "max_tokens": 4},
                 "completions")
    assert best.reserve_completion_tokens(1024) == 12


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["model", "messages", "prompt", "input", "max_tokens", "stream",
                          "temperature", "n", "stream_options", "best_of", "tool_calls",
                          "max_completion_tokens"])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["chat", "completions", "embeddings"]),
       st.dictionaries(fields, json_values, max_size=6),
       st.lists(st.dictionaries(st.sampled_from(["role", "content", "name", "tool_calls"]),
                                json_values, max_size=4), max_size=3))
def test_any_json_is_accepted_or_refused_as_invalid_request(
    kind: str, body: dict, messages: list
) -> None:
    body = {**body}
    if kind == "chat" and "messages" not in body:
        body["messages"] = messages
    try:
        parse(body, kind)
    except InvalidRequest as exc:
        assert exc.status in (400, 413)
