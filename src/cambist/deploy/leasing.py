"""Renting and releasing capacity, and posting what it costs.

A lease's cost accrues per second (computed on read from its start, price and
billing rules) and is journaled at state changes and at period closes, never
per second. Period closes fall on ``started_at + k * period_s`` and the final
posting on ``ended_at``, so each posting has a deterministic idempotency key
and a crash between journal and lease row cannot post twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Protocol

from cambist.deploy.records import Records
from cambist.domain.clock import Clock
from cambist.domain.errors import (
    InsufficientCredit,
    InvalidRequest,
    NoCapacity,
    NotFound,
    OfferUnavailable,
)
from cambist.domain.events import EventKind
from cambist.domain.ids import new_id
from cambist.domain.lease import Lease, LeaseState
from cambist.domain.offer import Offer, OfferQuery
from cambist.domain.sku import family_of, gpu_specs
from cambist.market.book import OfferBook
from cambist.providers.base import SupplierRegistry
from cambist.store.events import EventLog

__all__ = ["LeaseDesk", "LeaseSync", "RentRequest", "TenantCredit"]


class TenantCredit(Protocol):
    """What leasing needs from the wallet."""

    def available(self, tenant_id: str) -> Decimal: ...


class LeaseCostJournal(Protocol):
    """Posts lease cost (and the owner's charge); the wallet implements it so the
    owner's in-memory balance moves with the journal."""

    async def post_lease_cost(
        self, lease_id: str, supplier: str, owner_tenant: str | None, amount: Decimal,
        fee_rate: Decimal, period_end: float,
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class RentRequest:
    """What a caller wants to rent; ``None`` means any."""

    gpu: str | None = None
    count: int | None = None
    region: str | None = None
    max_price_per_gpu_hour: Decimal | None = None
    spot: bool | None = None
    owner: str | None = None
    client_token: str | None = None
    offer_id: str | None = None


def check_gpu_name(gpu: str) -> None:
    """Refuse a GPU name that matches no known family or SKU, listing the known ones."""
    fams = {family_of(s) for s in gpu_specs()} | set(gpu_specs())
    if gpu.upper() not in {f.upper() for f in fams} and family_of(gpu) not in fams:
        raise InvalidRequest(
            f"unknown GPU {gpu!r}; known SKUs: {', '.join(sorted(gpu_specs()))}", param="gpu"
        )


class LeaseDesk:
    """Rent, release and list leases through the supplier adapters."""

    def __init__(self, *, book: OfferBook, suppliers: SupplierRegistry, records: Records,
                 journal: LeaseCostJournal, credit: TenantCredit, events: EventLog,
                 clock: Clock, fee_rate: Decimal, period_s: float) -> None:
        self.book, self.suppliers, self.records = book, suppliers, records
        self.journal, self.credit, self.events = journal, credit, events
        self.clock, self.fee_rate, self.period_s = clock, fee_rate, period_s

    async def rent(self, req: RentRequest) -> Lease:
        """Rent the cheapest offer that fits ``req`` (idempotent on its client token)."""
        if req.client_token:
            existing = await self.records.lease_by_token(req.client_token)
            if existing is not None:
                return existing
        now = self.clock.now()
        if req.offer_id:
            offer = self.book.get(req.offer_id)
            if offer is None or offer.expires_at <= now or offer.available <= 0:
                raise OfferUnavailable(f"offer {req.offer_id!r} is no longer available; "
                                       "run 'cambist offers' for current ones")
            candidates = [offer]
        else:
            if req.gpu:
                check_gpu_name(req.gpu)
            if req.count is not None and req.count < 1:
                raise InvalidRequest("count must be at least 1", param="count")
            candidates = self.book.query(OfferQuery(
                gpu=req.gpu, count=req.count, region=req.region,
                max_price_per_gpu_hour=req.max_price_per_gpu_hour, spot=req.spot), now)
        if not candidates:
            raise NoCapacity("no offer matches: widen --region, raise --max-price or "
                             "change --count (see 'cambist offers')")
        last: OfferUnavailable | None = None
        for offer in candidates[:3]:
            try:
                return await self.lease_offer(offer, owner=req.owner,
                                              client_token=req.client_token)
            except OfferUnavailable as exc:
                last = exc
        assert last is not None
        raise last

    async def lease_offer(self, offer: Offer, *, owner: str | None,
                          client_token: str | None = None) -> Lease:
        """Lease one unit of ``offer``; writes the intent first so a crash is recoverable."""
        now = self.clock.now()
        if owner is not None:
            need = offer.price_per_hour * (1 + self.fee_rate)
            avail = self.credit.available(owner)
            if avail < need:
                raise InsufficientCredit(
                    f"renting {offer.id} needs one hour of credit (${need:.4f}); "
                    f"available ${avail:.4f}. Add credit with 'cambist credits add'.")
        lease = Lease(
            id=new_id("lease"), supplier=offer.supplier, supplier_lease_id="",
            offer_id=offer.id, sku=offer.sku, gpu_name=offer.gpu_name,
            gpu_count=offer.gpu_count, region=offer.region, price_per_hour=offer.price_per_hour,
            spot=offer.spot, owner=owner, state=LeaseState.PROVISIONING, created_at=now,
            billing_increment_s=offer.billing_increment_s,
            billing_minimum_s=offer.billing_minimum_s,
            platform_fee_rate=self.fee_rate if owner else Decimal(0),
        )
        await self.records.insert_lease(lease)
        supplier = self.suppliers.get(offer.supplier)
        try:
            sl = await supplier.lease(offer, now, lease.id)
        except OfferUnavailable:
            await self._save(lease.transition(LeaseState.FAILED, now), "offer unavailable")
            raise
        lease = replace(lease, supplier_lease_id=sl.supplier_lease_id, client_token=client_token)
        if sl.state != lease.state:
            lease = lease.transition(sl.state, now)
        await self._save(lease, "leased")
        return lease

    async def release(self, lease_id: str) -> Lease:
        """End a lease and post its final cost (no-op if already ended)."""
        lease = await self.records.lease(lease_id)
        if lease is None:
            raise NotFound(f"no lease {lease_id!r}; see 'cambist leases'", param="lease")
        if lease.terminal:
            return lease
        now = self.clock.now()
        if lease.state != LeaseState.RELEASING:
            lease = lease.transition(LeaseState.RELEASING, now)
            await self._save(lease, "releasing")
        if lease.supplier_lease_id:
            await self.suppliers.get(lease.supplier).release(lease.supplier_lease_id, now)
        lease = lease.transition(LeaseState.RELEASED, self.clock.now())
        lease = await self.post_cost(lease, lease.ended_at or now)
        await self._save(lease, "released")
        return lease

    async def post_cost(self, lease: Lease, period_end: float) -> Lease:
        """Journal the cost accrued since the last posting, up to ``period_end``."""
        if lease.started_at is None:
            return lease
        prev = lease.posted_until
        amount = lease.cost_at(period_end) - (lease.cost_at(prev) if prev else Decimal(0))
        if amount > 0:
            await self.journal.post_lease_cost(
                lease.id, lease.supplier, lease.owner, amount, lease.platform_fee_rate,
                period_end)
        return replace(lease, posted_until=period_end)

    async def _save(self, lease: Lease, note: str) -> None:
        await self.records.save_lease(lease)
        await self.events.append([{
            "ts": self.clock.now(), "kind": EventKind.LEASE, "subject": lease.id,
            "data": {"state": str(lease.state), "supplier": lease.supplier, "sku": lease.sku,
                     "region": lease.region, "price_per_hour": str(lease.price_per_hour),
                     "gpu_count": lease.gpu_count, "owner": lease.owner, "note": note},
        }])

    async def sync(self, lease: Lease, now: float) -> Lease:
        """Follow the supplier's state of one lease; post cost at changes and period closes."""
        if lease.terminal:
            return lease
        if not lease.supplier_lease_id:
            if now - lease.created_at > 60:
                lease = lease.transition(LeaseState.FAILED, now)
                await self._save(lease, "no answer from supplier")
            return lease
        sl = await self.suppliers.get(lease.supplier).lease_status(lease.supplier_lease_id, now)
        if sl.state != lease.state and lease.state != LeaseState.RELEASING:
            try:
                lease = lease.transition(sl.state, now)
            except ValueError:
                return lease
            if lease.terminal:
                lease = await self.post_cost(lease, lease.ended_at or now)
            await self._save(lease, sl.detail or "supplier state")
        if lease.state == LeaseState.RUNNING and lease.started_at is not None:
            last = lease.posted_until or lease.started_at
            k = int((now - lease.started_at) // self.period_s)
            boundary = lease.started_at + k * self.period_s
            if k >= 1 and boundary > last:
                lease = await self.post_cost(lease, boundary)
                await self.records.save_lease(lease)
        return lease


class LeaseSync:
    """Loop: follow every active lease at its supplier."""

    name = "lease-sync"

    def __init__(self, desk: LeaseDesk, interval_s: float = 1.0) -> None:
        self.desk = desk
        self.interval_s = interval_s

    async def step(self, now: float) -> None:
        for lease in await self.desk.records.leases(active_only=True):
            await self.desk.sync(lease, now)
