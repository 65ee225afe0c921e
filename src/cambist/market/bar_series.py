"""Per-SKU observations for the signal detector and the forecaster, read from the
stored OHLC rollups (``market_bars``) instead of replaying the event log.

The event log is exact but its reads are capped (a live market logs ~50 offer
events a second, so a capped read reaches back about an hour); the rollups
hold 8 days of 1-minute bars and every hourly bar, so a 28-day forecast or a
day of signals stays one indexed query.

Definitions: a bucket of ``bar_s`` seconds is built from the finest stored
interval that divides it. In each bucket, each market ``(region, supplier)``
contributes its last close (its best on-demand price per GPU-hour at the last
observation) and the GPUs it had available then; the SKU's price level is the
median over markets (robust like the replay's median list price, and not
moved by one supplier's outlier), its availability the sum. The observation
is stamped at the bucket's end (the state *at* that boundary, as in
:func:`cambist.market.replay.replay_bars`), capped at ``until`` for the open
bucket. Buckets with nothing observed are kept as gaps (no price, 0 GPUs) so
the series is regular.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.money import from_micros
from cambist.market.bars import ALL, DAY, HOUR, MINUTE, bar_start
from cambist.market.signals import Observation
from cambist.store.schema import market_bars

__all__ = ["sku_observations", "source_interval"]


def source_interval(bar_s: float) -> int | None:
    """The coarsest stored interval that divides ``bar_s`` (None if none does)."""
    for interval in (DAY, HOUR, MINUTE):
        if bar_s >= interval and bar_s % interval == 0:
            return interval
    return None


async def sku_observations(db: AsyncEngine, bar_s: float, since: float, until: float,
                           ) -> tuple[dict[str, list[Observation]], float | None]:
    """Observations per SKU on buckets of ``bar_s`` overlapping ``[since, until]``,
    and the time the stored bars start from (``None``: no bars in the span)."""
    interval = source_interval(bar_s)
    if interval is None:
        return {}, None
    b = market_bars.c
    q = (select(b.sku, b.region, b.supplier, b.start, b.close_micros, b.close_at,
                b.available_gpus)
         .where(b.interval_s == interval, b.region != ALL, b.close_micros.is_not(None),
                b.start >= bar_start(since, interval), b.start <= until)
         .order_by(b.start))
    async with db.connect() as conn:
        rows = (await conn.execute(q)).all()
    if not rows:
        return {}, None
    # (sku, bucket) -> market -> (close_at, price, gpus): the last close wins.
    last: dict[tuple[str, float], dict[tuple[str, str], tuple[float, int, int]]] = \
        defaultdict(dict)
    for sku, region, supplier, start, close, close_at, gpus in rows:
        bucket = bar_start(start, int(bar_s))
        seen = last[(sku, bucket)].get((region, supplier))
        stamp = close_at if close_at is not None else start
        if seen is None or stamp >= seen[0]:
            last[(sku, bucket)][(region, supplier)] = (stamp, close, gpus)
    first = min(bucket for _, bucket in last)
    final = max(bucket for _, bucket in last)
    by_sku: dict[str, dict[float, Observation]] = defaultdict(dict)
    for (sku, bucket), markets in last.items():
        prices = [from_micros(close) for _, close, _ in markets.values()]
        level: Decimal = statistics.median(prices)
        by_sku[sku][bucket] = Observation(min(bucket + bar_s, until), level,
                                          sum(g for _, _, g in markets.values()))
    out: dict[str, list[Observation]] = {}
    steps = round((final - first) / bar_s) + 1
    for sku, points in by_sku.items():
        series = []
        for k in range(steps):
            bucket = first + k * bar_s
            series.append(points.get(bucket) or Observation(min(bucket + bar_s, until),
                                                            None, 0))
        out[sku] = series
    return out, float(rows[0].start)
