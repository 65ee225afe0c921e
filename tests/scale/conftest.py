"""Fixtures for the scale tests: the real Redis of ``tests/services.py`` (fail
under ``CI=true``, skip elsewhere) with a key prefix private to each test,
deleted afterwards."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.services import require_redis


@pytest.fixture
def redis_url() -> str:
    """The test Redis (or fail/skip per the CI rule)."""
    return require_redis()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A Redis key prefix no other test uses; its keys are deleted after the test."""
    p = f"cambist-test-{secrets.token_hex(4)}"
    yield p
    keys = [k async for k in redis.scan_iter(match=f"{p}:*")]
    if keys:
        await redis.delete(*keys)
