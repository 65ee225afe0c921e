"""The attestation probe against a real reference engine in attested mode (ASGI),
recording verdicts in a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from cambist.domain.attestation import SELF_SIGNED_FORMAT
from cambist.domain.endpoint import Endpoint
from cambist.engine.attest import launch_measurement, load_or_create_key, public_key_b64
from cambist.engine.config import EngineConfig
from cambist.engine.server import create_app
from cambist.gateway.attest_selfsigned import SelfSignedVerifier
from cambist.gateway.attestation import AttestationProbe, TrustFile, verified_until
from cambist.gateway.registry import insert_local_endpoint
from cambist.store.db import migrate, open_engine, sqlite_url

MODEL, SKU = "llama-3.1-8b", "H100-80GB-SXM"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[dict]:
    key_path = tmp_path / "engine.pem"
    app = create_app(EngineConfig(MODEL, SKU, time_scale=0.0, attest_key=str(key_path),
                                  attest_ttl_s=30.0))
    trust = tmp_path / "trust.json"
    trust.write_bytes(orjson.dumps({
        "trusted_keys": [public_key_b64(load_or_create_key(key_path))],
        "measurements": [launch_measurement(MODEL, SKU, 1)]}))
    url = sqlite_url(tmp_path / "db.sqlite")
    migrate(url)
    db = open_engine(url)
    changes: list[int] = []

    async def changed() -> None:
        changes.append(1)

    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        probe = AttestationProbe(db, http, {SELF_SIGNED_FORMAT: SelfSignedVerifier(
            TrustFile(trust))}, on_change=changed)
        for ep_id in ("ep_attested", "ep_plain"):
            await insert_local_endpoint(db, Endpoint(
                id=ep_id, model=MODEL, url=f"http://{ep_id}/v1", supplier="local", owner=None,
                healthy=True, kind="local", created_at=0.0))
        await probe.records.claim("ep_attested", SELF_SIGNED_FORMAT)
        yield {"probe": probe, "trust": trust, "changes": changes, "http": http}
        await http.aclose()
    await db.dispose()


async def test_engine_answers_challenges(world: dict) -> None:
    http: httpx.AsyncClient = world["http"]
    bad = await http.get("http://engine/attestation", params={"nonce": "short"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "nonce"
    plain = create_app(EngineConfig(MODEL, SKU, time_scale=0.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=plain)) as c:
        assert (await c.get("http://engine/attestation", params={"nonce": "ab" * 16})
                ).status_code == 404


async def test_verify_then_distrust_then_revoke(world: dict) -> None:
    probe: AttestationProbe = world["probe"]
    now = time.time()  # the engine signs with the system clock
    await probe.step(now)
    rows = await probe.records.all()
    assert rows["ep_attested"]["status"] == "verified", rows["ep_attested"]["reason"]
    assert set(rows) == {"ep_attested"}  # the plain endpoint never claimed
    assert list(verified_until(rows, now)) == ["ep_attested"]
    assert world["changes"] == [1]
    # Expiry alone takes it out of the pool, before any new check.
    assert verified_until(rows, now + 31) == {}

    # The operator removes the measurement from the allow-list: next check fails.
    trust: Path = world["trust"]
    policy = orjson.loads(trust.read_bytes())
    trust.write_bytes(orjson.dumps({**policy, "measurements": []}))
    await probe.step(now + 1)
    rows = await probe.records.all()
    assert rows["ep_attested"]["status"] == "failed"
    assert "allow-list" in rows["ep_attested"]["reason"]
    assert verified_until(rows, now + 1) == {}
    assert world["changes"] == [1, 1]

    # Trust restored: verified again; then a revocation holds across checks.
    trust.write_bytes(orjson.dumps(policy))
    await probe.step(now + 2)
    assert (await probe.records.all())["ep_attested"]["status"] == "verified"
    assert await probe.records.revoke("ep_attested", "key compromised", now + 3)
    await probe.step(now + 4)
    rows = await probe.records.all()
    assert rows["ep_attested"]["status"] == "revoked"
    assert verified_until(rows, now + 4) == {}


async def test_unknown_format_and_unreachable(world: dict, tmp_path: Path) -> None:
    probe: AttestationProbe = world["probe"]
    ep = Endpoint(id="x", model=MODEL, url="http://engine/v1", supplier="local", owner=None,
                  healthy=True, kind="local")
    assert (await probe.check(ep, "intel-tdx", time.time())).reason == \
        "no verifier for format 'intel-tdx'"
    async with httpx.AsyncClient() as real:
        lonely = AttestationProbe(probe._engine, real, probe._verifiers)
        dead = Endpoint(id="y", model=MODEL, url="http://127.0.0.1:9/v1", supplier="local",
                        owner=None, healthy=True, kind="local")
        assert (await lonely.check(dead, SELF_SIGNED_FORMAT, time.time())).reason == \
            "attestation endpoint unreachable"
