"""Assembling an exchange: every component built once from the settings and
wired explicitly. ``role="up"`` is the whole exchange (control plane, gateway,
market, deploy); ``role="gateway"`` is the gateway alone on the same store.

With ``settings.redis_url``, rate limits and credit are shared by every process
through Redis (:mod:`cambist.gateway.limits_redis`, :mod:`cambist.ledger.shared_wallet`);
on PostgreSQL the control loops run only in the elected leader
(:mod:`cambist.app.leader`)."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.app.events import EventBuffer
from cambist.app.leader import AdvisoryLockElection, LeaderOnly, Leadership, SoleLeader
from cambist.app.metrics import RouteCounts
from cambist.config import Settings
from cambist.domain.clock import Clock, SystemClock
from cambist.domain.schedule import Loop, RealTimeScheduler
from cambist.gateway.deps import GatewayDeps, GatewaySettings
from cambist.gateway.limits import RateLimiter
from cambist.gateway.limits_redis import LimitSync, SharedRateLimiter
from cambist.gateway.probe import EngineLoad
from cambist.gateway.registry import RoutingRefresh, upsert_external_endpoints
from cambist.gateway.routing import RoutingTable
from cambist.ledger.budgets import KeyBudgetRefresh, KeyBudgets
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring, KeyringRefresh, ensure_server_secret
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.prices import PriceBook, PriceBookRefresh
from cambist.ledger.shared_wallet import SharedWallet
from cambist.ledger.wallet import TenantWallet, WalletRefresh
from cambist.store.db import DatabaseUnavailable, migrate, open_engine, redacted_url
from cambist.store.events import EventLog

if TYPE_CHECKING:
    from cambist.api.context import ControlPlane

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
    leadership: Leadership = field(default_factory=SoleLeader)
    redis: Redis | None = None
    name: str = "up"
    """This process's stable name: its outbox, its Redis exposure, its logs."""

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
        await self.leadership.close()
        if isinstance(self.wallet, SharedWallet):
            await self.wallet.push()  # our exposure, now only what is left held
        if self.redis is not None:
            await self.redis.aclose()
        await self.gateway.upstream.aclose()
        await self.http.aclose()
        await self.db.dispose()


def process_name(settings: Settings, role: Role, worker: int | None = None) -> str:
    """A name that is stable across restarts and unique among the processes of
    one store: ``up`` alone on SQLite, else the role and port (and worker), so a
    restarted process replays the outbox its crash left."""
    if role == "up":
        return f"up-{settings.port}" if settings.database_url else "up"
    return f"gateway-{settings.port}" + (f"-w{worker}" if worker is not None else "")


