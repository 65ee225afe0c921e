"""The HTTP application: gateway, control-plane REST API and dashboard in one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from cambist import __version__
from cambist.api.errors import install_error_handlers
from cambist.app.exchange import Exchange
from cambist.app.metrics import MetricsSnapshot, metrics_route
from cambist.gateway.app import gateway_routes

__all__ = ["create_app"]


def create_app(ex: Exchange) -> FastAPI:
    """The ASGI app for an exchange; its lifespan starts and stops the loops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ex.start()
        try:
            yield
        finally:
            await ex.stop()

    app = FastAPI(title="Cambist", version=__version__, lifespan=lifespan,
                  description="The exchange and router for inference compute.")
    install_error_handlers(app)
    app.router.routes.extend(gateway_routes(ex.gateway))

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "role": ex.role})

    app.add_route("/health", health, methods=["GET"])
    snapshot_loop = MetricsSnapshot(ex)
    ex.loops.append(snapshot_loop)
    app.router.routes.append(metrics_route(ex, snapshot_loop))
    if ex.control is not None:
        # Imported here so that a gateway-only process does not load them.
        from cambist.api import (
            routes_analytics,
            routes_billing,
            routes_budgets,
            routes_catalog,
            routes_deployments,
            routes_endpoints,
            routes_events,
            routes_history,
            routes_keys,
            routes_leases,
            routes_market,
            routes_privacy,
            routes_quote,
            routes_signals,
        )
        from cambist.web import dashboard_routes

        app.state.control_plane = ex.control
        for module in (routes_market, routes_leases, routes_deployments, routes_billing,
                       routes_catalog, routes_events, routes_history, routes_endpoints,
                       routes_keys, routes_privacy, routes_budgets, routes_signals, routes_quote,
                       routes_analytics):
            app.include_router(module.router)
        # The landing page at / and the dashboard under /ui (cambist.web).
        app.router.routes.extend(dashboard_routes(ex.control))
    return app
