"""Persistence of the price history: bar rows, the rollup cursor, lease spans.

Prices are whole micro-dollars per GPU-hour at rest (``*_micros``) and
``Decimal`` in memory. One process (the exchange's ``PriceHistory`` loop)
writes bars; any number read them (:mod:`cambist.market.history_queries`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.money import from_micros, to_micros
from cambist.market.bars import Bar
from cambist.store.schema import leases, market_bars, market_cursors

__all__ = ["BarKey", "BarStore", "LeaseSpan", "Series", "bar_from_row", "bar_row"]

Series = tuple[str, str, str]  # (sku, region, supplier); ALL region/supplier: overall
BarKey = tuple[int, str, str, str, float]  # (interval_s, sku, region, supplier, start)

_PRICES = ("open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class LeaseSpan:
    """The running time of one lease, as far as the history needs it."""

    sku: str
    region: str
    supplier: str
    gpu_count: int
    started_at: float
    ended_at: float | None


def _micros(v: Decimal | None) -> int | None:
    return None if v is None else to_micros(v)


def _dollars(v: int | None) -> Decimal | None:
    return None if v is None else from_micros(v)


def bar_row(key: BarKey, bar: Bar) -> dict[str, Any]:
    """The ``market_bars`` row of ``bar`` under ``key``."""
    iv, sku, region, supplier, start = key
    return {
        "interval_s": iv, "sku": sku, "region": region, "supplier": supplier, "start": start,
        "open_micros": _micros(bar.open), "high_micros": _micros(bar.high),
        "low_micros": _micros(bar.low), "close_micros": _micros(bar.close),
        "close_at": bar.close_at, "observations": bar.observations,
        "available_gpus": bar.available_gpus, "volume_gpu_s": bar.volume_gpu_s,
        "trades": bar.trades,
    }


def bar_from_row(r: RowMapping) -> tuple[BarKey, Bar]:
    """A ``market_bars`` row back as its key and bar."""
    key: BarKey = (r["interval_s"], r["sku"], r["region"], r["supplier"], r["start"])
    return key, Bar(
        start=r["start"], interval_s=r["interval_s"], open=_dollars(r["open_micros"]),
        high=_dollars(r["high_micros"]), low=_dollars(r["low_micros"]),
        close=_dollars(r["close_micros"]), close_at=r["close_at"],
        observations=r["observations"], available_gpus=r["available_gpus"],
        volume_gpu_s=r["volume_gpu_s"], trades=r["trades"],
    )


def _update_stmt() -> Any:
    b = market_bars.c
    where = and_(b.interval_s == bindparam("k_interval_s"), b.sku == bindparam("k_sku"),
                 b.region == bindparam("k_region"), b.supplier == bindparam("k_supplier"),
                 b.start == bindparam("k_start"))
    cols = [f"{p}_micros" for p in _PRICES] + ["close_at", "observations", "available_gpus",
                                               "volume_gpu_s", "trades"]
    return update(market_bars).where(where).values({c: bindparam(c) for c in cols})


def _update_params(key: BarKey, bar: Bar) -> dict[str, Any]:
    row = bar_row(key, bar)
    for k in ("interval_s", "sku", "region", "supplier", "start"):
        row[f"k_{k}"] = row.pop(k)
    return row


class BarStore:
    """Reads and writes ``market_bars`` and ``market_cursors``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def cursor(self, name: str) -> float | None:
        """The persisted position of cursor ``name`` (``None``: never written)."""
        q = select(market_cursors.c.position).where(market_cursors.c.name == name)
        async with self.engine.connect() as conn:
            return (await conn.execute(q)).scalar_one_or_none()

    async def load(self, interval_s: int, lo: float, hi: float) -> dict[BarKey, Bar]:
        """Every bar of ``interval_s`` whose start lies in ``[lo, hi]``, any key."""
        b = market_bars.c
        q = select(market_bars).where(b.interval_s == interval_s, b.start >= lo, b.start <= hi)
        async with self.engine.connect() as conn:
            return dict(bar_from_row(r._mapping) for r in await conn.execute(q))

    async def write(self, inserts: Mapping[BarKey, Bar], updates: Mapping[BarKey, Bar],
                    cursors: Mapping[str, float]) -> None:
        """Insert new bars, update existing ones and move cursors, in one transaction."""
        async with self.engine.begin() as conn:
            if inserts:
                await conn.execute(insert(market_bars),
                                   [bar_row(k, b) for k, b in inserts.items()])
            if updates:
                await conn.execute(_update_stmt(),
                                   [_update_params(k, b) for k, b in updates.items()])
            for name, position in cursors.items():
                await _set_cursor(conn, name, position)

    async def insert_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert prepared bar rows (:func:`bar_row`) in one transaction (bulk fills)."""
        batch = list(rows)
        if batch:
            async with self.engine.begin() as conn:
                await conn.execute(insert(market_bars), batch)

    async def prune(self, interval_s: int, before: float) -> int:
        """Delete bars of ``interval_s`` that start before ``before``; how many went."""
        b = market_bars.c
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(market_bars).where(b.interval_s == interval_s,
                                                               b.start < before))
        return int(res.rowcount or 0)

    async def lease_spans(self, since: float, until: float) -> list[LeaseSpan]:
        """Leases of a known SKU that were running at some time in ``[since, until)``."""
        c = leases.c
        q = select(c.sku, c.region, c.supplier, c.gpu_count, c.started_at, c.ended_at).where(
            c.sku.is_not(None), c.started_at.is_not(None), c.started_at < until,
            or_(c.ended_at.is_(None), c.ended_at > since))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [LeaseSpan(r.sku, r.region, r.supplier, r.gpu_count, r.started_at, r.ended_at)
                for r in rows]


async def _set_cursor(conn: AsyncConnection, name: str, position: float) -> None:
    res = await conn.execute(update(market_cursors).where(market_cursors.c.name == name)
                             .values(position=position))
    if not res.rowcount:
        await conn.execute(insert(market_cursors).values(name=name, position=position))
