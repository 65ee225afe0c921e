"""Deterministic generation: exact token counts, JSON validity, tool calls, reasoning."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.domain.errors import InvalidRequest
from cambist.domain.tokens import count_text_tokens
from cambist.engine.schema import minimal_instance
from cambist.engine.text import (
    CONTENT_RANGE,
    GenerationRequest,
    choose_tool,
    plan_generation,
    prompt_seed,
    split_tokens,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detail": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}


def seed(text: str) -> str:
    return prompt_seed([{"role": "user", "content": text}])


@given(st.text(max_size=300))
def test_split_tokens_is_exact_for_any_text(text: str) -> None:
    pieces = split_tokens(text)
    assert len(pieces) == count_text_tokens(text)
    assert all(count_text_tokens(p) == 1 for p in pieces)
    if pieces:
        assert "".join(pieces) == text


@settings(max_examples=150)
@given(
    prompt=st.text(max_size=200),
    max_tokens=st.one_of(st.none(), st.integers(min_value=1, max_value=200)),
    reasoning=st.booleans(),
    json_mode=st.booleans(),
)
def test_completion_tokens_match_counted_text(
    prompt: str, max_tokens: int | None, reasoning: bool, json_mode: bool
) -> None:
    gen = plan_generation(
        GenerationRequest(
            seed=seed(prompt),
            max_tokens=max_tokens,
            reasoning=reasoning,
            response_format={"type": "json_object"} if json_mode else None,
        )
    )
    counted = count_text_tokens(gen.content_text) + count_text_tokens(gen.reasoning_text)
    assert counted == gen.completion_tokens
    assert count_text_tokens(gen.reasoning_text) == gen.reasoning_tokens
    if max_tokens is not None:
        assert gen.completion_tokens <= max_tokens
    assert gen.finish_reason in ("stop", "length")
    if gen.finish_reason == "length":
        assert gen.completion_tokens == max_tokens
    if not reasoning:
        assert gen.reasoning_tokens == 0


def test_generation_is_deterministic_and_prompt_dependent() -> None:
    a1 = plan_generation(GenerationRequest(seed=seed("hello")))
    a2 = plan_generation(GenerationRequest(seed=seed("hello")))
    b = plan_generation(GenerationRequest(seed=seed("goodbye")))
    assert a1 == a2
    assert a1.content_text != b.content_text
    lo, hi = CONTENT_RANGE
    for word in ("x", "y", "z", "w"):
        n = plan_generation(GenerationRequest(seed=seed(word))).completion_tokens
        assert lo <= n <= hi


def test_max_tokens_caps_with_length() -> None:
    full = plan_generation(GenerationRequest(seed=seed("q")))
    cut = plan_generation(GenerationRequest(seed=seed("q"), max_tokens=7))
    assert full.finish_reason == "stop"
    assert cut.finish_reason == "length" and cut.completion_tokens == 7
    assert full.content_text.startswith(cut.content_text)


def test_reasoning_comes_first_and_counts() -> None:
    gen = plan_generation(GenerationRequest(seed=seed("think"), reasoning=True))
    kinds = [t.kind for t in gen.tokens]
    assert kinds[: gen.reasoning_tokens] == ["reasoning"] * gen.reasoning_tokens
    assert gen.reasoning_tokens > 0 and gen.content_text
    capped = plan_generation(GenerationRequest(seed=seed("think"), reasoning=True, max_tokens=5))
    assert capped.reasoning_tokens == 5 and capped.content_text == ""
    assert capped.finish_reason == "length"


def test_json_object_mode_is_valid_json() -> None:
    for prompt in ("a", "b", "c"):
        gen = plan_generation(
            GenerationRequest(seed=seed(prompt), response_format={"type": "json_object"})
        )
        assert isinstance(json.loads(gen.content_text), dict)
        assert count_text_tokens(gen.content_text) == gen.completion_tokens


def test_json_schema_mode_is_a_valid_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 8},
            "age": {"type": "integer", "minimum": 18},
            "score": {"type": "number", "exclusiveMinimum": 0.5},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["a", "b"]},
            "ok": {"type": "boolean"},
            "addr": {"$ref": "#/$defs/addr"},
            "maybe": {"type": ["null", "string"]},
        },
        "required": ["name", "age", "score", "tags", "kind", "ok", "addr", "maybe"],
        "$defs": {"addr": {"type": "object", "properties": {"zip": {"type": "string"}}}},
    }
    rf = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    gen = plan_generation(GenerationRequest(seed=seed("s"), response_format=rf))
    value = json.loads(gen.content_text)
    assert len(value["name"]) >= 8
    assert isinstance(value["age"], int) and value["age"] >= 18
    assert value["score"] > 0.5
    assert len(value["tags"]) == 2 and all(isinstance(t, str) for t in value["tags"])
    assert value["kind"] == "a" and value["ok"] is False
    assert isinstance(value["addr"]["zip"], str) and isinstance(value["maybe"], str)
    assert count_text_tokens(gen.content_text) == gen.completion_tokens


def test_minimal_instance_rejects_bad_refs() -> None:
    with pytest.raises(InvalidRequest):
        minimal_instance({"$ref": "#/nowhere"})
    with pytest.raises(InvalidRequest):
        minimal_instance({"type": "object", "properties": {"a": {"type": "weird"}}})


def test_tool_call_arguments_are_valid_and_counted() -> None:
    gen = plan_generation(
        GenerationRequest(seed=seed("t"), tools=[WEATHER], tool_choice="required")
    )
    call = gen.tool_call
    assert call is not None and gen.finish_reason == "tool_calls"
    assert call.id.startswith("call_") and call.name == "get_weather"
    args = json.loads(call.arguments)
    assert set(args) == {"city", "days", "unit"}
    assert 1 <= args["days"] <= 7 and args["unit"] == "celsius"
    assert gen.completion_tokens == count_text_tokens(call.name) + count_text_tokens(call.arguments)
    assert gen.content_text == ""


def test_tool_choice_rules() -> None:
    other: dict[str, Any] = {"type": "function", "function": {"name": "search"}}
    tools = [WEATHER, other]
    assert choose_tool(tools, None, "what is up") is None
    assert choose_tool(tools, "auto", "please call get_weather now") == WEATHER["function"]
    assert choose_tool(tools, "none", "call get_weather") is None
    assert choose_tool(tools, "required", "anything") == WEATHER["function"]
    named = {"type": "function", "function": {"name": "search"}}
    assert choose_tool(tools, named, "get_weather") == other["function"]
    with pytest.raises(InvalidRequest):
        choose_tool(tools, {"type": "function", "function": {"name": "nope"}}, "")


def test_stop_sequence_cuts_the_answer() -> None:
    full = plan_generation(GenerationRequest(seed=seed("stop")))
    word = full.content_text.split()[3]
    cut = plan_generation(GenerationRequest(seed=seed("stop"), stop=[" " + word]))
    assert cut.finish_reason == "stop"
    assert (" " + word) not in cut.content_text
    assert count_text_tokens(cut.content_text) == cut.completion_tokens < full.completion_tokens


def test_continuation_starts_with_a_space() -> None:
    gen = plan_generation(GenerationRequest(seed=prompt_seed("Once upon"), continuation=True))
    assert gen.content_text.startswith(" ")
    assert count_text_tokens(gen.content_text) == gen.completion_tokens


def test_minimal_instance_bounds_its_size() -> None:
    nested: dict[str, Any] = {"type": "string"}
    for _ in range(10):
        nested = {"type": "array", "items": nested, "minItems": 16}
    with pytest.raises(InvalidRequest):
        minimal_instance(nested)
    with pytest.raises(InvalidRequest):
        minimal_instance({"$ref": "#"})
    with pytest.raises(InvalidRequest) as err:
        minimal_instance({"type": "string", "minLength": 10**9}, param="tools")
    assert err.value.param == "tools"
    assert len(minimal_instance({"type": "string", "minLength": 50}, word="ab")) >= 50
