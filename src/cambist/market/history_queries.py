"""Reading the price history: bars, the per-SKU market summary, trades.

These are the functions the REST API (``/v1/market/prices``, ``/summary``,
``/trades``) and the benchmark call. Definitions of price, bar and volume are
in :mod:`cambist.market.bars`; in the summary:

- ``as_of`` is the time of the latest observation of the market (the last
  step of the history loop at or before ``now``); a SKU is *available now*
  when it was observed then;
- best price now: the SKU overall's close at ``as_of``; median price now: the
  median, over the ``(region, supplier)`` markets observed at ``as_of``, of
  each market's best price;
- 24 h change: best price now against the SKU's last observation at or before
  ``as_of - 24 h`` (looked up to one hour further back), in percent;
- hourly closes: the 24 hourly bars ending with the one holding ``as_of``
  (``None`` where nothing was observed that hour).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.errors import InvalidRequest
from cambist.domain.money import from_micros
from cambist.domain.sku import family_of
from cambist.market.bars import ALL, DAY, HOUR, INTERVALS, MINUTE, Bar, bar_start
from cambist.market.history_store import Series, bar_from_row
from cambist.store.schema import leases, market_bars

__all__ = [
    "MarketSummary",
    "SkuSummary",
    "Trade",
    "check_interval",
    "history_skus",
    "market_summary",
    "price_bars",
    "recent_trades",
    "skus_matching",
]

_REF_LOOKBACK_S = HOUR
_PCT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class SkuSummary:
    """One SKU's market now (``None`` prices: not available at ``as_of``)."""

    sku: str
    best_price: Decimal | None
    median_price: Decimal | None
    change_24h_pct: Decimal | None
    available_gpus: int
    last_seen: float | None
    hourly_closes: tuple[tuple[float, Decimal | None], ...]


@dataclass(frozen=True, slots=True)
class MarketSummary:
    """Every SKU with history in the last 24 h, as of the latest observation."""

    as_of: float | None
    skus: tuple[SkuSummary, ...]


@dataclass(frozen=True, slots=True)
class Trade:
    """A lease seen as a trade: who (for admins), what, where, at what price, how long."""

    lease_id: str
    owner: str | None
    sku: str | None
    gpu_name: str
    region: str
    supplier: str
    gpu_count: int
    spot: bool
    price_per_hour: Decimal
    started_at: float
    ended_at: float | None
    state: str
    duration_s: float

    @property
    def price_per_gpu_hour(self) -> Decimal:
        return self.price_per_hour / self.gpu_count


def skus_matching(name: str, candidates: Iterable[str]) -> list[str]:
    """The candidate SKUs ``name`` designates: itself (any case) or, for a family
    name such as ``H100``, every SKU of that family; sorted."""
    key = name.strip().upper()
    pool = set(candidates)
    exact = sorted(s for s in pool if s.upper() == key)
    if exact:
        return exact
    return sorted(s for s in pool if family_of(s).upper() == key)


async def history_skus(db: AsyncEngine) -> list[str]:
    """SKUs that have any history (from the daily bars of each SKU overall)."""
    b = market_bars.c
    q = (select(b.sku).where(b.interval_s == DAY, b.region == ALL, b.supplier == ALL)
         .distinct().order_by(b.sku))
    async with db.connect() as conn:
        return list((await conn.execute(q)).scalars())


async def price_bars(db: AsyncEngine, sku: str, interval_s: int, since: float, until: float,
                     *, supplier: str | None = None, region: str | None = None,
                     ) -> list[tuple[Series, Bar]]:
    """Bars of ``sku`` at ``interval_s`` overlapping ``[since, until]``: the SKU overall,
    or with ``supplier`` and/or ``region`` every matching market key's series;
    ordered by supplier, region, start."""
    b = market_bars.c
    q = select(market_bars).where(b.interval_s == interval_s, b.sku == sku,
                                  b.start >= bar_start(since, interval_s), b.start <= until)
    if supplier is None and region is None:
        q = q.where(b.region == ALL, b.supplier == ALL)
    else:
        q = q.where(b.region != ALL)
        if supplier is not None:
            q = q.where(b.supplier == supplier)
        if region is not None:
            q = q.where(b.region == region)
    q = q.order_by(b.supplier, b.region, b.start)
    async with db.connect() as conn:
        rows = [bar_from_row(r._mapping) for r in await conn.execute(q)]
    return [((k[1], k[2], k[3]), bar) for k, bar in rows]


async def _latest_minute(conn: AsyncConnection, now: float) -> list[tuple[Series, Bar]]:
    """Bars of every key in the latest minute at or before ``now`` and the one before."""
    b = market_bars.c
    minute = (await conn.execute(select(func.max(b.start)).where(
        b.interval_s == MINUTE, b.start <= now))).scalar_one_or_none()
    if minute is None:
        return []
    q = select(market_bars).where(b.interval_s == MINUTE, b.start >= minute - MINUTE,
                                  b.start <= minute)
    return [((k[1], k[2], k[3]), bar) for k, bar in
            (bar_from_row(r._mapping) for r in await conn.execute(q))]


