from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.billing import Authenticator, Principal
from cambist.domain.clock import ManualClock
from cambist.domain.errors import Conflict, InvalidRequest, NotFound
from cambist.ledger.keys import Keyring, KeyringRefresh, ensure_server_secret


async def test_server_secret_is_created_once(engine: AsyncEngine) -> None:
    first, *others = await asyncio.gather(*(ensure_server_secret(engine) for _ in range(4)))
    assert len(first) == 32
    assert all(o == first for o in others)
    assert await ensure_server_secret(engine) == first


async def test_create_and_authenticate(keyring: Keyring, tenant: str) -> None:
    key_id, secret = await keyring.create_key(tenant, "inference", "laptop")
    assert secret.startswith("cb-") and len(secret) > 40
    assert keyring.authenticate(secret) == Principal(key_id, tenant, "inference")
    assert keyring.authenticate(secret + "x") is None
    assert keyring.authenticate("") is None
    checker: Authenticator = keyring
    assert checker.authenticate(secret) is not None


async def test_only_the_hmac_is_stored(keyring: Keyring, engine: AsyncEngine, tenant: str) -> None:
    _, secret = await keyring.create_key(tenant, "tenant-admin")
    async with engine.connect() as conn:
        row = (await conn.exec_driver_sql("SELECT prefix, secret_hash FROM api_keys")).one()
    assert row.prefix == secret[:10]
    assert row.secret_hash == hmac.new(b"k" * 32, secret.encode(), hashlib.sha256).hexdigest()
    listed = await keyring.list_keys(tenant)
    assert len(listed) == 1
    assert "secret_hash" not in listed[0] and secret not in str(listed)


async def test_admin_keys_have_no_tenant(keyring: Keyring, tenant: str) -> None:
    _, secret = await keyring.create_key(None, "admin")
    principal = keyring.authenticate(secret)
    assert principal is not None and principal.is_admin and principal.tenant_id is None
    with pytest.raises(InvalidRequest, match="no tenant"):
        await keyring.create_key(tenant, "admin")
    with pytest.raises(InvalidRequest, match="needs a tenant"):
        await keyring.create_key(None, "inference")
    with pytest.raises(ValueError, match="unknown scope"):
        await keyring.create_key(tenant, "root")
    with pytest.raises(NotFound):
        await keyring.create_key("ten_ghost", "inference")


async def test_revoke_is_immediate_locally_and_within_a_refresh_elsewhere(
    keyring: Keyring, engine: AsyncEngine, clock: ManualClock, tenant: str
) -> None:
    key_id, secret = await keyring.create_key(tenant, "inference")
    other = Keyring(engine, clock, b"k" * 32)  # another process
    loop = KeyringRefresh(other)
    assert loop.interval_s <= 0.5 and loop.name  # reload + interval stays under 1 s
    assert other.authenticate(secret) is None  # not loaded yet
    await loop.step(clock.now())
    assert other.authenticate(secret) is not None
    clock.advance(5)
    await keyring.revoke(key_id)
    assert keyring.authenticate(secret) is None
    await loop.step(clock.now())
    assert other.authenticate(secret) is None
    await keyring.revoke(key_id)  # idempotent
    keys = await keyring.list_keys()
    assert keys[0]["revoked_at"] == clock.now()
    with pytest.raises(NotFound):
        await keyring.revoke("key_ghost")


async def test_a_different_server_secret_knows_no_key(
    keyring: Keyring, engine: AsyncEngine, clock: ManualClock, tenant: str
) -> None:
    _, secret = await keyring.create_key(tenant, "inference")
    stranger = Keyring(engine, clock, b"z" * 32)
    await stranger.refresh()
    assert stranger.authenticate(secret) is None


async def test_tenants(keyring: Keyring, clock: ManualClock) -> None:
    a = await keyring.create_tenant("alpha")
    clock.advance(1)
    b = await keyring.create_tenant("beta", "ten_beta")
    assert a.startswith("ten_") and b == "ten_beta"
    assert [t["name"] for t in await keyring.list_tenants()] == ["alpha", "beta"]
    assert (await keyring.tenant(b))["name"] == "beta"  # type: ignore[index]
    assert await keyring.tenant("ten_ghost") is None
    with pytest.raises(Conflict):
        await keyring.create_tenant("alpha")
    with pytest.raises(ValueError, match="invalid tenant id"):
        await keyring.create_tenant("gamma", "bad:id")
    with pytest.raises(InvalidRequest):
        await keyring.create_tenant("   ")


async def test_list_keys_filters_by_tenant(keyring: Keyring, tenant: str) -> None:
    other = await keyring.create_tenant("other")
    await keyring.create_key(tenant, "inference", "a")
    await keyring.create_key(other, "inference", "b")
    await keyring.create_key(None, "admin", "root")
    assert [k["name"] for k in await keyring.list_keys(tenant)] == ["a"]
    assert len(await keyring.list_keys()) == 3


def test_short_server_secret_is_refused(keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Keyring(keyring._engine, ManualClock(), b"short")


class _SlowFirstConnect:
    """The engine, except that the first connection's close waits for ``go``:
    a reload that has read the keys but not yet swapped them in."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.armed = True
        self.read = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        armed, self.armed = self.armed, False
        async with self._engine.connect() as conn:
            yield conn
        if armed:
            self.read.set()
            await self.go.wait()


async def test_a_slow_reload_does_not_hide_a_key_created_meanwhile(
        keyring: Keyring, engine: AsyncEngine, tenant: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    slow = _SlowFirstConnect(engine)
    monkeypatch.setattr(keyring, "_engine", slow)
    stale = asyncio.create_task(keyring.refresh())  # the reload loop, mid-read
    await slow.read.wait()
    _, secret = await keyring.create_key(tenant, "inference")  # reloads itself
    assert keyring.authenticate(secret) is not None
    slow.go.set()
    await stale
    assert keyring.authenticate(secret) is not None
