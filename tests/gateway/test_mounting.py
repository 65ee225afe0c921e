"""The gateway routes mounted into a larger FastAPI app beside other /v1 routes."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cambist.domain.errors import CambistError
from cambist.gateway import gateway_routes
from cambist.gateway.app import gateway_fast_path

from .conftest import Harness, chat_body


async def test_routes_mount_beside_other_v1_routes(gw_local: Harness) -> None:
    gw = gw_local
    await gw.dead_upstream("a")
    app = FastAPI()

    @app.get("/v1/keys")
    async def keys() -> dict:
        return {"keys": []}

    @app.exception_handler(CambistError)
    async def host_errors(_request: object, exc: CambistError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    app.router.routes.extend(gateway_routes(gw.deps))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/v1/keys")).json() == {"keys": []}
        r = await client.post("/v1/chat/completions", json=chat_body(),
                              headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"  # the gateway's own shape
        r = await client.get("/v1/models", headers={"authorization": f"Bearer {gw.secret}"})
        assert r.json()["object"] == "list"


async def test_fast_path_serves_inference_and_hands_everything_else_on(
        gw_local: Harness) -> None:
    gw = gw_local
    await gw.upstream("a")
    app = FastAPI()
    seen: list[str] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        seen.append(request.url.path)
        return await call_next(request)

    @app.get("/v1/keys")
    async def keys() -> dict:
        return {"keys": []}

    app.router.routes.extend(gateway_routes(gw.deps))
    fast = gateway_fast_path(app, app.router.routes)
    auth = {"authorization": f"Bearer {gw.secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast),
                                 base_url="http://t", headers=auth) as client:
        r = await client.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_a"
        r = await client.post("/v1/chat/completions", json=chat_body(),
                              headers={"authorization": "Bearer nope"})
        assert r.json()["error"]["code"] == "invalid_api_key"  # errors answered directly
        assert seen == []  # neither went through the host's middleware
        assert (await client.get("/v1/keys")).json() == {"keys": []}
        assert (await client.get("/v1/models")).json()["object"] == "list"
        assert (await client.post("/v1/keys")).status_code == 405
    assert seen == ["/v1/keys", "/v1/models", "/v1/keys"]
    assert len(gw.wallet.records) == 1
