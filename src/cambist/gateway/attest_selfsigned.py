"""Verifier for the reference engine's self-signed evidence (``cambist-selfsigned-v1``).

Checks what every format shares (nonce, freshness, expiry, measurement
allow-list), then that the signing key is one the trust policy lists and that
the Ed25519 signature covers the document. It proves the engine holds a key
the operator trusts, not that any hardware protects the data.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cambist.domain.attestation import (
    SELF_SIGNED_FORMAT,
    AttestationEvidence,
    TrustPolicy,
    Verdict,
    check_common,
)

__all__ = ["SelfSignedVerifier"]


class SelfSignedVerifier:
    """``policy`` is read on every check, so a trust change (a key or measurement
    taken off the lists) applies at the next verification."""

    format = SELF_SIGNED_FORMAT

    def __init__(self, policy: Callable[[], TrustPolicy]) -> None:
        self._policy = policy

    def verify(self, evidence: AttestationEvidence, nonce: str, now: float) -> Verdict:
        """Accept ``evidence`` only if every check passes."""
        if evidence.format != self.format:
            return Verdict.failed(f"format {evidence.format!r} is not {self.format!r}")
        policy = self._policy()
        common = check_common(evidence, nonce, now, policy)
        if common is not None:
            return common
        if evidence.public_key not in policy.trusted_keys:
            return Verdict.failed("signing key is not trusted")
        try:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(evidence.public_key,
                                                                      validate=True))
            key.verify(base64.b64decode(evidence.signature, validate=True),
                       evidence.signed_payload())
        except (ValueError, binascii.Error):
            return Verdict.failed("malformed key or signature")
        except InvalidSignature:
            return Verdict.failed("bad signature")
        return Verdict(ok=True, measurement=evidence.measurement, expires_at=evidence.expires_at)
