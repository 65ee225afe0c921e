"""Keys managed inside a caller's transaction, rotation and derived secrets."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.errors import Conflict, NotFound
from cambist.ledger.keys import Keyring


async def test_rotate_replaces_a_key(keyring: Keyring, tenant: str) -> None:
    old_id, old_secret = await keyring.create_key(tenant, "tenant-admin", "ci")
    new_id, new_secret = await keyring.rotate(old_id)
    assert new_id != old_id and new_secret != old_secret
    assert keyring.authenticate(old_secret) is None
    p = keyring.authenticate(new_secret)
    assert p is not None and (p.key_id, p.tenant_id, p.scope) == (new_id, tenant, "tenant-admin")
    old, new = await keyring.key_info(old_id), await keyring.key_info(new_id)
    assert old is not None and old["revoked_at"] is not None
    assert new is not None and new["name"] == "ci" and new["revoked_at"] is None
    assert "secret_hash" not in new
    with pytest.raises(Conflict, match="revoked"):
        await keyring.rotate(old_id)
    with pytest.raises(NotFound):
        await keyring.rotate("key_ghost")
    assert await keyring.key_info("key_ghost") is None


async def test_rotate_a_platform_admin_key(keyring: Keyring) -> None:
    kid, _ = await keyring.create_key(None, "admin", "ops")
    new_id, secret = await keyring.rotate(kid)
    p = keyring.authenticate(secret)
    assert p is not None and p.is_admin and p.tenant_id is None and p.key_id == new_id


async def test_derived_secrets_are_reproducible_only_with_the_seed(
    keyring: Keyring, tenant: str
) -> None:
    kid, secret = await keyring.create_key(tenant, "inference", seed="caller\x00idem-1")
    assert secret == keyring.derived_secret(kid, "caller\x00idem-1")
    assert secret != keyring.derived_secret(kid, "caller\x00idem-2")
    assert secret.startswith("cb-") and len(secret) > 40
    assert keyring.authenticate(secret) is not None
    other = Keyring(keyring._engine, keyring._clock, b"z" * 32)
    assert other.derived_secret(kid, "caller\x00idem-1") != secret


async def test_writes_in_a_rolled_back_transaction_leave_no_trace(
    keyring: Keyring, engine: AsyncEngine, tenant: str
) -> None:
    kid, secret = await keyring.create_key(tenant, "inference")

    class Abort(Exception):
        pass

    with pytest.raises(Abort):
        async with engine.begin() as conn:
            t2 = await keyring.create_tenant("beta", conn=conn)
            new_id, new_secret = await keyring.create_key(t2, "tenant-admin", conn=conn)
            await keyring.revoke(kid, conn=conn)
            assert keyring.authenticate(new_secret) is None  # memory waits for a commit
            raise Abort
    await keyring.refresh()
    assert keyring.authenticate(secret) is not None
    assert keyring.authenticate(new_secret) is None
    assert [t["name"] for t in await keyring.list_tenants()] == ["acme"]
    assert await keyring.key_info(new_id) is None


async def test_create_tenant_in_a_transaction_reports_conflicts(
    keyring: Keyring, engine: AsyncEngine, tenant: str
) -> None:
    async with engine.begin() as conn:
        with pytest.raises(Conflict):
            await keyring.create_tenant("acme", conn=conn)
        tid = await keyring.create_tenant("gamma", conn=conn)  # the transaction still works
        kid, _ = await keyring.create_key(tid, "inference", conn=conn)
    assert (await keyring.key_info(kid) or {})["tenant_id"] == tid
