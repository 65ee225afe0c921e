"""Fixtures: real loopback upstreams and a real gateway, both served by uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from starlette.types import ASGIApp

from cambist.api import routes_endpoints
from cambist.api.errors import install_error_handlers
from cambist.app.http_protocol import HeadHoldingProtocol
from cambist.domain.clock import ManualClock
from cambist.domain.endpoint import Endpoint, EndpointKind
from cambist.gateway import (
    GatewayDeps,
    GatewaySettings,
    RoutingTable,
    create_gateway_app,
)
from cambist.gateway.registry import list_endpoints
from cambist.ledger.plans import PlanBook
from cambist.store.schema import metadata
from cambist.testing import FakeAuthenticator, FakePriceList, FakeWallet

from .upstream_app import FakeUpstream

TENANT = "ten_acme"
MODEL = "llama-3.1-8b"


class Servers:
    """Uvicorn servers on free loopback ports, all stopped together on exit."""

    def __init__(self) -> None:
        self._running: list[tuple[uvicorn.Server, asyncio.Task[None], socket.socket]] = []

    async def start(self, app: ASGIApp, http: Any = "h11") -> str:
        """Serve ``app`` (``http``: uvicorn's protocol); returns its base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(
            app, lifespan="off", log_level="critical", ws="none", http=http,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        self._running.append((server, task, sock))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.002)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def __aenter__(self) -> Servers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server, _, _ in self._running:
            server.should_exit = True
        await asyncio.gather(*(task for _, task, _ in self._running))
        for _, _, sock in self._running:
            sock.close()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Harness:
    """A gateway wired to in-memory fakes, plus helpers to add upstreams."""

    def __init__(
        self, stack: contextlib.AsyncExitStack, settings: GatewaySettings, *, in_process: bool,
        home: Path | None = None, plans: PlanBook | None = None,
        idle_timeouts: dict[str, float] | None = None,
    ) -> None:
        self.plans = plans or PlanBook()
        self.stack = stack
        self.in_process = in_process
        self.home = home
        self.secrets: dict[str, str] = {}
        self.db: AsyncEngine | None = None
        self.api: httpx.AsyncClient | None = None
        self.clock = ManualClock()
        self.auth = FakeAuthenticator()
        self.prices = FakePriceList()
        self.price = self.prices.set(MODEL, "0.20", "0.80")
        self.wallet = FakeWallet({TENANT: Decimal("10")})
        self.secret, self.principal = self.auth.issue(TENANT)
        self.table = RoutingTable(self.clock, credentials=self.secrets.get,
                                  stream_idle_timeouts=idle_timeouts)
        self.endpoints: list[Endpoint] = []
        self.events: list[dict[str, Any]] = []
        self.settings = settings
        self.url = ""
        self.client: httpx.AsyncClient

    async def start(self) -> None:
        self.servers = await self.stack.enter_async_context(Servers())
        http = await self.stack.enter_async_context(httpx.AsyncClient(trust_env=False))
        deps = GatewayDeps(
            authenticator=self.auth, prices=self.prices, wallet=self.wallet, routes=self.table,
            clock=self.clock, http=http, settings=self.settings, plans=self.plans,
            on_event=self.events.append,
        )
        self.deps = deps
        self.stack.push_async_callback(deps.upstream.aclose)
        self.app = create_gateway_app(deps)
        if self.in_process:
            self.url = "http://gateway.test"
        else:
            # Cambist's own server protocol, as `cambist gateway` serves it.
            self.url = await self.servers.start(self.app, HeadHoldingProtocol)
        self.client = await self.stack.enter_async_context(
            self.http_client(headers={"authorization": f"Bearer {self.secret}"})
        )

    def http_client(self, **kw: Any) -> httpx.AsyncClient:
        """A client of the gateway (in process through ASGI, or over loopback)."""
        transport = httpx.ASGITransport(app=self.app) if self.in_process else None
        return httpx.AsyncClient(
            base_url=self.url, trust_env=False, timeout=10, transport=transport, **kw
        )

    async def upstream(
        self,
        name: str,
        *,
        model: str = MODEL,
        cost_per_hour: str = "2.00",
        capacity_tok_s: float = 1000.0,
        max_concurrency: int = 8,
        context_length: int = 8192,
        healthy: bool = True,
        reasoning: bool = False,
        url: str | None = None,
        kind: EndpointKind = "deployment",
        prices: tuple[str, str] | None = None,
        api_key: str | None = None,
        **traits: Any,
    ) -> FakeUpstream:
        """Start a fake upstream (or point at ``url``) and add it to the routing table.

        ``prices`` are the declared (input, output) $/Mtok of an external or local
        endpoint; ``api_key`` makes the fake require it, and the gateway read it
        from a (fake) environment variable; ``traits`` are further ``Endpoint``
        fields (``supplier``, ``quantization``, ``zdr``, ``data_collection``, ...).
        """
        fake = FakeUpstream(name, reasoning=reasoning, api_key=api_key, served=(model,))
        if url is None:
            url = await self.servers.start(fake.app)
        if api_key is not None:
            traits["api_key_env"] = f"{name.upper()}_API_KEY"
            self.secrets[traits["api_key_env"]] = api_key
        fields: dict[str, Any] = {"supplier": f"sup_{name}", **traits}
        self.endpoints.append(Endpoint(
            id=f"ep_{name}", model=model, url=url, owner=None,
            healthy=healthy, cost_per_hour=Decimal(cost_per_hour) if kind == "deployment"
            else Decimal(0), capacity_tok_s=capacity_tok_s if kind == "deployment" else 0.0,
            max_concurrency=max_concurrency, context_length=context_length,
            created_at=1_700_000_000.0, kind=kind,
            input_price_per_mtok=Decimal(prices[0]) if prices else None,
            output_price_per_mtok=Decimal(prices[1]) if prices else None, **fields,
        ))
        self.table.swap(self.endpoints)
        return fake

    async def start_api(self) -> httpx.AsyncClient:
        """The REST ``/v1/endpoints`` routes on a SQLite store (admin key client)."""
        if self.api is not None:
            return self.api
        assert self.home is not None
        db = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
        self.stack.push_async_callback(db.dispose)
        async with db.begin() as conn:
            await conn.run_sync(metadata.create_all)
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(routes_endpoints.router)
        # The routes reach the control plane only for its store, clock and keys.
        app.state.control_plane = SimpleNamespace(db=db, clock=self.clock, auth=self.auth)
        self.admin_secret, _ = self.auth.issue(None, scope="admin")
        self.db = db
        self.api = await self.stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test",
            headers={"authorization": f"Bearer {self.admin_secret}"}))
        return self.api

    async def register_local(self, name: str, *, model: str = MODEL,
                             prices: tuple[str, str] = ("0.05", "0.10"), **body: Any
                             ) -> FakeUpstream:
        """Start a fake server, register it through ``POST /v1/endpoints`` and
        load what the store then holds into the routing table."""
        api = await self.start_api()
        fake = FakeUpstream(name, served=(model,))
        url = await self.servers.start(fake.app)
        r = await api.post("/v1/endpoints", json={
            "url": url, "model": model, "input_price_per_mtok": prices[0],
            "output_price_per_mtok": prices[1], "supplier": f"sup_{name}",
            "context_length": 8192, **body})
        assert r.status_code == 201, r.text
        assert self.db is not None
        stored = {e.id: e for e in await list_endpoints(self.db)}
        self.endpoints.append(stored[r.json()["id"]])
        self.table.swap(self.endpoints)
        return fake

    async def dead_upstream(self, name: str, **kw: Any) -> None:
        """An endpoint on a port where nothing listens."""
        await self.upstream(name, url=f"http://127.0.0.1:{free_port()}", **kw)


