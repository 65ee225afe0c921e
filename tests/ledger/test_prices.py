from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.billing import ModelPrice, PriceList
from cambist.domain.clock import ManualClock
from cambist.ledger.prices import PriceBook, PriceBookRefresh

D = Decimal


@pytest.fixture
def book(engine: AsyncEngine, clock: ManualClock) -> PriceBook:
    return PriceBook(engine, clock)


async def test_empty_book_prices_nothing(book: PriceBook) -> None:
    await book.load()
    assert book.price("llama") is None
    assert book.current_version is None
    assert book.list_prices() == []


async def test_publish_and_lookup(book: PriceBook, clock: ManualClock) -> None:
    v = await book.publish(
        {("llama", "standard"): (D("0.20"), D("0.60")), ("llama", "zdr"): (D("0.25"), D("0.75"))},
        markup=D("0.3"),
        effective_at=clock.now(),
        note="launch",
    )
    assert v == 1
    p = book.price("llama")
    assert p == ModelPrice("llama", "standard", D("0.2"), D("0.6"), 1)
    assert p.charge(1_000_000, 500_000) == D("0.5")
    assert book.price("llama", "zdr").input_per_mtok == D("0.25")  # type: ignore[union-attr]
    assert book.price("mistral") is None
    assert [x.tier for x in book.list_prices()] == ["standard", "zdr"]
    assert [x.tier for x in book.list_prices("zdr")] == ["zdr"]
    listed: PriceList = book
    assert listed.price("llama") is not None


async def test_future_version_takes_effect_on_time(book: PriceBook, clock: ManualClock) -> None:
    await book.publish({("m", "standard"): (D("1"), D("2"))}, D("0.2"), clock.now())
    await book.publish({("m", "standard"): (D("3"), D("4"))}, D("0.2"), clock.now() + 60)
    assert book.current_version == 1
    assert book.price("m").input_per_mtok == D("1")  # type: ignore[union-attr]
    clock.advance(60)
    assert book.current_version == 2
    assert book.price("m").input_per_mtok == D("3")  # type: ignore[union-attr]


async def test_latest_version_wins_among_effective_ones(
    book: PriceBook, clock: ManualClock
) -> None:
    t = clock.now()
    await book.publish({("m", "standard"): (D("1"), D("1"))}, D("0"), t + 10)
    await book.publish({("m", "standard"): (D("2"), D("2"))}, D("0"), t + 5)
    clock.advance(7)
    assert book.current_version == 2
    clock.advance(10)  # version 1 is effective too, but version 2 is newer
    assert book.current_version == 2
    versions = await book.versions()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["current"] and not versions[1]["current"]
    assert versions[0]["markup"] == D("0") and versions[0]["prices"] == 1


async def test_prices_are_stored_in_micros_per_mtok(
    book: PriceBook, engine: AsyncEngine, clock: ManualClock
) -> None:
    await book.publish({("m", "standard"): (D("0.1234567"), D("1"))}, D("0.1"), clock.now())
    async with engine.connect() as conn:
        row = (
            await conn.exec_driver_sql(
                "SELECT input_micros_per_mtok, output_micros_per_mtok FROM prices"
            )
        ).one()
    assert tuple(row) == (123457, 1_000_000)


async def test_refresh_picks_up_another_process(
    book: PriceBook, engine: AsyncEngine, clock: ManualClock
) -> None:
    await book.load()
    other = PriceBook(engine, clock)
    await other.publish({("m", "standard"): (D("1"), D("1"))}, D("0"), clock.now())
    assert book.price("m") is None
    loop = PriceBookRefresh(book)
    await loop.step(clock.now())
    assert book.price("m") is not None and book.current_version == 1


@pytest.mark.parametrize(
    "entries",
    [
        {},
        {("m", "standard"): (D("-1"), D("1"))},
        {("m", "standard"): (1.5, D("1"))},
        {("", "standard"): (D("1"), D("1"))},
    ],
)
async def test_publish_refuses_bad_prices(book: PriceBook, clock: ManualClock, entries) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        await book.publish(entries, D("0"), clock.now())
    assert await book.versions() == []
