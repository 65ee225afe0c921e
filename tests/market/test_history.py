"""The price-history loop: bars from the book, volume from leases, restarts, queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.offer import Offer
from cambist.market.bars import ALL, DAY, HOUR, MINUTE
from cambist.market.book import OfferBook
from cambist.market.history import VOLUME_CURSOR, PriceHistory, observe_offers
from cambist.market.history_queries import (
    market_summary,
    price_bars,
    recent_trades,
    skus_matching,
)
from cambist.store.db import migrate, open_engine, sqlite_url
from cambist.store.schema import leases, market_bars

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SKU = "H100-80GB-SXM"


def offer(local_id: str, price: str, *, supplier: str = "aws", region: str = "us-east-1",
          sku: str | None = SKU, count: int = 8, available: int = 2, spot: bool = False,
          expires_at: float = T0 + 10 * DAY) -> Offer:
    return Offer(id=f"{supplier}:{local_id}", supplier=supplier, gpu_name="H100 SXM", sku=sku,
                 gpu_count=count, vram_gib=80.0, region=region, jurisdiction="US",
                 price_per_gpu_hour=Decimal(price), spot=spot, available=available,
                 expires_at=expires_at)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "cambist.db"
    migrate(sqlite_url(path))
    return path


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(sqlite_url(db_path))
    yield engine
    await engine.dispose()


async def add_lease(db: AsyncEngine, lease_id: str, *, started_at: float | None,
                    ended_at: float | None = None, gpu_count: int = 8,
                    owner: str | None = None, price_per_hour_micros: int = 16_000_000) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(leases).values(
            id=lease_id, supplier="aws", supplier_lease_id="x", offer_id="aws:a", sku=SKU,
            gpu_name="H100 SXM", gpu_count=gpu_count, region="us-east-1",
            price_per_hour_micros=price_per_hour_micros, spot=False, owner=owner,
            state="running" if ended_at is None else "released", created_at=T0,
            started_at=started_at, ended_at=ended_at, billing_increment_s=1,
            billing_minimum_s=60, platform_fee_rate="0"))


async def bars_of(db: AsyncEngine, iv: int, region: str = ALL) -> list:
    b = market_bars.c
    async with db.connect() as conn:
        return list(await conn.execute(select(market_bars).where(
            b.interval_s == iv, b.region == region).order_by(b.start)))


def test_observation_is_best_available_on_demand_price() -> None:
    seen = observe_offers([
        offer("a", "3.00"), offer("b", "2.50", available=1),
        offer("spot", "1.00", spot=True), offer("sold", "0.90", available=0),
        offer("old", "0.80", expires_at=T0 - 1), offer("unmapped", "0.10", sku=None),
        offer("eu", "2.20", region="eu-west-1", count=1, available=3),
    ], T0)
    assert seen[(SKU, "us-east-1", "aws")] == (Decimal("2.50"), 2 * 8 + 1 * 8)
    assert seen[(SKU, "eu-west-1", "aws")] == (Decimal("2.20"), 3)
    assert seen[(SKU, ALL, ALL)] == (Decimal("2.20"), 27)
    assert len(seen) == 3


async def test_steps_build_ohlc_at_every_interval(db: AsyncEngine) -> None:
    book = OfferBook()
    history = PriceHistory(db, book)
    for t, p in ((T0 + 5, "3.00"), (T0 + 20, "3.40"), (T0 + 40, "2.80"), (T0 + 70, "2.90")):
        await book.update("aws", [offer("a", p)], t)
        await history.step(t)
    minutes = await bars_of(db, MINUTE)
    assert [(r.open_micros, r.high_micros, r.low_micros, r.close_micros, r.observations)
            for r in minutes] == [(3_000_000, 3_400_000, 2_800_000, 2_800_000, 3),
                                  (2_900_000, 2_900_000, 2_900_000, 2_900_000, 1)]
    for iv in (HOUR, DAY):
        (row,) = await bars_of(db, iv)
        assert (row.start, row.open_micros, row.high_micros, row.low_micros,
                row.close_micros, row.close_at) == (T0, 3_000_000, 3_400_000, 2_800_000,
                                                    2_900_000, T0 + 70)
    assert [r.close_micros for r in await bars_of(db, MINUTE, "us-east-1")] == [2_800_000,
                                                                                 2_900_000]
    await history.step(T0 + 70)  # a repeated step observes nothing twice
    assert (await bars_of(db, DAY))[0].observations == 4


async def test_restart_continues_from_cursor_without_double_counting(
        db_path: Path, db: AsyncEngine) -> None:
    book = OfferBook()
    await book.update("aws", [offer("a", "3.00")], T0)
    await add_lease(db, "lease_1", started_at=T0 + 30)
    first = PriceHistory(db, book, settle_s=10)
    for k in range(11):
        await first.step(T0 + 60 * k)
    await db.dispose()  # the process goes away; a new one opens the same file

    engine = open_engine(sqlite_url(db_path))
    try:
        async with engine.begin() as conn:
            await conn.execute(update(leases).where(leases.c.id == "lease_1")
                               .values(state="released", ended_at=T0 + 900))
        await add_lease(engine, "lease_2", started_at=T0 + 1000, gpu_count=2)
        await book.update("aws", [offer("a", "2.00")], T0 + 700)
        second = PriceHistory(engine, book, settle_s=10)
        for k in range(11, 31):
            await second.step(T0 + 60 * k)
            await second.step(T0 + 60 * k)  # repeated steps count nothing twice
        upto = T0 + 60 * 30 - 10
        want = 8 * (900 - 30) + 2 * (upto - (T0 + 1000))
        for iv in (MINUTE, HOUR, DAY):
            for region in (ALL, "us-east-1"):
                rows = await bars_of(engine, iv, region)
                assert sum(r.volume_gpu_s for r in rows) == pytest.approx(want, abs=1e-6)
                assert sum(r.trades for r in rows) == 2
        (hour,) = await bars_of(engine, HOUR)
        assert (hour.open_micros, hour.close_micros, hour.observations) == (3_000_000,
                                                                           2_000_000, 31)
        assert await second.store.cursor(VOLUME_CURSOR) == upto
    finally:
        await engine.dispose()


async def test_summary_best_median_change_and_sparkline(db: AsyncEngine) -> None:
    book = OfferBook()
    history = PriceHistory(db, book)
    day_ago = [offer("a", "4.00"), offer("b", "5.00", region="us-west-2")]
    now_offers = [offer("a", "3.00"), offer("b", "3.50", region="us-west-2"),
                  offer("c", "2.00", supplier="gcp", region="us-central1", available=1)]
    await book.update("aws", day_ago, T0 + 100)
    await history.step(T0 + 100)
    await book.update("aws", now_offers[:2], T0 + DAY + 100)
    await book.update("gcp", now_offers[2:], T0 + DAY + 100)
    await history.step(T0 + DAY + 100)
    s = await market_summary(db, T0 + DAY + 130)
    assert s.as_of == T0 + DAY + 100
    (h100,) = s.skus
    assert h100.best_price == Decimal("2.00") and h100.median_price == Decimal("3.00")
    assert h100.change_24h_pct == Decimal("-50.00")
    assert h100.available_gpus == 2 * 8 + 2 * 8 + 8
    assert len(h100.hourly_closes) == 24
    assert h100.hourly_closes[-1] == (T0 + DAY, Decimal("2.00"))
    assert [c for _, c in h100.hourly_closes[:-1]] == [None] * 23

    await book.update("aws", [], T0 + DAY + 200)  # sold out everywhere
    await book.update("gcp", [], T0 + DAY + 200)
    await history.step(T0 + DAY + 200)
    bars = await price_bars(db, SKU, HOUR, T0 + DAY, T0 + DAY + 200)
    assert [b.close for _, b in bars] == [Decimal("2.00")]


async def test_price_bars_filter_by_market(db: AsyncEngine) -> None:
    book = OfferBook()
    await book.update("aws", [offer("a", "3.00"), offer("b", "3.50", region="us-west-2")], T0)
    await PriceHistory(db, book).step(T0 + 1)
    per_key = await price_bars(db, SKU, MINUTE, T0, T0 + 60, supplier="aws")
    assert [(s[1], b.close) for s, b in per_key] == [("us-east-1", Decimal("3.00")),
                                                    ("us-west-2", Decimal("3.50"))]
    one = await price_bars(db, SKU, DAY, T0, T0 + 60, region="us-west-2")
    assert [s for s, _ in one] == [(SKU, "us-west-2", "aws")]
    assert await price_bars(db, SKU, MINUTE, T0 + 120, T0 + 200) == []


async def test_trades_and_sku_matching(db: AsyncEngine) -> None:
    await add_lease(db, "lease_a", started_at=T0 + 10, ended_at=T0 + 70, owner="ten_1")
    await add_lease(db, "lease_b", started_at=T0 + 50)
    await add_lease(db, "lease_never", started_at=None)
    rows = await recent_trades(db, T0 + 100)
    assert [(t.lease_id, t.duration_s) for t in rows] == [("lease_b", 50.0), ("lease_a", 60.0)]
    assert rows[1].owner == "ten_1" and rows[0].price_per_gpu_hour == Decimal(2)
    assert [t.lease_id for t in await recent_trades(db, T0 + 100, since=T0 + 20)] == ["lease_b"]
    assert await recent_trades(db, T0 + 100, skus=["L4-24GB"]) == []
    assert skus_matching("h100", [SKU, "H100-80GB-PCIe", "L4-24GB"]) == ["H100-80GB-PCIe", SKU]
    assert skus_matching("h100-80gb-sxm", [SKU, "L4-24GB"]) == [SKU]


async def test_minute_bars_past_retention_are_pruned(db: AsyncEngine) -> None:
    book = OfferBook()
    await book.update("aws", [offer("a", "3.00")], T0)
    history = PriceHistory(db, book, minute_retention_s=2 * HOUR)
    await history.step(T0 + 1)
    await history.step(T0 + 3 * HOUR)
    assert [r.start for r in await bars_of(db, MINUTE)] == [T0 + 3 * HOUR]
    assert len(await bars_of(db, HOUR)) == 2
