"""Keeping the confidential pool honest: challenge attesting endpoints, verify,
record.

``AttestationProbe`` is a control loop. Each step it sends every endpoint that
claims an attestation format a fresh random nonce (``GET {root}/attestation``),
hands the evidence to the verifier for that format and stores the verdict.
An endpoint is confidential only while its last verdict is ``verified`` and
unexpired (``verified_until``); a failed check, a revoked trust entry or an
expiry takes it out of the pool, and a change triggers an immediate routing
refresh in this process (other gateway processes see it at their next refresh).

The trust policy is a JSON file (``TrustFile``) re-read when it changes, so an
operator revokes a key or a measurement by editing it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.attestation import (
    AttestationError,
    AttestationEvidence,
    AttestationVerifier,
    TrustPolicy,
    Verdict,
    verified_until,
)
from cambist.domain.endpoint import Endpoint
from cambist.gateway.registry import list_endpoints
from cambist.store.attestations import AttestationRecords

__all__ = ["AttestationProbe", "TrustFile", "verified_until"]

log = logging.getLogger("cambist.attestation")


class TrustFile:
    """The trust policy in a JSON file, re-read when its mtime changes. A missing
    file trusts nothing; a malformed one is logged and trusts nothing (fail closed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._policy = TrustPolicy()

    def __call__(self) -> TrustPolicy:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._policy = None, TrustPolicy()
            return self._policy
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self._policy = TrustPolicy.from_json(orjson.loads(self.path.read_bytes()))
            except (OSError, orjson.JSONDecodeError, AttestationError) as exc:
                log.warning("attestation trust file %s is unusable (%s): trusting nothing",
                            self.path, exc)
                self._policy = TrustPolicy()
        return self._policy


def _root(endpoint: Endpoint) -> str:
    return endpoint.url.rstrip("/").removesuffix("/v1")


class AttestationProbe:
    """Verify every attesting endpoint each ``interval_s``; shorter than the
    evidence's validity, so a healthy endpoint never lapses between checks."""

    name = "attestation"

    def __init__(self, engine: AsyncEngine, http: httpx.AsyncClient,
                 verifiers: Mapping[str, AttestationVerifier], *, interval_s: float = 10.0,
                 timeout_s: float = 5.0,
                 on_change: Callable[[], Awaitable[None]] | None = None) -> None:
        self._engine = engine
        self.records = AttestationRecords(engine)
        self._http = http
        self._verifiers = verifiers
        self.interval_s = interval_s
        self._timeout_s = timeout_s
        self._on_change = on_change

    async def check(self, endpoint: Endpoint, fmt: str, now: float) -> Verdict:
        """Challenge ``endpoint`` once and verify its answer."""
        verifier = self._verifiers.get(fmt)
        if verifier is None:
            return Verdict.failed(f"no verifier for format {fmt!r}")
        nonce = secrets.token_hex(16)
        try:
            response = await self._http.get(f"{_root(endpoint)}/attestation",
                                            params={"nonce": nonce}, timeout=self._timeout_s)
        except httpx.TimeoutException:
            return Verdict.failed("attestation request timed out")
        except httpx.HTTPError:
            return Verdict.failed("attestation endpoint unreachable")
        if response.status_code != 200:
            return Verdict.failed(f"attestation endpoint answered {response.status_code}")
        try:
            evidence = AttestationEvidence.from_json(orjson.loads(response.content))
        except orjson.JSONDecodeError:
            return Verdict.failed("evidence is not JSON")
        except AttestationError as exc:
            return Verdict.failed(str(exc))
        return verifier.verify(evidence, nonce, now)

    async def step(self, now: float) -> None:
        """Re-verify every claim; refresh routing when the confidential pool changed."""
        await self._verify(now, only=None)

    async def verify_now(self, endpoint_id: str, now: float) -> None:
        """Check one endpoint at once (just claimed), refreshing routing on a change."""
        await self._verify(now, only=endpoint_id)

    async def pool_changed(self) -> None:
        """Tell routing the confidential pool changed (e.g. an operator revoked)."""
        if self._on_change is not None:
            await self._on_change()

    async def _verify(self, now: float, only: str | None) -> None:
        claims = await self.records.all()
        if only is not None:
            claims = {k: v for k, v in claims.items() if k == only}
        if not claims:
            return
        before = set(verified_until(claims, now))
        endpoints = {e.id: e for e in await list_endpoints(self._engine)}
        after: set[str] = set()
        for endpoint_id, row in claims.items():
            endpoint = endpoints.get(endpoint_id)
            if endpoint is None or row.get("status") == "revoked":
                continue  # removed, or an operator's revocation holds until re-claimed
            verdict = await self.check(endpoint, row["format"], now)
            if verdict.ok:
                after.add(endpoint_id)
            elif row.get("status") != "failed" or row.get("reason") != verdict.reason:
                log.warning("endpoint %s failed attestation: %s", endpoint_id, verdict.reason)
            await self.records.record(
                endpoint_id, status="verified" if verdict.ok else "failed",
                reason=verdict.reason, measurement=verdict.measurement, checked_at=now,
                expires_at=verdict.expires_at)
        if before != after and self._on_change is not None:
            await self._on_change()
