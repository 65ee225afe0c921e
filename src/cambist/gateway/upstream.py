"""Forwarding to upstream endpoints, with retries before the first byte.

Each attempt sends the same serialized body to the best route the table
offers. An attempt fails over to the next candidate when nothing has reached
the client yet: connection errors, timeouts and 5xx open the endpoint's
circuit (passive health); 408/429 only move on. A stream counts as started
once its first event has arrived; a non-streamed response once its whole
body is read and parsed. Other 4xx answers are the caller's problem and are
passed back as they are. httpx errors are translated here and nowhere else.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson

from cambist.domain.events import EventKind
from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import AttemptFailure, NoHealthyEndpoint, UpstreamFailed
from cambist.gateway.protocol import Kind, ParsedRequest
from cambist.gateway.routing import EndpointRoute
from cambist.gateway.sse import sse_events

__all__ = ["PATHS", "UpstreamResult", "close_quietly", "forward"]

PATHS: dict[Kind, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


@dataclass(slots=True)
class UpstreamResult:
    """A started upstream response.

    Streams carry the open ``response``, the ``first_event`` and the iterator
    of the rest (``events``); the caller must close the response. Complete
    responses carry ``body`` (and ``parsed`` when 2xx); their response is closed.
    ``passthrough`` marks an upstream 4xx returned to the client unchanged.
    """

    route: EndpointRoute
    response: httpx.Response
    attempts: int
    ttfb_ms: float
    body: bytes = b""
    parsed: dict[str, Any] | None = None
    first_event: str | None = None
    events: AsyncIterator[str] | None = None
    passthrough: bool = False


class _AttemptFailed(Exception):
    def __init__(self, failure: AttemptFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _fail(route: EndpointRoute, reason: str, *, opens_circuit: bool = True) -> _AttemptFailed:
    return _AttemptFailed(
        AttemptFailure(route.id, route.supplier, reason, True, opens_circuit)
    )


async def close_quietly(response: httpx.Response) -> None:
    """Close an upstream response even while the caller is being cancelled."""
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(httpx.HTTPError):
            await response.aclose()


def _transport_reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connect"
    return "read"


async def forward(
    deps: GatewayDeps, request: ParsedRequest, request_id: str, started: float,
    tenant: str | None = None,
) -> UpstreamResult:
    """Send ``request`` to the best route, failing over up to ``max_attempts`` times.

    Raises ``NoHealthyEndpoint`` when no route was available at all and
    ``UpstreamFailed`` (with every attempt's reason) when all attempts failed.
    A returned non-stream result has already released its in-flight slot; a
    stream's slot is released by whoever finishes relaying it.
    """
    table = deps.routes
    failures: list[AttemptFailure] = []
    tried: set[str] = set()
    for attempt in range(1, deps.settings.max_attempts + 1):
        route = table.choose(request.model, tried, tenant)
        if route is None:
            break
        tried.add(route.id)
        score = table.marginal_cost(route)
        table.acquire(route)
        try:
            result = await _attempt(deps, route, request, request_id, started)
        except _AttemptFailed as exc:
            table.release(route)
            table.record_failure(route, open_circuit=exc.failure.opens_circuit)
            failures.append(exc.failure)
            _emit(deps, request_id, request.model, route, attempt, score, exc.failure.reason)
            continue
        except BaseException:
            table.release(route)
            raise
        result.attempts = attempt
        if result.events is None:
            table.release(route)
        if not result.passthrough:
            table.record_success(route, result.ttfb_ms)
        _emit(deps, request_id, request.model, route, attempt, score, "ok")
        return result
    if not failures:
        raise NoHealthyEndpoint(f"no healthy endpoint serves {request.model} right now")
    raise UpstreamFailed(failures)


def _emit(
    deps: GatewayDeps,
    request_id: str,
    model: str,
    route: EndpointRoute,
    attempt: int,
    score: float,
    outcome: str,
) -> None:
    deps.emit({
        "ts": deps.clock.now(),
        "kind": EventKind.ROUTE,
        "subject": request_id,
        "data": {
            "model": model,
            "endpoint": route.id,
            "supplier": route.supplier,
            "attempt": attempt,
            "outcome": outcome,
            "marginal_cost_per_mtok": score if math.isfinite(score) else None,
            "in_flight": deps.routes.stats(route.id).in_flight,
        },
    })


async def _attempt(
    deps: GatewayDeps,
    route: EndpointRoute,
    request: ParsedRequest,
    request_id: str,
    started: float,
) -> UpstreamResult:
    http_request = deps.http.build_request(
        "POST",
        route.url(PATHS[request.kind]),
        content=request.payload,
        headers={"content-type": "application/json", "x-request-id": request_id},
        timeout=deps.settings.timeout(),
    )
    try:
        response = await deps.http.send(http_request, stream=True)
    except httpx.HTTPError as exc:
        raise _fail(route, _transport_reason(exc)) from None
    ttfb_ms = (time.monotonic() - started) * 1000.0
    result = UpstreamResult(route, response, 0, ttfb_ms)
    try:
        status = response.status_code
        if status >= 500:
            raise _fail(route, f"status_{status}")
        if status in (408, 429):
            raise _fail(route, f"status_{status}", opens_circuit=False)
        if status >= 300:
            result.body = await response.aread()
            result.passthrough = True
        elif request.stream:
            result.events = sse_events(response.aiter_lines())
            result.first_event = await anext(result.events)
            result.ttfb_ms = (time.monotonic() - started) * 1000.0
        else:
            result.body = await response.aread()
            parsed = orjson.loads(result.body)
            if not isinstance(parsed, dict):
                raise _fail(route, "bad_json")
            result.parsed = parsed
    except httpx.HTTPError as exc:
        await close_quietly(response)
        raise _fail(route, _transport_reason(exc)) from None
    except StopAsyncIteration:
        await close_quietly(response)
        raise _fail(route, "empty") from None
    except orjson.JSONDecodeError:
        await close_quietly(response)
        raise _fail(route, "bad_json") from None
    except BaseException:
        await close_quietly(response)
        raise
    if result.events is None:
        await close_quietly(response)
    return result
