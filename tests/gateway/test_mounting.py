"""The gateway routes mounted into a larger FastAPI app beside other /v1 routes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from cambist.domain.errors import CambistError
from cambist.gateway import gateway_routes

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
