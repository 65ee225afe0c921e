"""The confidential tier, end to end: two reference engines serve one model, one
in attested mode. Confidential traffic lands only on the attested one; standard
traffic keeps flowing to both; revoking the attestation makes confidential
requests fail clearly (never downgraded) while standard ones continue."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess, reference_engine

pytestmark = pytest.mark.e2e

SERVED = "e2e-confidential-qwen"
FORMAT = "cambist-selfsigned-v1"





@pytest.fixture
def engines(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An attested and a plain engine; the attested one's key file is in tmp_path."""
    key = tmp_path / "engine.pem"
    with reference_engine(SERVED, "--attest-key", str(key), "--attest-ttl", "30",
                          time_scale=0.02) as attested, \
            reference_engine(SERVED, time_scale=0.02) as plain:
        yield {"attested": attested, "plain": plain, "key": str(key)}


def _trust(home: Path, key: str) -> None:
    """What an operator does: print the engine's public key and measurement and
    put them in the exchange's trust policy."""
    out = subprocess.run([sys.executable, "-m", "cambist.engine.attest", key, "--model",
                          "qwen2.5-7b", "--sku", "L4-24GB"], capture_output=True, text=True,
                         check=True).stdout
    entry = json.loads(out)
    (home / "attestation-trust.json").write_text(json.dumps({
        "trusted_keys": [entry["public_key"]], "measurements": [entry["measurement"]]}))


def _add(ex: ExchangeProcess, url: str, *extra: str) -> str:
    r = ex.cli("endpoints", "add", url, "--model", SERVED, "--price-in", "0.01",
               "--price-out", "0.02", "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["id"]


def _wait(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s")


def test_confidential_routes_only_to_verified_attestation(
        exchange: ExchangeProcess, engines: dict[str, str]) -> None:
    _trust(exchange.home, engines["key"])
    attested = _add(exchange, engines["attested"], "--attestation", FORMAT)
    plain = _add(exchange, engines["plain"])
    tenant_key = exchange.connection["demo_key"]
    try:
        with exchange.client() as c:
            ep = c.get(f"/v1/endpoints/{attested}").json()
            assert ep["attestation"]["status"] == "verified", ep
            assert c.get(f"/v1/endpoints/{plain}").json()["attestation"] is None

            def listed() -> bool:
                models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
                return SERVED in models and "confidential" in json.dumps(models[SERVED])

            _wait(listed, "the model lists the confidential tier")

        client = openai.OpenAI(base_url=f"{exchange.base_url}/v1", api_key=tenant_key)
        seen: dict[str, set[str]] = {"confidential": set(), "standard": set()}
        for tier in ("confidential", "standard"):
            for _ in range(8):
                raw = client.chat.completions.with_raw_response.create(
                    model=SERVED, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                    extra_body={"privacy": tier})
                seen[tier].add(raw.headers["x-cambist-endpoint"])
        assert seen["confidential"] == {attested}

        r = exchange.cli("endpoints", "attest", attested, "--revoke", "--reason", "test")
        assert r.returncode == 0 and "revoked" in r.stdout, r.stdout + r.stderr

        def refused() -> bool:
            with httpx.Client(base_url=exchange.base_url, timeout=10, headers={
                    "authorization": f"Bearer {tenant_key}"}) as h:
                r = h.post("/v1/chat/completions", json={
                    "model": SERVED, "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 4, "privacy": "confidential"})
            if r.status_code == 200:
                return False
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert "confidential" in err["message"] and SERVED in err["message"], err
            return True

        _wait(refused, "confidential requests refused after revocation", timeout=5)
        ok = client.chat.completions.create(model=SERVED, max_tokens=4,
                                            messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content is not None
    finally:
        for ep_id in (attested, plain):
            exchange.cli("endpoints", "remove", ep_id)
