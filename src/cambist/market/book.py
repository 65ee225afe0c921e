"""The offer book: every supplier's latest offers, normalized and queryable.

Suppliers' snapshots replace each other wholesale; each replacement is diffed
against the previous one and the differences are appended to the event log
(``offer.added`` / ``offer.changed`` / ``offer.removed``) in one append.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cambist.domain.errors import InvalidRequest
from cambist.domain.events import EventKind
from cambist.domain.offer import Offer, OfferQuery
from cambist.domain.sku import family_of
from cambist.store.events import EventLog

__all__ = ["OfferBook", "offer_event_data"]


def offer_event_data(offer: Offer) -> dict[str, Any]:
    """The JSON-safe facts about an offer that its events carry."""
    return {
        "supplier": offer.supplier,
        "sku": offer.sku,
        "gpu_name": offer.gpu_name,
        "gpu_count": offer.gpu_count,
        "region": offer.region,
        "price_per_gpu_hour": str(offer.price_per_gpu_hour),
        "available": offer.available,
        "spot": offer.spot,
    }


def _gpu_matches(offer: Offer, wanted: str) -> bool:
    key = wanted.strip().lower()
    if offer.sku is not None and offer.sku.lower() == key:
        return True
    if offer.gpu_name.lower() == key:
        return True
    return family_of(offer.sku or offer.gpu_name).lower() == key


def _matches(offer: Offer, q: OfferQuery, now: float) -> bool:
    if not q.include_unavailable and (offer.expires_at <= now or offer.available <= 0):
        return False
    if q.gpu is not None and not _gpu_matches(offer, q.gpu):
        return False
    if q.count is not None and offer.gpu_count != q.count:
        return False
    if q.min_vram_gib is not None and offer.vram_gib < q.min_vram_gib:
        return False
    if q.region is not None and not offer.region.lower().startswith(q.region.lower()):
        return False
    if q.max_price_per_gpu_hour is not None and offer.price_per_gpu_hour > q.max_price_per_gpu_hour:
        return False
    if q.supplier is not None and offer.supplier != q.supplier:
        return False
    if offer.supplier in q.suppliers_excluded:
        return False
    return q.spot is None or offer.spot == q.spot


class OfferBook:
    """The latest offers of every supplier, with change events."""

    def __init__(self, event_log: EventLog | None = None) -> None:
        self._log = event_log
        self._snapshots: dict[str, dict[str, Offer]] = {}
        self._updated: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def update(self, supplier: str, offers: list[Offer], now: float) -> None:
        """Replace ``supplier``'s snapshot with ``offers`` and log what changed.

        ``InvalidRequest`` if an offer belongs to another supplier or an id
        repeats. The snapshot is swapped only after the events were appended.
        """
        fresh: dict[str, Offer] = {}
        for o in offers:
            if o.supplier != supplier:
                raise InvalidRequest(f"offer {o.id} belongs to {o.supplier}, not {supplier}")
            if o.id in fresh:
                raise InvalidRequest(f"offer id {o.id} appears twice in {supplier}'s snapshot")
            fresh[o.id] = o
        async with self._lock:
            old = self._snapshots.get(supplier, {})
            rows = _diff(old, fresh, now)
            if self._log is not None and rows:
                await self._log.append(rows)
            self._snapshots[supplier] = fresh
            self._updated[supplier] = now

    def query(self, q: OfferQuery, now: float) -> list[Offer]:
        """Offers matching ``q`` at ``now``, cheapest per GPU-hour first (then by id)."""
        found = [o for snap in self._snapshots.values() for o in snap.values()
                 if _matches(o, q, now)]
        return sorted(found, key=lambda o: (o.price_per_gpu_hour, o.id))

    def get(self, offer_id: str) -> Offer | None:
        """An offer by id from any supplier's latest snapshot."""
        for snap in self._snapshots.values():
            if offer_id in snap:
                return snap[offer_id]
        return None

    def suppliers(self) -> list[str]:
        """Suppliers that have sent at least one snapshot, sorted."""
        return sorted(self._snapshots)

    def all_offers(self) -> list[Offer]:
        """Every offer in the book, expired and sold-out included, sorted by id."""
        return sorted((o for snap in self._snapshots.values() for o in snap.values()),
                      key=lambda o: o.id)

    def updated_at(self, supplier: str) -> float | None:
        """When ``supplier``'s snapshot was last replaced (``None``: never)."""
        return self._updated.get(supplier)


def _diff(old: dict[str, Offer], new: dict[str, Offer], now: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(kind: str, offer: Offer, before: Offer | None = None) -> None:
        data = offer_event_data(offer)
        if before is not None:
            data["previous_price_per_gpu_hour"] = str(before.price_per_gpu_hour)
            data["previous_available"] = before.available
        rows.append({"ts": now, "kind": kind, "subject": offer.id, "data": data})

    for oid in sorted(new):
        before, after = old.get(oid), new[oid]
        if before is None:
            row(EventKind.OFFER_ADDED, after)
        elif (before.price_per_gpu_hour != after.price_per_gpu_hour
              or before.available != after.available):
            row(EventKind.OFFER_CHANGED, after, before)
    for oid in sorted(old.keys() - new.keys()):
        row(EventKind.OFFER_REMOVED, old[oid])
    return rows
