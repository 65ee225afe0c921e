"""Loop: advance every supplier and feed its offers into the offer book."""

from __future__ import annotations

import logging

from cambist.market.book import OfferBook
from cambist.providers.base import SupplierRegistry

__all__ = ["MarketFeed"]

log = logging.getLogger("cambist.market")


class MarketFeed:
    """Each step moves each supplier to ``now`` and refreshes its offers in the
    book. A failing supplier keeps its last snapshot and does not stop others."""

    name = "market-feed"

    def __init__(self, suppliers: SupplierRegistry, book: OfferBook,
                 interval_s: float = 5.0) -> None:
        self.suppliers, self.book, self.interval_s = suppliers, book, interval_s

    async def step(self, now: float) -> None:
        for supplier in self.suppliers.all():
            try:
                await supplier.step(now)
                offers = await supplier.list_offers(now)
            except Exception:
                log.exception("supplier %s failed to list offers", supplier.name)
                continue
            await self.book.update(supplier.name, offers, now)