async def _hourly_closes(conn: AsyncConnection, lo: float,
                         hi: float) -> dict[str, dict[float, Decimal | None]]:
    """Each SKU overall's hourly closes for bars starting in ``(lo, hi]``."""
    b = market_bars.c
    q = select(b.sku, b.start, b.close_micros).where(
        b.interval_s == HOUR, b.start > lo, b.start <= hi, b.region == ALL, b.supplier == ALL)
    out: dict[str, dict[float, Decimal | None]] = {}
    for sku, start, close in await conn.execute(q):
        out.setdefault(sku, {})[start] = None if close is None else from_micros(close)
    return out


async def _closes_at(conn: AsyncConnection, t: float, lookback: float) -> dict[str, Decimal]:
    """Each SKU overall's last observed price at or before ``t`` (within ``lookback``)."""
    b = market_bars.c
    where = (b.interval_s == MINUTE, b.region == ALL, b.supplier == ALL)
    last = (select(b.sku.label("sku"), func.max(b.start).label("start"))
            .where(*where, b.start > t - lookback, b.start <= t, b.close_micros.is_not(None))
            .group_by(b.sku).subquery())
    q = select(b.sku, b.close_micros).join(
        last, (b.sku == last.c.sku) & (b.start == last.c.start)).where(*where)
    return {sku: from_micros(close) for sku, close in await conn.execute(q)}


async def market_summary(db: AsyncEngine, now: float) -> MarketSummary:
    """Per SKU: best and median price now, 24 h change, available GPUs, hourly closes."""
    async with db.connect() as conn:
        recent = await _latest_minute(conn, now)
        seen = [bar.close_at for _, bar in recent if bar.close_at is not None]
        as_of = max(seen) if seen else None
        hour = bar_start(as_of if as_of is not None else now, HOUR)
        closes = await _hourly_closes(conn, hour - 24 * HOUR, hour)
        ref = (await _closes_at(conn, as_of - DAY, _REF_LOOKBACK_S)
               if as_of is not None else {})
    fresh = {s: bar for s, bar in recent if as_of is not None and bar.close_at == as_of}
    last_seen: dict[str, float] = {}
    for (sku, _, _), bar in recent:
        if bar.close_at is not None:
            last_seen[sku] = max(bar.close_at, last_seen.get(sku, bar.close_at))
    skus = sorted(set(closes) | {s[0] for s in fresh})
    slots = [hour - i * HOUR for i in range(23, -1, -1)]
    out = [_sku_summary(sku, fresh, ref.get(sku), last_seen.get(sku),
                        tuple((s, closes.get(sku, {}).get(s)) for s in slots)) for sku in skus]
    return MarketSummary(as_of=as_of, skus=tuple(out))


def _sku_summary(sku: str, fresh: dict[Series, Bar], ref: Decimal | None,
                 last_seen: float | None,
                 hourly: tuple[tuple[float, Decimal | None], ...]) -> SkuSummary:
    overall = fresh.get((sku, ALL, ALL))
    best = overall.close if overall is not None else None
    markets: Sequence[Decimal] = [bar.close for (s, region, _), bar in fresh.items()
                                  if s == sku and region != ALL and bar.close is not None]
    change = None
    if best is not None and ref is not None and ref > 0:
        change = ((best - ref) / ref * 100).quantize(_PCT)
    return SkuSummary(
        sku=sku, best_price=best, median_price=statistics.median(markets) if markets else None,
        change_24h_pct=change, available_gpus=overall.available_gpus if overall else 0,
        last_seen=last_seen, hourly_closes=hourly)


async def recent_trades(db: AsyncEngine, now: float, *, skus: Sequence[str] | None = None,
                        since: float | None = None, limit: int = 100) -> list[Trade]:
    """Leases that started running (newest first), as trades; ``duration_s`` runs to
    their end or, while they run, to ``now``."""
    c = leases.c
    q = select(leases).where(c.started_at.is_not(None))
    if skus is not None:
        q = q.where(c.sku.in_(list(skus)))
    if since is not None:
        q = q.where(c.started_at >= since)
    q = q.order_by(c.started_at.desc(), c.id).limit(limit)
    async with db.connect() as conn:
        rows = [r._mapping for r in await conn.execute(q)]
    return [Trade(
        lease_id=r["id"], owner=r["owner"], sku=r["sku"], gpu_name=r["gpu_name"],
        region=r["region"], supplier=r["supplier"], gpu_count=r["gpu_count"],
        spot=bool(r["spot"]), price_per_hour=from_micros(r["price_per_hour_micros"]),
        started_at=r["started_at"], ended_at=r["ended_at"], state=r["state"],
        duration_s=max(0.0, (r["ended_at"] if r["ended_at"] is not None else now)
                       - r["started_at"]),
    ) for r in rows]


def check_interval(name: str) -> int:
    """Seconds of an interval name (``1m``, ``1h``, ``1d``); ``InvalidRequest`` otherwise."""
    if name not in INTERVALS:
        raise InvalidRequest(f"interval must be one of {', '.join(INTERVALS)}",
                             param="interval")
    return INTERVALS[name]
