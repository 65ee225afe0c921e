"""Forwarding to upstream endpoints, with retries before the first byte.

Each attempt sends the same serialized body to the best route the table
offers under the request's routing policy, with an explicit allow-list of
headers (:func:`cambist.gateway.privacy.upstream_headers`): the upstream's own
``Authorization`` when it has an API key, never anything of the caller's.
An attempt fails over to the next candidate when nothing has reached the
client yet: connection errors,
timeouts, 5xx and 401/403 (the upstream refused *our* credentials) open the
endpoint's circuit (passive health); 408/429 only move on. A ``Retry-After``
on a 429 or 503 keeps that endpoint out of routing until then. No attempt
starts after the request's retry budget is spent. A stream counts as started
once its first event has arrived; a non-streamed response once its whole
body is read and parsed. Other 4xx answers are the caller's problem and are
passed back as they are. Transport errors arrive translated by :mod:`.pool`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from cambist.domain.events import EventKind
from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import AttemptFailure, NoHealthyEndpoint, UpstreamFailed
from cambist.gateway.policy import Target
from cambist.gateway.pool import TransportError, UpstreamResponse
from cambist.gateway.privacy import upstream_headers
from cambist.gateway.protocol import Kind, ParsedRequest
from cambist.gateway.routing import EndpointRoute

__all__ = ["MAX_RETRY_AFTER_S", "PATHS", "Attempts", "UpstreamResult", "close_quietly",
           "forward", "retry_after_seconds"]

MAX_RETRY_AFTER_S = 3600.0
"""The longest an upstream's ``Retry-After`` keeps its endpoint out of routing."""

PATHS: dict[Kind, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}


@dataclass(slots=True)
class UpstreamResult:
    """A started upstream response.

    Streams carry the open ``response``, the first batch of events
    (``first_events``: what the first read brought) and the iterator of the
    rest (``events``, batch by batch); the caller must close the response. Complete
    responses carry ``body`` (and ``parsed`` when 2xx); their response is closed.
    ``passthrough`` marks an upstream 4xx returned to the client unchanged.
    """

    route: EndpointRoute
    response: UpstreamResponse
    attempts: int
    ttfb_ms: float
    body: bytes = b""
    parsed: dict[str, Any] | None = None
    first_events: list[bytes] | None = None
    events: AsyncIterator[list[bytes]] | None = None
    passthrough: bool = False


@dataclass(slots=True)
class Attempts:
    """The attempts of one request across the models it tries, and its retry
    budget: after the first attempt, none starts at or after ``deadline``."""

    deadline: float
    made: int = 0
    failures: list[AttemptFailure] = field(default_factory=list)

    def may_start(self, now: float) -> bool:
        """Whether another attempt may start now."""
        return self.made == 0 or now < self.deadline


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` that a ``Retry-After`` header asks to wait (delta
    seconds or an HTTP date), capped at :data:`MAX_RETRY_AFTER_S`."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value) if value.replace(".", "", 1).isdigit() \
            else parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


class _AttemptFailed(Exception):
    def __init__(self, failure: AttemptFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


def _fail(route: EndpointRoute, reason: str, *, opens_circuit: bool = True,
          retry_after_s: float | None = None) -> _AttemptFailed:
    return _AttemptFailed(
        AttemptFailure(route.id, route.supplier, reason, True, opens_circuit, retry_after_s)
    )


async def close_quietly(response: UpstreamResponse) -> None:
    """Give an upstream response's connection back (closing it when the body
    was not read to the end); never raises, safe while being cancelled."""
    with contextlib.suppress(Exception):
        response.close()


async def forward(
    deps: GatewayDeps, request: ParsedRequest, target: Target, attempts: Attempts,
    request_id: str, started: float, tenant: str | None = None,
) -> UpstreamResult:
    """Send ``request`` for ``target.model`` to the best route, failing over up
    to ``max_attempts`` times (once when the policy allows no fallbacks).

    Raises ``NoHealthyEndpoint`` when no route was available at all and
    ``UpstreamFailed`` (with every attempt's reason, of this model and those
    tried before it) when all attempts failed. A returned non-stream result has
    already released its in-flight slot; a stream's slot is released by
    whoever finishes relaying it.
    """
    table = deps.routes
    policy = target.policy
    payload = request.payload_for(target.model)
    tried: set[str] = set()
    limit = deps.settings.max_attempts if policy.allow_fallbacks else 1
    before = len(attempts.failures)
    for _ in range(limit):
        if not attempts.may_start(deps.clock.now()):
            break
        route = table.choose(target.model, tried, tenant, policy, request.parameters)
        if route is None:
            break
        tried.add(route.id)
        attempts.made += 1
        attempt = attempts.made
        score = table.marginal_cost(route)
        table.acquire(route)
        try:
            result = await _attempt(deps, route, request, payload, request_id, started)
        except _AttemptFailed as exc:
            table.release(route)
            table.record_failure(route, open_circuit=exc.failure.opens_circuit,
                                 retry_after_s=exc.failure.retry_after_s)
            attempts.failures.append(exc.failure)
            deps.metrics.upstream_error(target.model, route.id, exc.failure.reason)
            _emit(deps, request_id, target.model, route, attempt, score, exc.failure.reason)
            continue
        except BaseException:
            table.release(route)
            raise
        result.attempts = attempt
        if result.events is None:
            table.release(route)
        if not result.passthrough:
            table.record_success(route, result.ttfb_ms)
        deps.metrics.chose(target.model, route.id, route.supplier)
        _emit(deps, request_id, target.model, route, attempt, score, "ok")
        return result
    if len(attempts.failures) == before:
        raise NoHealthyEndpoint(f"no healthy endpoint serves {target.model} right now")
    raise UpstreamFailed(attempts.failures)


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
    payload: bytes,
    request_id: str,
    started: float,
) -> UpstreamResult:
    settings = deps.settings
    # upstream_headers builds the whole allow-listed set; the pool adds only
    # host and content-length.
    headers = upstream_headers(request.privacy, request_id, route.headers)
    try:
        response = await deps.upstream.post(
            route.url(PATHS[request.kind]), payload, headers,
            connect_s=settings.upstream_connect_timeout_s,
            read_s=settings.upstream_read_timeout_s)
    except TransportError as exc:
        raise _fail(route, exc.reason) from None
    ttfb_ms = (time.monotonic() - started) * 1000.0
    result = UpstreamResult(route, response, 0, ttfb_ms)
    try:
        status = response.status
        wait = (retry_after_seconds(response.headers.get("retry-after"), deps.clock.now())
                if status in (429, 503) else None)
        if status >= 500 or status in (401, 403):
            raise _fail(route, f"status_{status}", retry_after_s=wait)
        if status in (408, 429):
            raise _fail(route, f"status_{status}", opens_circuit=False, retry_after_s=wait)
        if status >= 300:
            result.body = await response.read()
            result.passthrough = True
        elif request.stream:
            result.events = response.events(route.stream_idle_timeout_s
                                             or settings.stream_idle_timeout_s)
            result.first_events = await anext(result.events)
            result.ttfb_ms = (time.monotonic() - started) * 1000.0
        else:
            result.body = await response.read()
            parsed = orjson.loads(result.body)
            if not isinstance(parsed, dict):
                raise _fail(route, "bad_json")
            result.parsed = parsed
    except TransportError as exc:
        await close_quietly(response)
        raise _fail(route, exc.reason) from None
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
