"""Assembling the gateway: its routes, and a standalone app around them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import exception_handlers, guarded
from cambist.gateway.serving import GatewayService

__all__ = ["FAST_PATHS", "create_gateway_app", "gateway_fast_path", "gateway_routes"]

FAST_PATHS = {"/v1/chat/completions": "chat_completions", "/v1/completions": "completions",
              "/v1/embeddings": "embeddings"}
"""The inference paths :func:`gateway_fast_path` serves directly, by route name."""


class _Endpoint:
    """A guarded endpoint as a plain ASGI app. Starlette calls an ASGI endpoint
    directly instead of wrapping it in ``request_response`` and its exception
    layer, which the guard makes redundant (a measurable share of a proxied
    request's CPU on the hot path)."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self._handler = guarded(handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handler(Request(scope, receive, send))
        await response(scope, receive, send)


def gateway_routes(deps: GatewayDeps) -> list[Route]:
    """The gateway's ``/v1/...`` routes, ready to add to a larger Starlette or
    FastAPI app. Each route turns its own errors into OpenAI-shaped responses,
    so they behave the same whatever exception handlers the host app has."""
    service = GatewayService(deps)

    async def chat(request: Request) -> Response:
        return await service.infer(request, "chat")

    async def completions(request: Request) -> Response:
        return await service.infer(request, "completions")

    async def embeddings(request: Request) -> Response:
        return await service.infer(request, "embeddings")

    return [
        Route("/v1/chat/completions", _Endpoint(chat), methods=["POST"],
              name="chat_completions"),
        Route("/v1/completions", _Endpoint(completions), methods=["POST"], name="completions"),
        Route("/v1/embeddings", _Endpoint(embeddings), methods=["POST"], name="embeddings"),
        Route("/v1/models", _Endpoint(service.models), methods=["GET"], name="models"),
    ]


def create_gateway_app(deps: GatewayDeps) -> Starlette:
    """A standalone gateway app (routes plus OpenAI-shaped 404/405/500 handlers).
    The caller owns ``deps.http`` and any loops (``RoutingRefresh``)."""
    return Starlette(routes=gateway_routes(deps), exception_handlers=exception_handlers())


def gateway_fast_path(app: ASGIApp, routes: list[BaseRoute]) -> ASGIApp:
    """Wrap a host app (e.g. the exchange's FastAPI app) so ``POST`` requests to
    the inference paths go straight to the gateway's endpoints among ``routes``
    (the host's router, holding :func:`gateway_routes`), skipping the host's
    middleware stack and route scan, which cost about as much CPU as the
    gateway's own work per proxied request (``bench/gateway``). The endpoints
    are guarded, so they answer every error themselves; everything else,
    lifespan included, goes to ``app``."""
    endpoints: dict[str, ASGIApp] = {}
    for route in routes:
        if isinstance(route, Route) and route.name in FAST_PATHS.values():
            endpoints[route.path] = route.app
    direct = {path: endpoints[path] for path in FAST_PATHS if path in endpoints}

    async def fast(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = direct.get(scope["path"])
            if endpoint is not None:
                scope.setdefault("app", app)
                await endpoint(scope, receive, send)
                return
        await app(scope, receive, send)

    return fast
