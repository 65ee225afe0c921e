"""The reference engine's HTTP app: OpenAI-compatible routes over a simulated GPU.

``create_app(config)`` resolves the model and GPUs (raising typed errors when
it cannot), builds the core, its real-time driver and the service, and wires
thin routes. Errors are mapped to the OpenAI error shape here and only here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cambist.domain.attestation import valid_nonce
from cambist.domain.clock import Clock, SystemClock
from cambist.domain.errors import CambistError, InvalidRequest
from cambist.engine.attest import AttestationSigner, launch_measurement, load_or_create_key
from cambist.engine.config import EngineConfig, ResolvedEngine, resolve_engine
from cambist.engine.core import EngineCore
from cambist.engine.metrics import CONTENT_TYPE, EngineCollector, engine_registry, render_metrics
from cambist.engine.protocol import (
    RequestTooLarge,
    parse_chat,
    parse_completion,
    parse_embedding,
    parse_json_body,
)
from cambist.engine.runtime import EngineRuntime
from cambist.engine.serving import EngineService

__all__ = ["EngineConfig", "create_app", "error_body"]

log = logging.getLogger("cambist.engine")

_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed"}


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


async def _cambist_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CambistError)
    return _json(error_body(exc.message, exc.type, exc.param, exc.code), exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_TYPES.get(exc.status_code, "invalid_request")
    return _json(error_body(str(exc.detail), "invalid_request_error", None, code), exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("engine internal error on %s: %s", request.url.path, type(exc).__name__)
    return _json(error_body("internal engine error", "server_error", None, "internal_error"), 500)


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = RequestTooLarge(f"request body exceeds {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _respond(result: dict[str, Any] | AsyncIterator[bytes]) -> Response:
    if isinstance(result, dict):
        return _json(result)
    return StreamingResponse(
        result,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _attestation_route(signer: AttestationSigner, clock: Clock) -> Route:
    async def attestation(request: Request) -> Response:
        nonce = request.query_params.get("nonce", "")
        if not valid_nonce(nonce):
            raise InvalidRequest("nonce must be 32-128 lowercase hex characters",
                                 param="nonce")
        return _json(signer.evidence(nonce, clock.now()).as_json())

    return Route("/attestation", attestation, methods=["GET"])


def _signer(resolved: ResolvedEngine) -> AttestationSigner | None:
    config = resolved.config
    if config.attest_key is None:
        return None
    key = load_or_create_key(Path(config.attest_key))
    claims = {"model": resolved.served_name, "sku": config.sku,
              "gpu_count": str(config.gpu_count)}
    return AttestationSigner(
        key=key, measurement=launch_measurement(resolved.model.name, config.sku,
                                                config.gpu_count),
        claims=claims, ttl_s=config.attest_ttl_s)


def _routes(
    resolved: ResolvedEngine, service: EngineService, registry: CollectorRegistry
) -> list[Route]:
    limit = resolved.config.max_body_bytes
    name = resolved.served_name

    async def body_of(request: Request) -> dict[str, Any]:
        return parse_json_body(await _read_body(request, limit))

    async def chat(request: Request) -> Response:
        return _respond(await service.chat(parse_chat(await body_of(request), name)))

    async def completions(request: Request) -> Response:
        return _respond(await service.completion(parse_completion(await body_of(request), name)))

    async def embeddings(request: Request) -> Response:
        return _json(service.embeddings(parse_embedding(await body_of(request), name)))

    async def models(request: Request) -> Response:
        return _json(service.models())

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(registry), media_type=CONTENT_TYPE)

    return [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def create_app(config: EngineConfig, *, clock: Clock | None = None) -> Starlette:
    """The engine app for ``config``.

    Raises ``NotFound`` (unknown model), ``UnquotableOffer`` (SKU without
    figures) or ``InvalidRequest`` (model does not fit, bad settings).
    """
    resolved = resolve_engine(config)
    core = EngineCore(resolved.model, resolved.estimate, resolved.perf)
    runtime = EngineRuntime(core, time_scale=config.time_scale)
    service = EngineService(runtime, resolved.model, resolved.served_name, clock or SystemClock())
    collector = EngineCollector(
        runtime, resolved.served_name, lambda: service.embedding_prompt_tokens
    )
    registry = engine_registry(collector)
    routes = _routes(resolved, service, registry)
    signer = _signer(resolved)
    if signer is not None:
        routes.append(_attestation_route(signer, clock or SystemClock()))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await runtime.close()

    app = Starlette(
        routes=routes,
        exception_handlers={
            CambistError: _cambist_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.state.engine = resolved
    app.state.runtime = runtime
    return app
