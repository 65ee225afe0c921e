"""Assembling an exchange: every component built once from the settings and
wired explicitly. ``role="up"`` is the whole exchange (control plane, gateway,
market, deploy); ``role="gateway"`` is the gateway alone on the same store."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.api.context import ControlPlane
from cambist.app.events import EventBuffer
from cambist.app.metrics import RouteCounts
from cambist.config import Settings
from cambist.deploy import DeployController, HealthProbe, LeaseDesk, LeaseSync, MarketFeed, Records
from cambist.deploy.health import engine_in_flight
from cambist.deploy.recovery import recover
from cambist.domain.clock import Clock, SystemClock
from cambist.domain.schedule import Loop, RealTimeScheduler
from cambist.gateway.deps import GatewayDeps, GatewaySettings
from cambist.gateway.registry import RoutingRefresh, upsert_external_endpoints
from cambist.gateway.routing import RoutingTable
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring, KeyringRefresh, ensure_server_secret
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.prices import PriceBook, PriceBookRefresh
from cambist.ledger.wallet import TenantWallet, WalletRefresh
from cambist.market.book import OfferBook
from cambist.market.history import PriceHistory
from cambist.perf.model import PerfModel
from cambist.providers.local import LocalGpu
from cambist.providers.registry import build_default_registry
from cambist.store.db import migrate, open_engine
from cambist.store.events import EventLog

__all__ = ["Exchange", "Role", "open_exchange"]

log = logging.getLogger("cambist.app")

Role = Literal["up", "gateway"]


@dataclass
class Exchange:
    """A running exchange's parts; :meth:`start` and :meth:`stop` bracket its life."""

    settings: Settings
    role: Role
    clock: Clock
    db: AsyncEngine
    http: httpx.AsyncClient
    keyring: Keyring
    journal: Journal
    prices: PriceBook
    wallet: TenantWallet
    outbox: UsageOutbox
    flusher: OutboxFlusher
    events: EventLog
    buffer: EventBuffer
    route_counts: RouteCounts
    routes: RoutingTable
    gateway: GatewayDeps
    loops: list[Loop] = field(default_factory=list)
    control: ControlPlane | None = None
    scheduler: RealTimeScheduler | None = None

    async def start(self) -> None:
        """Start every control loop."""
        self.scheduler = RealTimeScheduler(self.clock, self.loops)
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop loops, stop engines this process runs, flush metering, close."""
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.control is not None:
            await self.control.controller.close()
        await self.flusher.recover()
        await self.buffer.step(self.clock.now())
        self.outbox.close()
        await self.http.aclose()
        await self.db.dispose()


async def open_exchange(settings: Settings, role: Role = "up",
                        clock: Clock | None = None) -> Exchange:
    """Build (and recover) an exchange on ``settings.home``."""
    clock = clock or SystemClock()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    await asyncio.to_thread(migrate, settings.db_url)
    db = open_engine(settings.db_url)
    keyring = Keyring(db, clock, await ensure_server_secret(db))
    await keyring.refresh()
    journal = Journal(db, clock)
    prices = PriceBook(db, clock)
    await prices.load()
    # One outbox per process: gateways are named by their port, which is stable
    # across restarts, so a restarted gateway replays what its crash left.
    owner = role if role == "up" else f"{role}-{settings.port}"
    outbox = UsageOutbox(settings.home / f"usage-outbox-{owner}.jsonl",
                         offset_key=f"outbox_offset:{owner}")
    flusher = OutboxFlusher(outbox, db, journal)
    await flusher.recover()  # records of requests completed before a crash
    wallet = TenantWallet(journal, outbox, clock)
    await wallet.load()
    events = EventLog(db)
    buffer = EventBuffer(events)
    route_counts = RouteCounts()

    def on_route(row: dict[str, Any]) -> None:
        buffer.add(row)
        route_counts.add(row)

    # External upstreams from config: rows with stable ids, keys read from the
    # environment here (by variable name, once per routing swap), never stored.
    declared = [e for u in settings.upstreams for e in u.endpoints(clock.now())]
    await upsert_external_endpoints(db, declared, clock.now(), retire_others=role == "up")
    routes = RoutingTable(clock, credentials=os.environ.get)
    refresh = RoutingRefresh(db, routes, clock, declared=declared)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000,
                                                 max_keepalive_connections=200))
    gw_settings = GatewaySettings(retry_budget_s=settings.retry_budget_s,
                                  declared_price_markup=settings.markup)
    gateway = GatewayDeps(authenticator=keyring, prices=prices, wallet=wallet, routes=routes,
                          clock=clock, http=http, settings=gw_settings,
                          plans=settings.plan_book(), on_event=on_route)
    ex = Exchange(settings=settings, role=role, clock=clock, db=db, http=http, keyring=keyring,
                  journal=journal, prices=prices, wallet=wallet, outbox=outbox, flusher=flusher,
                  events=events, buffer=buffer, route_counts=route_counts, routes=routes,
                  gateway=gateway)
    ex.loops = [refresh, KeyringRefresh(keyring), PriceBookRefresh(prices), flusher,
                WalletRefresh(wallet), buffer]
    if role == "up":
        ex.control, feed = await _control_plane(ex, refresh)
        ex.loops += [ex.control.controller, feed, LeaseSync(ex.control.desk),
                     HealthProbe(ex.control.records, ex.control.controller, http,
                                 interval_s=settings.health_interval_s)]
        # price history: OHLC/volume rollups of the book and the leases (market/history.py)
        ex.loops.append(PriceHistory(db, ex.control.book, interval_s=settings.market_interval_s))
    await refresh.step(clock.now())
    return ex


async def _control_plane(ex: Exchange, refresh: RoutingRefresh) \
        -> tuple[ControlPlane, MarketFeed]:
    s = ex.settings
    registry = build_default_registry(
        s.home / "suppliers", seed=s.seed, provision_delay_s=s.provision_delay_s,
        spot_preemption_per_hour=s.spot_preemption_per_hour, time_scale=s.engine_time_scale,
        local_gpus=[LocalGpu(g.sku, g.count, g.price_per_gpu_hour) for g in s.local_gpus],
        local_engine_command=s.local_engine_command)
    book = OfferBook(ex.events)
    feed = MarketFeed(registry, book, interval_s=s.market_interval_s)
    await feed.step(ex.clock.now())
    records = Records(ex.db)
    perf = PerfModel()
    desk = LeaseDesk(book=book, suppliers=registry, records=records, journal=ex.wallet,
                     credit=ex.wallet, events=ex.events, clock=ex.clock,
                     fee_rate=s.platform_fee_rate, period_s=s.lease_period_s)
    controller = DeployController(records=records, desk=desk, perf=perf, events=ex.events,
                                  clock=ex.clock, time_scale=s.engine_time_scale,
                                  interval_s=s.reconcile_interval_s,
                                  in_flight=partial(engine_in_flight, ex.http),
                                  endpoints_changed=lambda: refresh.step(ex.clock.now()))
    await recover(records, controller, s.home / "suppliers", ex.http, ex.clock.now())
    cp = ControlPlane(clock=ex.clock, db=ex.db, book=book, desk=desk, controller=controller,
                      records=records, perf=perf, events=ex.events, auth=ex.keyring,
                      keyring=ex.keyring, journal=ex.journal, wallet=ex.wallet,
                      prices=ex.prices, price_book=ex.prices)
    return cp, feed