@pytest.fixture
def idle_timeouts() -> dict[str, float]:
    """Per-upstream stream idle timeouts of the ``gw`` harness's routing table."""
    return {}


@pytest.fixture
def settings() -> GatewaySettings:
    return GatewaySettings(upstream_connect_timeout_s=2.0, upstream_read_timeout_s=5.0)


@pytest.fixture
def plans() -> PlanBook:
    """Which plan each tenant is on (parametrize to test limits)."""
    return PlanBook()


@pytest.fixture
async def gw(settings: GatewaySettings, plans: PlanBook, tmp_path: Path,
             idle_timeouts: dict[str, float]) -> AsyncIterator[Harness]:
    """The gateway served by uvicorn on a loopback port."""
    async with contextlib.AsyncExitStack() as stack:
        harness = Harness(stack, settings, in_process=False, home=tmp_path, plans=plans,
                          idle_timeouts=idle_timeouts)
        await harness.start()
        yield harness


@pytest.fixture
async def gw_local(settings: GatewaySettings, plans: PlanBook, tmp_path: Path
                   ) -> AsyncIterator[Harness]:
    """The gateway called in process through ``httpx.ASGITransport``."""
    async with contextlib.AsyncExitStack() as stack:
        harness = Harness(stack, settings, in_process=True, home=tmp_path, plans=plans)
        await harness.start()
        yield harness


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hello, please."}],
            **extra}
