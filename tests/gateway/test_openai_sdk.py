"""The official ``openai`` SDK against a real uvicorn-served gateway."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import MODEL, Harness
from .upstream_app import PIECES

MESSAGES = [{"role": "user", "content": "Say hello."}]


def sdk(gw: Harness, http: httpx.AsyncClient, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=key or gw.secret,
                              max_retries=0, http_client=http)


async def test_sdk_chat_non_stream(gw: Harness) -> None:
    await gw.upstream("a")
    async with httpx.AsyncClient(trust_env=False) as http:
        client = sdk(gw, http)
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=64)
        completion = raw.parse()
        assert completion.choices[0].message.content == "".join(PIECES)
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        assert raw.headers["x-cambist-endpoint"] == "ep_a"
        models = await client.models.list()
        assert [m.id for m in models.data] == [MODEL]
    [rec] = gw.wallet.records
    assert rec.completion_tokens == completion.usage.completion_tokens


async def test_sdk_chat_stream_with_and_without_usage(gw: Harness) -> None:
    await gw.upstream("a")
    async with httpx.AsyncClient(trust_env=False) as http:
        client = sdk(gw, http)
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        assert text == "".join(PIECES)
        assert usage is not None and usage.prompt_tokens > 0

        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]
        assert all(c.usage is None for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(PIECES)
    assert [r.status for r in gw.wallet.records] == ["ok", "ok"]


async def test_sdk_sees_typed_errors(gw: Harness) -> None:
    await gw.upstream("a")
    async with httpx.AsyncClient(trust_env=False) as http:
        with pytest.raises(openai.AuthenticationError) as auth_err:
            await sdk(gw, http, "sk-nope").chat.completions.create(
                model=MODEL, messages=MESSAGES)
        assert auth_err.value.code == "invalid_api_key"
        with pytest.raises(openai.NotFoundError) as nf:
            await sdk(gw, http).chat.completions.create(model="nope", messages=MESSAGES)
        assert nf.value.code == "model_not_found"
