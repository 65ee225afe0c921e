"""Attestation evidence: signing, every verifier check, the trust policy file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import orjson
import pytest

from cambist.domain.attestation import (
    SELF_SIGNED_FORMAT,
    AttestationError,
    AttestationEvidence,
    TrustPolicy,
)
from cambist.domain.endpoint import Endpoint
from cambist.engine.attest import (
    AttestationSigner,
    launch_measurement,
    load_or_create_key,
    public_key_b64,
)
from cambist.engine.attest import main as attest_main
from cambist.gateway.attest_selfsigned import SelfSignedVerifier
from cambist.gateway.attestation import TrustFile, verified_until

NONCE = "ab" * 16
NOW = 1_000_000.0


@pytest.fixture
def signer(tmp_path: Path) -> AttestationSigner:
    key = load_or_create_key(tmp_path / "engine.pem")
    return AttestationSigner(key=key, measurement=launch_measurement("llama-3.1-8b",
                                                                     "H100-80GB-SXM", 1),
                             claims={"model": "llama-3.1-8b"}, ttl_s=60.0)


def _policy(signer: AttestationSigner, **kw: object) -> TrustPolicy:
    args: dict = {"trusted_keys": frozenset({public_key_b64(signer.key)}),
                  "measurements": frozenset({signer.measurement})}
    args.update(kw)
    return TrustPolicy(**args)


def test_key_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "k" / "engine.pem"
    first = load_or_create_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert public_key_b64(load_or_create_key(path)) == public_key_b64(first)
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError):
        load_or_create_key(tmp_path / "bad.pem")


def test_valid_evidence_verifies(signer: AttestationSigner) -> None:
    evidence = signer.evidence(NONCE, NOW)
    verdict = SelfSignedVerifier(lambda: _policy(signer)).verify(evidence, NONCE, NOW + 1)
    assert verdict.ok, verdict.reason
    assert verdict.expires_at == NOW + 60.0
    assert verdict.measurement == signer.measurement
    # The document survives a JSON round trip byte for byte.
    again = AttestationEvidence.from_json(orjson.loads(orjson.dumps(evidence.as_json())))
    assert SelfSignedVerifier(lambda: _policy(signer)).verify(again, NONCE, NOW).ok


@pytest.mark.parametrize(("change", "reason"), [
    ({"nonce": "cd" * 16}, "nonce mismatch"),
    ({"measurement": "00" * 32}, "measurement not on the allow-list"),
    ({"expires_at": NOW - 1}, "expired"),
    ({"issued_at": NOW + 3600}, "issued in the future"),
    ({"expires_at": NOW + 10_000}, "validity window"),
    ({"claims": {"model": "something-else"}}, "bad signature"),
    ({"format": "amd-sev-snp"}, "is not"),
])
def test_each_check_rejects(signer: AttestationSigner, change: dict, reason: str) -> None:
    doc = signer.evidence(NONCE, NOW).as_json()
    doc.update(change)
    # Re-signing is not possible for an attacker; only the field changes.
    verdict = SelfSignedVerifier(lambda: _policy(signer)).verify(
        AttestationEvidence.from_json(doc), NONCE, NOW + 1)
    assert not verdict.ok
    assert reason in (verdict.reason or "")


def test_untrusted_key_and_forged_signature(signer: AttestationSigner, tmp_path: Path) -> None:
    other = AttestationSigner(key=load_or_create_key(tmp_path / "other.pem"),
                              measurement=signer.measurement, claims={}, ttl_s=60.0)
    verifier = SelfSignedVerifier(lambda: _policy(signer))
    assert verifier.verify(other.evidence(NONCE, NOW), NONCE, NOW).reason == \
        "signing key is not trusted"
    # The other key's signature under the trusted key's name does not verify.
    forged = other.evidence(NONCE, NOW).as_json()
    forged["public_key"] = public_key_b64(signer.key)
    verdict = verifier.verify(AttestationEvidence.from_json(forged), NONCE, NOW)
    assert verdict.reason == "bad signature"
    forged["signature"] = "!!!"
    verdict = verifier.verify(AttestationEvidence.from_json(forged), NONCE, NOW)
    assert verdict.reason == "malformed key or signature"


def test_empty_policy_trusts_nothing(signer: AttestationSigner) -> None:
    verdict = SelfSignedVerifier(TrustPolicy).verify(signer.evidence(NONCE, NOW), NONCE, NOW)
    assert not verdict.ok


@pytest.mark.parametrize("doc", [
    [], {"format": "x"}, {"format": "x", "measurement": "zz" * 16, "nonce": "n",
                          "public_key": "k", "signature": "s", "issued_at": 1,
                          "expires_at": 2},
    {"format": "x", "measurement": "ab" * 16, "nonce": "n", "public_key": "k",
     "signature": "s", "issued_at": True, "expires_at": 2},
    {"format": "x", "measurement": "ab" * 16, "nonce": "n", "public_key": "k",
     "signature": "s", "issued_at": 1, "expires_at": 2, "claims": {"a": 1}},
])
def test_malformed_evidence_is_named(doc: object) -> None:
    with pytest.raises(AttestationError):
        AttestationEvidence.from_json(doc)


def test_trust_file_reloads_and_fails_closed(signer: AttestationSigner, tmp_path: Path) -> None:
    path = tmp_path / "trust.json"
    trust = TrustFile(path)
    assert trust() == TrustPolicy()
    path.write_bytes(orjson.dumps({"trusted_keys": [public_key_b64(signer.key)],
                                   "measurements": [signer.measurement]}))
    assert trust().measurements == {signer.measurement}
    path.write_text("{not json")
    os.utime(path, ns=(1, 1))  # a different mtime, as a real edit would have
    assert trust() == TrustPolicy()
    with pytest.raises(AttestationError):
        TrustPolicy.from_json({"measurements": "abc"})
    with pytest.raises(AttestationError):
        TrustPolicy.from_json({"max_validity_s": -1})


def test_verified_until_and_tiers() -> None:
    rows = {"a": {"status": "verified", "expires_at": NOW + 5},
            "b": {"status": "verified", "expires_at": NOW - 5},
            "c": {"status": "failed", "expires_at": None},
            "d": {"status": "revoked", "expires_at": NOW + 5}}
    assert verified_until(rows, NOW) == {"a": NOW + 5}
    ep = Endpoint(id="a", model="m", url="http://x/v1", supplier="local", owner=None,
                  healthy=True, kind="local")
    assert "confidential" not in ep.privacy_tiers
    from dataclasses import replace
    assert "confidential" in replace(ep, attested_until=NOW + 5).privacy_tiers
    # An attested upstream that keeps data is still not confidential.
    assert "confidential" not in replace(ep, attested_until=NOW + 5, zdr=False).privacy_tiers


def test_operator_tool_prints_trust_entries(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert attest_main([str(tmp_path / "k.pem"), "--model", "llama-3.1-8b",
                        "--sku", "H100-80GB-SXM"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["measurement"] == launch_measurement("llama-3.1-8b", "H100-80GB-SXM", 1)
    assert len(base64.b64decode(out["public_key"])) == 32
    assert SELF_SIGNED_FORMAT == "cambist-selfsigned-v1"
