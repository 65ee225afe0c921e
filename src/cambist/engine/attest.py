"""The reference engine's attested mode: signed evidence for the confidential tier.

With ``--attest-key PATH`` the engine answers ``GET /attestation?nonce=N`` with
an Ed25519-signed document (format ``cambist-selfsigned-v1``) binding the
caller's nonce to a launch measurement of what it serves. The key lives in a
local file, so this proves nothing about hardware: it is a harness that lets
the whole confidential path (evidence, verifier, routing, revocation) run and
be tested here. A real TEE engine would return SEV-SNP/TDX/GPU reports instead.

``python -m cambist.engine.attest KEYFILE --model M --sku S`` prints the public
key and measurement an operator adds to the exchange's trust policy.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cambist import __version__
from cambist.domain.attestation import SELF_SIGNED_FORMAT, AttestationEvidence

__all__ = ["AttestationSigner", "launch_measurement", "load_or_create_key", "main"]


def launch_measurement(model: str, sku: str, gpu_count: int) -> str:
    """A digest of what this engine runs: its code version and what it serves.

    Stands in for a TEE's launch measurement: any change to the engine build or
    to the model it serves changes the digest, so an allow-list pins both.
    """
    identity = {"engine": "cambist-reference", "version": __version__, "model": model,
                "sku": sku, "gpu_count": gpu_count}
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Read the PEM private key at ``path``, creating it (mode 0600) if absent."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The raw public key, base64: the form trust policies list."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@dataclass(slots=True)
class AttestationSigner:
    """Signs evidence for one engine. ``ttl_s`` is how long a document claims to
    stay valid; the exchange re-verifies well within it."""

    key: Ed25519PrivateKey
    measurement: str
    claims: dict[str, str]
    ttl_s: float = 60.0

    def evidence(self, nonce: str, now: float) -> AttestationEvidence:
        """A signed document answering ``nonce``."""
        unsigned = AttestationEvidence(
            format=SELF_SIGNED_FORMAT, measurement=self.measurement, nonce=nonce,
            issued_at=now, expires_at=now + self.ttl_s, public_key=public_key_b64(self.key),
            signature="-", claims=self.claims,
        )
        signature = base64.b64encode(self.key.sign(unsigned.signed_payload())).decode()
        return AttestationEvidence(
            format=unsigned.format, measurement=unsigned.measurement, nonce=nonce,
            issued_at=unsigned.issued_at, expires_at=unsigned.expires_at,
            public_key=unsigned.public_key, signature=signature, claims=self.claims,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Print ``{"public_key", "measurement"}`` for a key file (created if absent)."""
    p = argparse.ArgumentParser(prog="python -m cambist.engine.attest",
                                description="Print what a trust policy needs for an engine.")
    p.add_argument("key_file", type=Path)
    p.add_argument("--model", required=True)
    p.add_argument("--sku", required=True)
    p.add_argument("--gpu-count", type=int, default=1)
    args = p.parse_args(argv)
    try:
        key = load_or_create_key(args.key_file)
    except (OSError, ValueError) as exc:
        print(f"cambist engine attest: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps({"public_key": public_key_b64(key), "measurement":
                        launch_measurement(args.model, args.sku, args.gpu_count)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
