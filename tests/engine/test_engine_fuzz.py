"""Arbitrary request bodies never crash the engine: a 200 or an OpenAI-shaped 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cambist.engine import EngineConfig, create_app

MODEL = "llama-3.1-8b"
APP = create_app(EngineConfig(MODEL, "H100-80GB-SXM", time_scale=0.0, max_body_bytes=8192))

scalars = (
    st.none() | st.booleans() | st.integers(-3, 300) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "bogus"])},
        optional={"content": json_values, "name": json_values, "tool_calls": json_values},
    ),
    max_size=3,
)
fields = {
    "model": st.sampled_from([MODEL, "other"]) | json_values,
    "messages": messages | json_values,
    "prompt": st.text(max_size=40) | json_values,
    "input": st.text(max_size=40) | json_values,
    "max_tokens": st.integers(-2, 40) | json_values,
    "max_completion_tokens": st.integers(-2, 40) | json_values,
    "n": json_values,
    "stream": st.booleans() | json_values,
    "stream_options": json_values,
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"}]) | json_values,
    "tools": json_values,
    "tool_choice": st.sampled_from(["auto", "none", "required"]) | json_values,
    "stop": json_values,
    "dimensions": json_values,
    "encoding_format": json_values,
}
bodies = st.fixed_dictionaries({}, optional=fields)
paths = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])


async def _post(path: str, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=APP)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
        return await client.post(path, json=body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=paths, body=bodies)
def test_arbitrary_bodies_get_a_clean_answer(path: str, body: dict[str, Any]) -> None:
    r = asyncio.run(_post(path, body))
    assert r.status_code in (200, 400, 404, 413), r.text
    if r.status_code != 200:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
