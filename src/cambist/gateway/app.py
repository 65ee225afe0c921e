"""Assembling the gateway: its routes, and a standalone app around them."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import exception_handlers, guarded
from cambist.gateway.serving import GatewayService

__all__ = ["create_gateway_app", "gateway_routes"]


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
        Route("/v1/chat/completions", guarded(chat), methods=["POST"], name="chat_completions"),
        Route("/v1/completions", guarded(completions), methods=["POST"], name="completions"),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"], name="embeddings"),
        Route("/v1/models", guarded(service.models), methods=["GET"], name="models"),
    ]


def create_gateway_app(deps: GatewayDeps) -> Starlette:
    """A standalone gateway app (routes plus OpenAI-shaped 404/405/500 handlers).
    The caller owns ``deps.http`` and any loops (``RoutingRefresh``)."""
    return Starlette(routes=gateway_routes(deps), exception_handlers=exception_handlers())
