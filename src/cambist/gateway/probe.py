"""Probing an upstream: is it there, how fast does it answer, what does it serve.

``GET {base}/v1/models`` (with the upstream's API key when it has one) and
``GET {root}/health``, each under a timeout. Failures are reported by kind
(``connect``, ``timeout``, ``status_<code>``, ``bad_json``), never with the
upstream's answer or its key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from cambist.domain.endpoint import Endpoint
from cambist.gateway.routing import Credentials

__all__ = ["ProbeResult", "probe_endpoint"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a probe saw. ``ok`` means ``/models`` answered 200 with a model list."""

    endpoint_id: str
    ok: bool
    latency_ms: float | None
    models: list[str] = field(default_factory=list)
    serves_model: bool = False
    models_status: int | None = None
    health_status: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON object."""
        return {
            "endpoint_id": self.endpoint_id, "ok": self.ok, "latency_ms": self.latency_ms,
            "models": self.models, "serves_model": self.serves_model,
            "models_status": self.models_status, "health_status": self.health_status,
            "error": self.error,
        }


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "read"


def _model_ids(body: bytes) -> list[str] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]


async def _health(http: httpx.AsyncClient, root: str, timeout_s: float) -> int | None:
    try:
        return (await http.get(f"{root}/health", timeout=timeout_s)).status_code
    except httpx.HTTPError:
        return None


async def probe_endpoint(
    http: httpx.AsyncClient, endpoint: Endpoint, credentials: Credentials | None = None,
    timeout_s: float = 5.0,
) -> ProbeResult:
    """Probe ``endpoint`` (see the module docstring)."""
    base = endpoint.url.rstrip("/")
    root = base.removesuffix("/v1")
    headers: dict[str, str] = {}
    if endpoint.api_key_env and credentials is not None:
        key = credentials(endpoint.api_key_env)
        if key:
            headers["authorization"] = f"Bearer {key}"
    health = await _health(http, root, timeout_s)
    started = time.monotonic()
    try:
        response = await http.get(f"{root}/v1/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return ProbeResult(endpoint.id, False, None, health_status=health, error=_reason(exc))
    latency = round((time.monotonic() - started) * 1000.0, 1)
    status = response.status_code
    if status != 200:
        return ProbeResult(endpoint.id, False, latency, models_status=status,
                           health_status=health, error=f"status_{status}")
    models = _model_ids(response.content)
    if models is None:
        return ProbeResult(endpoint.id, False, latency, models_status=status,
                           health_status=health, error="bad_json")
    return ProbeResult(endpoint.id, True, latency, models, endpoint.model in models, status,
                       health)
