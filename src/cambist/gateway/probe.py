"""Probing an upstream: is it there, how fast does it answer, what does it serve,
how loaded is it.

``GET {base}/v1/models`` (with the upstream's API key when it has one) and
``GET {root}/health``, each under a timeout. Failures are reported by kind
(``connect``, ``timeout``, ``status_<code>``, ``bad_json``), never with the
upstream's answer or its key.

:class:`EngineLoad` is the loop that reads each own or local engine's
Prometheus ``/metrics`` (vLLM's names, which the reference engine exports too)
for its queue depth and TTFT, and hands them to the routing table's score.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from cambist.domain.endpoint import Endpoint
from cambist.gateway.routing import Credentials, EndpointRoute, RoutingTable

__all__ = ["EngineLoad", "ProbeResult", "engine_load", "probe_endpoint"]

log = logging.getLogger("cambist.gateway")

QUEUE_GAUGE = "vllm:num_requests_waiting"
TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"


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


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the first cumulative bucket holding quantile ``q``."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound if math.isfinite(bound) else None
    return None


def engine_load(text: str) -> tuple[int | None, tuple[float, float] | None]:
    """(requests waiting, (TTFT p50, p90) in ms) from an engine's Prometheus
    text: ``vllm:num_requests_waiting`` summed over its series, and the
    ``vllm:time_to_first_token_seconds`` histogram's buckets (cumulative since
    the engine started; ``None`` when absent or empty)."""
    waiting: float | None = None
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == QUEUE_GAUGE:
            waiting = sum(s.value for s in family.samples)
        elif family.name == TTFT_HISTOGRAM:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    ordered = sorted(buckets.items())
    p50, p90 = _quantile(ordered, 0.5), _quantile(ordered, 0.9)
    ttft = (p50 * 1000.0, p90 * 1000.0) if p50 is not None and p90 is not None else None
    return (None if waiting is None else int(waiting)), ttft


class EngineLoad:
    """Loop: read every healthy own or local endpoint's ``/metrics`` and tell
    the routing table its queue depth and TTFT (external providers have no
    such page). An engine that does not answer keeps its last figures; one
    without the gauges is left alone."""

    name = "gateway.engine-load"

    def __init__(self, table: RoutingTable, http: httpx.AsyncClient, *,
                 interval_s: float = 1.0, timeout_s: float = 1.0) -> None:
        self._table = table
        self._http = http
        self.interval_s = interval_s
        self._timeout_s = timeout_s

    def _routes(self) -> Iterable[EndpointRoute]:
        for model in self._table.models():
            for route in self._table.routes(model):
                if route.endpoint.kind != "external" and route.endpoint.healthy:
                    yield route

    async def _read(self, route: EndpointRoute) -> None:
        root = route.base_url.removesuffix("/v1")
        try:
            response = await self._http.get(f"{root}/metrics", timeout=self._timeout_s)
        except httpx.HTTPError:
            return
        if response.status_code != 200:
            return
        try:
            waiting, ttft = engine_load(response.text)
        except ValueError:
            log.debug("endpoint %s: unreadable /metrics", route.id)
            return
        if waiting is not None or ttft is not None:
            self._table.observe_engine(route.id, waiting or 0, ttft)

    async def step(self, now: float) -> None:
        """Read every engine once, concurrently."""
        await asyncio.gather(*(self._read(r) for r in self._routes()))
