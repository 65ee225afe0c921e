"""Attestation of endpoints for the ``confidential`` privacy tier.

An endpoint that claims to run inside a trusted execution environment answers
``GET /attestation?nonce=N`` with *evidence*: a document naming its format, a
launch measurement (a digest of what runs), the caller's nonce, a validity
window, and a signature over all of it. A verifier for that format checks the
signature against keys it trusts; the common checks here (nonce, freshness,
expiry, measurement allow-list) apply to every format, so a real verifier for
AMD SEV-SNP, Intel TDX or NVIDIA GPU reports only adds its own signature chain.

This module is pure: the signature check itself lives with a verifier that
can use a crypto library (``cambist.gateway.attest_selfsigned``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

__all__ = [
    "SELF_SIGNED_FORMAT",
    "AttestationError",
    "AttestationEvidence",
    "AttestationVerifier",
    "TrustPolicy",
    "Verdict",
    "check_common",
    "valid_nonce",
    "verified_until",
]

SELF_SIGNED_FORMAT = "cambist-selfsigned-v1"
"""The reference engine's format: an Ed25519 signature with a local key. A test
harness for the whole path, not a confidentiality claim."""

_NONCE = re.compile(r"^[0-9a-f]{32,128}$")
_HEX = re.compile(r"^[0-9a-f]{16,128}$")


class AttestationError(ValueError):
    """Evidence that is not even well formed."""


def valid_nonce(nonce: str) -> bool:
    """A nonce is 32–128 lowercase hex characters (at least 128 bits)."""
    return bool(_NONCE.match(nonce))


@dataclass(frozen=True, slots=True)
class AttestationEvidence:
    """One attestation document as an endpoint returns it."""

    format: str
    measurement: str
    nonce: str
    issued_at: float
    expires_at: float
    public_key: str
    signature: str
    claims: Mapping[str, str] = field(default_factory=dict)

    def signed_payload(self) -> bytes:
        """The canonical bytes the signature covers: every field but the signature,
        as JSON with sorted keys, so signer and verifier agree byte for byte."""
        return orjson.dumps({
            "format": self.format, "measurement": self.measurement, "nonce": self.nonce,
            "issued_at": self.issued_at, "expires_at": self.expires_at,
            "public_key": self.public_key, "claims": dict(self.claims),
        }, option=orjson.OPT_SORT_KEYS)

    def as_json(self) -> dict[str, Any]:
        """The document as a JSON object."""
        return {
            "format": self.format, "measurement": self.measurement, "nonce": self.nonce,
            "issued_at": self.issued_at, "expires_at": self.expires_at,
            "public_key": self.public_key, "signature": self.signature,
            "claims": dict(self.claims),
        }

    @classmethod
    def from_json(cls, data: object) -> AttestationEvidence:
        """Parse a document; raises ``AttestationError`` naming the bad field."""
        if not isinstance(data, dict):
            raise AttestationError("evidence must be a JSON object")
        strings = ("format", "measurement", "nonce", "public_key", "signature")
        for name in strings:
            if not isinstance(data.get(name), str) or not data[name]:
                raise AttestationError(f"evidence field {name!r} must be a non-empty string")
        for name in ("issued_at", "expires_at"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise AttestationError(f"evidence field {name!r} must be a number")
        claims = data.get("claims", {})
        if not isinstance(claims, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in claims.items()):
            raise AttestationError("evidence field 'claims' must map strings to strings")
        if not _HEX.match(data["measurement"]):
            raise AttestationError("evidence field 'measurement' must be a hex digest")
        return cls(
            format=data["format"], measurement=data["measurement"], nonce=data["nonce"],
            issued_at=float(data["issued_at"]), expires_at=float(data["expires_at"]),
            public_key=data["public_key"], signature=data["signature"], claims=claims,
        )


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """What a verifier accepts. Empty allow-lists accept nothing: trust is opt-in.

    ``max_validity_s`` caps how long one document may claim to stay valid (an
    endpoint cannot attest itself for a year); ``max_skew_s`` tolerates clocks
    that disagree a little about ``issued_at``.
    """

    trusted_keys: frozenset[str] = frozenset()
    measurements: frozenset[str] = frozenset()
    max_validity_s: float = 600.0
    max_skew_s: float = 30.0

    @classmethod
    def from_json(cls, data: object) -> TrustPolicy:
        """Build from ``{"trusted_keys": [...], "measurements": [...], ...}``;
        raises ``AttestationError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise AttestationError("the trust policy must be a JSON object")
        lists: dict[str, frozenset[str]] = {}
        for name in ("trusted_keys", "measurements"):
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise AttestationError(f"trust policy {name!r} must be a list of strings")
            lists[name] = frozenset(value)
        numbers: dict[str, float] = {}
        for name, default in (("max_validity_s", 600.0), ("max_skew_s", 30.0)):
            value = data.get(name, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise AttestationError(f"trust policy {name!r} must be a positive number")
            numbers[name] = float(value)
        return cls(trusted_keys=lists["trusted_keys"], measurements=lists["measurements"],
                   max_validity_s=numbers["max_validity_s"], max_skew_s=numbers["max_skew_s"])


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of verifying one document. ``expires_at`` bounds how long an
    ``ok`` verdict may be relied on; ``reason`` names the failed check."""

    ok: bool
    reason: str | None = None
    measurement: str | None = None
    expires_at: float | None = None

    @classmethod
    def failed(cls, reason: str) -> Verdict:
        """A rejection for ``reason``."""
        return cls(ok=False, reason=reason)


class AttestationVerifier(Protocol):
    """Checks evidence of one ``format`` against a trust policy."""

    format: str

    def verify(self, evidence: AttestationEvidence, nonce: str, now: float) -> Verdict:
        """Accept or reject ``evidence`` that answered ``nonce`` at time ``now``."""
        ...


def check_common(evidence: AttestationEvidence, nonce: str, now: float,
                 policy: TrustPolicy) -> Verdict | None:
    """The checks every format shares; a rejection, or ``None`` when they pass.

    The nonce proves freshness (the document was made for this challenge, not
    replayed); the validity window and allow-list come from the policy.
    """
    if evidence.nonce != nonce:
        return Verdict.failed("nonce mismatch (replayed or stale evidence)")
    if evidence.issued_at > now + policy.max_skew_s:
        return Verdict.failed("issued in the future")
    if evidence.expires_at <= now:
        return Verdict.failed("expired")
    if evidence.expires_at - evidence.issued_at > policy.max_validity_s:
        return Verdict.failed("validity window longer than the policy allows")
    if evidence.measurement not in policy.measurements:
        return Verdict.failed("measurement not on the allow-list")
    return None


def verified_until(records: Mapping[str, Mapping[str, Any]], now: float) -> dict[str, float]:
    """Endpoint id → until when it may serve the confidential tier (verified, unexpired)."""
    out: dict[str, float] = {}
    for endpoint_id, row in records.items():
        expires = row.get("expires_at")
        if row.get("status") == "verified" and expires is not None and expires > now:
            out[endpoint_id] = float(expires)
    return out