async def _redis(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    client = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise DatabaseUnavailable(
            f"cannot reach Redis at {redacted_url(settings.redis_url)} ({exc}); start it or "
            "unset CAMBIST_REDIS_URL") from None
    return client


async def open_exchange(settings: Settings, role: Role = "up", clock: Clock | None = None,
                        worker: int | None = None) -> Exchange:
    """Build (and recover) an exchange on ``settings.home``; ``worker`` is the
    index of a ``cambist gateway --workers N`` process."""
    clock = clock or SystemClock()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    await asyncio.to_thread(migrate, settings.db_url)
    db = open_engine(settings.db_url)
    keyring = Keyring(db, clock, await ensure_server_secret(db))
    await keyring.refresh()
    journal = Journal(db, clock)
    prices = PriceBook(db, clock)
    await prices.load()
    # One outbox per process, named stably (process_name), so a restarted
    # process replays what its crash left.
    owner = process_name(settings, role, worker)
    outbox = UsageOutbox(settings.home / f"usage-outbox-{owner}.jsonl",
                         offset_key=f"outbox_offset:{owner}")
    redis = await _redis(settings)
    wallet: TenantWallet
    limiter: RateLimiter | None = None
    if redis is None:
        # Plans' daily allowances and monthly pools are spent before prepaid credit.
        wallet = TenantWallet(journal, outbox, clock, settings.plan_book(),
                              settings.allowance_reset_hour)
        flusher = OutboxFlusher(outbox, db, journal, clock=clock)
    else:
        wallet = SharedWallet(journal, outbox, clock, redis, process=owner,
                              prefix=settings.redis_prefix, slack=settings.credit_slack,
                              plans=settings.plan_book(),
                              reset_hour=settings.allowance_reset_hour)
        await wallet.load_books()  # what reporting the recovered outbox needs
        flusher = OutboxFlusher(outbox, db, journal, reporter=wallet, clock=clock)
        limiter = SharedRateLimiter(settings.plan_book(), clock, redis,
                                    prefix=settings.redis_prefix,
                                    slack_fraction=settings.limit_slack_fraction)
    await flusher.recover()  # records of requests completed before a crash
    await wallet.load()
    budgets = KeyBudgets(db, clock, outbox)  # per-key spend limits (ledger/budgets.py)
    await budgets.load()
    events = EventLog(db)
    buffer = EventBuffer(events)
    route_counts = RouteCounts()

    def on_route(row: dict[str, Any]) -> None:
        route_counts.add(row)
        data = row["data"]
        # A first-try success is in its usage record (endpoint, supplier) and the
        # metrics; logging it too cost a JSON row per request (bench/gateway).
        if data["outcome"] != "ok" or data["attempt"] > 1:
            buffer.add(row)

    # External upstreams from config: rows with stable ids, keys read from the
    # environment here (by variable name, once per routing swap), never stored.
    declared = [e for u in settings.upstreams for e in u.endpoints(clock.now())]
    await upsert_external_endpoints(db, declared, clock.now(), retire_others=role == "up")
    routes = RoutingTable(
        clock, credentials=os.environ.get,
        stream_idle_timeouts={u.name: u.stream_idle_timeout_s for u in settings.upstreams
                              if u.stream_idle_timeout_s is not None},
        ttft_slo_ms=settings.ttft_slo_ms or None)
    refresh = RoutingRefresh(db, routes, clock, declared=declared)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000,
                                                 max_keepalive_connections=200))
    gw_settings = GatewaySettings(retry_budget_s=settings.retry_budget_s,
                                  declared_price_markup=settings.markup,
                                  stream_idle_timeout_s=settings.stream_idle_timeout_s)
    gateway = GatewayDeps(authenticator=keyring, prices=prices, wallet=wallet, routes=routes,
                          clock=clock, http=http, settings=gw_settings,
                          plans=settings.plan_book(), on_event=on_route, limiter=limiter,
                          budgets=budgets)
    ex = Exchange(settings=settings, role=role, clock=clock, db=db, http=http, keyring=keyring,
                  journal=journal, prices=prices, wallet=wallet, outbox=outbox, flusher=flusher,
                  events=events, buffer=buffer, route_counts=route_counts, routes=routes,
                  gateway=gateway, redis=redis, name=owner)
    # EngineLoad: engines' own queue depth and TTFT, for the routing score.
    ex.loops = [refresh, KeyringRefresh(keyring), PriceBookRefresh(prices), flusher,
                WalletRefresh(wallet), KeyBudgetRefresh(budgets), buffer, EngineLoad(routes, http)]
    if isinstance(limiter, SharedRateLimiter):
        ex.loops.append(LimitSync(limiter))
    if role == "up":
        ex.leadership = await _elect(settings, owner, clock)
        if isinstance(ex.leadership, AdvisoryLockElection):
            ex.loops.append(ex.leadership)
        # Imported here: a gateway-only process never loads the deploy layer.
        from cambist.app.control import open_control_plane

        ex.control, leader_loops = await open_control_plane(ex, refresh)
        ex.loops += [LeaderOnly(loop, ex.leadership) for loop in leader_loops]
    await refresh.step(clock.now())
    return ex


async def _elect(settings: Settings, name: str, clock: Clock) -> Leadership:
    """The sole leader on SQLite; on PostgreSQL an election, tried once now so
    the first process leads from its start."""
    if not settings.db_url.startswith(("postgresql", "postgres")):
        return SoleLeader()
    election = AdvisoryLockElection(settings.db_url, retry_s=settings.leader_retry_s,
                                    process=name)
    await election.step(clock.now())
    if not election.is_leader:
        log.info("%s follows: another process runs the control loops", name)
    return election
