"""An in-process deploy stack: SQLite, an offer book, a lease desk and a
controller over fake suppliers whose leases run at once and whose engines are
handles without processes. Time is a ManualClock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cambist.deploy import DeployController, LeaseDesk, Records
from cambist.deploy.rebalance import MovePolicy
from cambist.domain.clock import ManualClock
from cambist.domain.lease import LeaseState
from cambist.domain.offer import Offer
from cambist.market.book import OfferBook
from cambist.perf.model import PerfModel
from cambist.providers.base import EngineHandle, EngineSpec, SupplierLease, SupplierRegistry
from cambist.store.events import EventLog
from cambist.store.schema import metadata


def offer(oid: str, supplier: str, price: str, *, sku: str = "H100-80GB-SXM",
          region: str = "us-east-1", available: int = 4, spot: bool = False) -> Offer:
    """A one-GPU offer at ``price`` $/GPU-h."""
    return Offer(id=oid, supplier=supplier, gpu_name=sku, sku=sku, gpu_count=1, vram_gib=80,
                 region=region, jurisdiction="US", price_per_gpu_hour=Decimal(price),
                 spot=spot, available=available, expires_at=4e9)


@dataclass
class FakeSupplier:
    """Leases run at once; ``preempt(lease id)`` ends one; engines are plain handles."""

    name: str
    offers: list[Offer] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)
    leases: dict[str, LeaseState] = field(default_factory=dict)
    engines: set[str] = field(default_factory=set)

    async def list_offers(self, now: float) -> list[Offer]:
        return list(self.offers)

    async def lease(self, offer: Offer, now: float, client_token: str) -> SupplierLease:
        self.leases[client_token] = LeaseState.RUNNING
        return SupplierLease(client_token, offer.id, LeaseState.RUNNING)

    async def lease_status(self, supplier_lease_id: str, now: float) -> SupplierLease:
        return SupplierLease(supplier_lease_id, "", self.leases[supplier_lease_id])

    async def release(self, supplier_lease_id: str, now: float) -> SupplierLease:
        self.leases[supplier_lease_id] = LeaseState.RELEASED
        return SupplierLease(supplier_lease_id, "", LeaseState.RELEASED)

    async def launch_engine(self, spec: EngineSpec) -> EngineHandle:
        self.engines.add(spec.lease_id)
        return EngineHandle(f"http://{self.name}/{spec.lease_id}", None, spec.lease_id,
                            spec.model)

    async def stop_engine(self, handle: EngineHandle) -> None:
        self.engines.discard(handle.lease_id)

    async def step(self, now: float) -> None:
        return None


class FreeCredit:
    def available(self, tenant_id: str) -> Decimal:
        return Decimal(10**6)


class NullJournal:
    async def post_lease_cost(self, lease_id: str, supplier: str, owner_tenant: str | None,
                              amount: Decimal, fee_rate: Decimal, period_end: float) -> bool:
        return True


@dataclass
class Stack:
    clock: ManualClock
    suppliers: dict[str, FakeSupplier]
    book: OfferBook
    records: Records
    events: EventLog
    desk: LeaseDesk
    controller: DeployController

    async def publish(self) -> None:
        """Push every supplier's offers into the book."""
        for s in self.suppliers.values():
            await self.book.update(s.name, s.offers, self.clock.now())

    def reprice(self, oid: str, price: str) -> None:
        for s in self.suppliers.values():
            s.offers = [replace(o, price_per_gpu_hour=Decimal(price)) if o.id == oid else o
                        for o in s.offers]

    async def run(self, seconds: float, dt: float = 1.0) -> None:
        """Advance time, stepping the lease sync and the controller every ``dt``."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.advance(dt)
            now = self.clock.now()
            for lease in await self.records.leases(active_only=True):
                await self.desk.sync(lease, now)
            await self.controller.step(now)
            await self.controller.settle()

    async def events_of(self, kind: str) -> list[dict]:
        return await self.events.read(kind=kind, limit=10_000)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    clock = ManualClock()
    events = EventLog(engine)
    records = Records(engine)
    suppliers = {n: FakeSupplier(n) for n in ("alpha", "beta", "gamma")}
    reg = SupplierRegistry()
    for s in suppliers.values():
        reg.register(s)
    book = OfferBook(events)
    desk = LeaseDesk(book=book, suppliers=reg, records=records, journal=NullJournal(),
                     credit=FreeCredit(), events=events, clock=clock, fee_rate=Decimal(0),
                     period_s=3600.0)
    moves = MovePolicy(spin_up_s=300, horizon_s=6 * 3600, risk_premium=Decimal("0.25"),
                       hysteresis=0.5, min_dwell_s=1800, replan_interval_s=60,
                       market_check_s=10)
    controller = DeployController(records=records, desk=desk, perf=PerfModel(), events=events,
                                  clock=clock, retry_backoff_s=0.0, moves=moves)
    st = Stack(clock, suppliers, book, records, events, desk, controller)
    try:
        yield st
    finally:
        await controller.close()
        await engine.dispose()
