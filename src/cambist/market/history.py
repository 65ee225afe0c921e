"""The price feed's history: a control loop that keeps OHLC/volume rollups.

Each :meth:`PriceHistory.step` at ``now``:

1. observes the offer book: for every market key ``(sku, region, supplier)``
   and every SKU overall, the best available on-demand price per GPU-hour and
   the available on-demand GPU count (definitions in :mod:`cambist.market.bars`),
   and folds that observation into the key's 1-minute, 1-hour and 1-day bars;
2. adds the GPU-seconds leased since the persisted volume cursor, up to
   ``now - settle_s`` (lease rows are written a moment after the transition
   they record; the lag lets them land), and counts leases that started
   running in that window as trades;
3. writes the changed bars and the new cursor in one transaction.

Restarts continue from the stored bars and cursor: an open bar is loaded and
extended (its open stays), and volume already counted is never counted again.
1-minute bars older than ``minute_retention_s`` (default 8 days: a live market
of ~200 keys makes ~270k of them a day) are deleted once an hour; hourly and
daily bars are kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.offer import Offer
from cambist.market.bars import (
    ALL,
    DAY,
    HOUR,
    INTERVALS,
    MINUTE,
    Bar,
    add_volume,
    bar_start,
    observe,
    split_span,
)
from cambist.market.book import OfferBook
from cambist.market.history_store import BarKey, BarStore, LeaseSpan, Series

__all__ = ["VOLUME_CURSOR", "PriceHistory", "observe_offers", "volume_increments"]

VOLUME_CURSOR = "history.volume_until"


def observe_offers(offers: Iterable[Offer], now: float) -> dict[Series, tuple[Decimal, int]]:
    """Each market key's (and each SKU overall's) best available on-demand price per
    GPU-hour and available on-demand GPU count at ``now``; keys with none are absent."""
    best: dict[Series, Decimal] = {}
    gpus: dict[Series, int] = defaultdict(int)
    for o in offers:
        if o.sku is None or o.spot or o.available <= 0 or o.expires_at <= now:
            continue
        for key in ((o.sku, o.region, o.supplier), (o.sku, ALL, ALL)):
            price = best.get(key)
            if price is None or o.price_per_gpu_hour < price:
                best[key] = o.price_per_gpu_hour
            gpus[key] += o.available * o.gpu_count
    return {k: (p, gpus[k]) for k, p in best.items()}


class PriceHistory:
    """Loop: keep the ``market_bars`` rollups current from the book and the leases."""

    name = "price-history"

    def __init__(self, db: AsyncEngine, book: OfferBook, *, interval_s: float = 5.0,
                 settle_s: float = 10.0, minute_retention_s: float = 8 * DAY) -> None:
        self.book, self.interval_s = book, interval_s
        self.settle_s, self.minute_retention_s = settle_s, minute_retention_s
        self.store = BarStore(db)
        self._cache: dict[BarKey, Bar] = {}  # bars known to be stored, as stored
        self._volume_until: float | None = None
        self._cursor_loaded = False
        self._pruned_hour: float | None = None

    async def step(self, now: float) -> None:
        """Observe the book at ``now``, add leased volume, persist; see the module doc."""
        if not self._cursor_loaded:
            self._volume_until = await self.store.cursor(VOLUME_CURSOR)
            self._cursor_loaded = True
        upto = now - self.settle_s
        since = upto if self._volume_until is None else self._volume_until
        spans = await self.store.lease_spans(since, upto) if upto > since else []
        observed = {(iv, *series, bar_start(now, iv)): seen
                    for series, seen in observe_offers(self.book.all_offers(), now).items()
                    for iv in INTERVALS.values()}
        volume = volume_increments(spans, since, upto)
        await self._load_missing([*observed, *volume])
        changes: dict[BarKey, Bar] = {}
        for key, (gpu_s, trades) in volume.items():
            changes[key] = add_volume(self._bar(key), gpu_s, trades)
        for key, (price, gpus) in observed.items():
            bar = changes.get(key) or self._bar(key)
            if bar.close_at is None or now > bar.close_at:  # a repeated step observes once
                changes[key] = observe(bar, price, gpus, now)
        until = max(since, upto)
        inserts = {k: b for k, b in changes.items() if k not in self._cache}
        updates = {k: b for k, b in changes.items() if k in self._cache}
        await self.store.write(inserts, updates, {VOLUME_CURSOR: until})
        self._volume_until = until
        self._cache.update(changes)
        self._forget_before(min(until, now))
        await self._prune(now)

    def _bar(self, key: BarKey) -> Bar:
        return self._cache.get(key) or Bar(start=key[4], interval_s=key[0])

    async def _load_missing(self, keys: list[BarKey]) -> None:
        """Bring stored bars for ``keys`` not yet cached into the cache."""
        ranges: dict[int, list[float]] = defaultdict(list)
        for k in keys:
            if k not in self._cache:
                ranges[k[0]].append(k[4])
        for iv, starts in ranges.items():
            self._cache.update(await self.store.load(iv, min(starts), max(starts)))

    def _forget_before(self, t: float) -> None:
        """Drop cached bars that no later step can touch."""
        self._cache = {k: b for k, b in self._cache.items() if k[4] >= bar_start(t, k[0])}

    async def _prune(self, now: float) -> None:
        hour = bar_start(now, HOUR)
        if self._pruned_hour != hour:
            await self.store.prune(MINUTE, now - self.minute_retention_s)
            self._pruned_hour = hour


def volume_increments(spans: Iterable[LeaseSpan], since: float,
                      until: float) -> dict[BarKey, tuple[float, int]]:
    """GPU-seconds leased and trades (leases that started running) in ``[since, until)``,
    per bar of every interval, for each lease's market key and its SKU overall."""
    out: dict[BarKey, tuple[float, int]] = {}

    def add(key: BarKey, gpu_s: float, trades: int) -> None:
        g, t = out.get(key, (0.0, 0))
        out[key] = (g + gpu_s, t + trades)

    for span in spans:
        begin = max(since, span.started_at)
        end = min(until, span.ended_at if span.ended_at is not None else until)
        started_here = since <= span.started_at < until
        for series in ((span.sku, span.region, span.supplier), (span.sku, ALL, ALL)):
            for iv in INTERVALS.values():
                for start, secs in split_span(begin, end, iv):
                    add((iv, *series, start), secs * span.gpu_count, 0)
                if started_here:
                    add((iv, *series, bar_start(span.started_at, iv)), 0.0, 1)
    return out
