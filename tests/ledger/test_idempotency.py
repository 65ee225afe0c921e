"""Idempotent mutations (on every backend): one outcome per key, atomically."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.clock import ManualClock
from cambist.domain.errors import Conflict, InvalidRequest
from cambist.ledger.idempotency import IdempotencyStore, IdempotentCall
from cambist.ledger.keys import Keyring
from cambist.store.schema import api_keys, idempotency


@pytest.fixture
def store(engine: AsyncEngine, clock: ManualClock) -> IdempotencyStore:
    return IdempotencyStore(engine, clock)


async def _count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _call(key: str = "k-1", scope: str = "key_admin", **request: Any) -> IdempotentCall:
    return IdempotentCall(scope, key, {"op": "test", **request})


async def test_without_a_key_the_action_just_runs(store: IdempotencyStore) -> None:
    runs: list[int] = []

    async def act(conn: AsyncConnection) -> dict:
        runs.append(1)
        return {"n": len(runs)}

    assert await store.run(None, act) == ({"n": 1}, False)
    assert await store.run(None, act) == ({"n": 2}, False)


async def test_a_repeated_key_returns_the_first_outcome(
    store: IdempotencyStore, keyring: Keyring, engine: AsyncEngine, tenant: str
) -> None:
    async def act(conn: AsyncConnection) -> dict:
        kid, _ = await keyring.create_key(tenant, "inference", conn=conn)
        return {"id": kid}

    first, replayed = await store.run(_call(), act)
    assert not replayed
    again, replayed = await store.run(_call(), act)
    assert replayed and again == first
    assert await _count(engine, api_keys) == 1


async def test_same_key_other_request_is_a_conflict(store: IdempotencyStore) -> None:
    async def act(conn: AsyncConnection) -> dict:
        return {"ok": True}

    await store.run(_call(name="a"), act)
    with pytest.raises(Conflict, match="different request"):
        await store.run(_call(name="b"), act)


async def test_keys_are_scoped_to_the_caller(store: IdempotencyStore) -> None:
    async def act(conn: AsyncConnection) -> dict:
        return {"scope": "whoever ran first"}

    _, r1 = await store.run(_call(scope="key_a"), act)
    _, r2 = await store.run(_call(scope="key_b"), act)
    assert (r1, r2) == (False, False)


async def test_a_failed_action_stores_nothing(
    store: IdempotencyStore, keyring: Keyring, engine: AsyncEngine, tenant: str
) -> None:
    async def boom(conn: AsyncConnection) -> dict:
        await keyring.create_key(tenant, "inference", conn=conn)
        raise RuntimeError("upstream broke")

    with pytest.raises(RuntimeError):
        await store.run(_call(), boom)
    assert await _count(engine, api_keys) == 0  # rolled back with the claim
    assert await _count(engine, idempotency) == 0

    async def fine(conn: AsyncConnection) -> dict:
        return {"ok": 1}

    assert await store.run(_call(), fine) == ({"ok": 1}, False)


async def test_concurrent_repeats_act_once(
    store: IdempotencyStore, keyring: Keyring, engine: AsyncEngine, tenant: str
) -> None:
    async def act(conn: AsyncConnection) -> dict:
        kid, _ = await keyring.create_key(tenant, "inference", conn=conn)
        await asyncio.sleep(0.01)  # widen the race window
        return {"id": kid}

    results = await asyncio.gather(*(store.run(_call(), act) for _ in range(6)))
    assert len({r["id"] for r, _ in results}) == 1
    assert sum(1 for _, replayed in results if not replayed) == 1
    assert await _count(engine, api_keys) == 1


async def test_records_expire(
    store: IdempotencyStore, engine: AsyncEngine, clock: ManualClock
) -> None:
    runs: list[int] = []

    async def act(conn: AsyncConnection) -> dict:
        runs.append(1)
        return {"n": len(runs)}

    await store.run(_call(), act)
    clock.advance(store.ttl_s + 1)
    assert await store.run(_call(), act) == ({"n": 2}, False)
    assert await _count(engine, idempotency) == 1


async def test_the_key_itself_is_not_stored(store: IdempotencyStore, engine: AsyncEngine) -> None:
    async def act(conn: AsyncConnection) -> dict:
        return {}

    await store.run(_call("my-very-own-key"), act)
    async with engine.connect() as conn:
        row = (await conn.execute(select(idempotency))).one()
    assert "my-very-own-key" not in str(tuple(row))


def test_call_validation() -> None:
    with pytest.raises(InvalidRequest):
        _call("")
    with pytest.raises(InvalidRequest):
        _call("x" * 129)
    with pytest.raises(InvalidRequest):
        _call("tab\there")
    assert IdempotentCall.resolve("s", None, None, {}) is None
    assert IdempotentCall.resolve("s", "h", None, {}) == IdempotentCall("s", "h", {})
    assert IdempotentCall.resolve("s", None, "f", {}) == IdempotentCall("s", "f", {})
    with pytest.raises(InvalidRequest, match="differ"):
        IdempotentCall.resolve("s", "h", "f", {})
    assert _call(a=1).request_hash == IdempotentCall("key_admin", "k-1",
                                                     {"a": 1, "op": "test"}).request_hash
    assert _call().seed != _call(scope="other").seed
