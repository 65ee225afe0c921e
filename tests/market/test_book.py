"""The offer book: filters, ordering, and the events a snapshot change appends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from cambist.domain.errors import InvalidRequest
from cambist.domain.events import EventKind
from cambist.domain.offer import Offer, OfferQuery
from cambist.market import OfferBook
from cambist.store.db import migrate, open_engine, sqlite_url
from cambist.store.events import EventLog
from cambist.store.schema import metadata

T0 = 1_767_225_600.0


def offer(local_id: str, *, supplier: str = "aws", sku: str | None = "H100-80GB-SXM",
          gpu_name: str = "NVIDIA H100 SXM5", price: str = "2.0000", count: int = 8,
          vram: float = 80.0, region: str = "us-east-1", spot: bool = False,
          available: int = 3, expires_at: float = T0 + 300) -> Offer:
    return Offer(
        id=f"{supplier}:{local_id}", supplier=supplier, gpu_name=gpu_name, sku=sku,
        gpu_count=count, vram_gib=vram, region=region, jurisdiction="US",
        price_per_gpu_hour=Decimal(price), spot=spot, available=available,
        expires_at=expires_at, sku_note="" if sku else "ambiguous",
    )


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EventLog]:
    url = sqlite_url(tmp_path / "cambist.db")
    try:
        migrate(url)
    except Exception:  # the migrations are not in this tree yet: build the schema directly
        sync = create_engine(f"sqlite:///{tmp_path / 'cambist.db'}")
        metadata.create_all(sync)
        sync.dispose()
    engine = open_engine(url)
    try:
        yield EventLog(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def book() -> OfferBook:
    b = OfferBook()
    await b.update("aws", [
        offer("h100-sxm", price="3.0000"),
        offer("h100-spot", price="1.2000", spot=True),
        offer("l4", sku="L4-24GB", gpu_name="NVIDIA L4", price="0.8000", count=1, vram=24,
              region="eu-central-1"),
        offer("sold-out", price="0.5000", available=0),
        offer("stale", price="0.4000", expires_at=T0 - 1),
    ], T0)
    await b.update("vast", [
        offer("h100-nvl", supplier="vast", sku="H100-94GB-NVL", gpu_name="H100", vram=93.6,
              price="1.9000", count=1, region="Texas, US, NA"),
        offer("h100-bare", supplier="vast", sku=None, gpu_name="H100", price="1.8000",
              count=2, region="US, NA"),
        offer("gh200", supplier="vast", sku="GH200-96GB", gpu_name="GH200", vram=96,
              price="1.5000", count=1, region="US, NA"),
    ], T0)
    return b


def ids(offers: list[Offer]) -> list[str]:
    return [o.id for o in offers]


async def test_family_query_matches_every_variant_and_unresolved(book: OfferBook) -> None:
    got = ids(book.query(OfferQuery(gpu="h100"), T0))
    assert got == ["aws:h100-spot", "vast:h100-bare", "vast:h100-nvl", "aws:h100-sxm"]
    assert "vast:gh200" not in ids(book.query(OfferQuery(gpu="H200"), T0))


async def test_exact_sku_and_raw_name_queries(book: OfferBook) -> None:
    assert ids(book.query(OfferQuery(gpu="H100-94GB-NVL"), T0)) == ["vast:h100-nvl"]
    assert ids(book.query(OfferQuery(gpu="nvidia l4"), T0)) == ["aws:l4"]
    assert ids(book.query(OfferQuery(gpu="l4-24gb"), T0)) == ["aws:l4"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (OfferQuery(count=1), ["aws:l4", "vast:gh200", "vast:h100-nvl"]),
        (OfferQuery(min_vram_gib=90), ["vast:gh200", "vast:h100-nvl"]),
        (OfferQuery(region="EU-"), ["aws:l4"]),
        (OfferQuery(region="us"), ["aws:h100-spot", "vast:gh200", "vast:h100-bare",
                                   "aws:h100-sxm"]),
        (OfferQuery(region="texas"), ["vast:h100-nvl"]),
        (OfferQuery(max_price_per_gpu_hour=Decimal("1.5")), ["aws:l4", "aws:h100-spot",
                                                             "vast:gh200"]),
        (OfferQuery(supplier="vast", spot=False), ["vast:gh200", "vast:h100-bare",
                                                   "vast:h100-nvl"]),
        (OfferQuery(spot=True), ["aws:h100-spot"]),
        (OfferQuery(suppliers_excluded=("vast",)), ["aws:l4", "aws:h100-spot", "aws:h100-sxm"]),
    ],
)
async def test_filters(book: OfferBook, query: OfferQuery, expected: list[str]) -> None:
    assert ids(book.query(query, T0)) == expected


async def test_expired_and_sold_out_only_on_request(book: OfferBook) -> None:
    visible = ids(book.query(OfferQuery(), T0))
    assert "aws:stale" not in visible and "aws:sold-out" not in visible
    everything = book.query(OfferQuery(include_unavailable=True), T0)
    assert ids(everything)[:2] == ["aws:stale", "aws:sold-out"]
    assert len(everything) == len(book.all_offers()) == 8
    # an offer expires exactly at expires_at
    assert "aws:l4" not in ids(book.query(OfferQuery(), T0 + 300))


async def test_sorted_by_price_then_id() -> None:
    b = OfferBook()
    await b.update("aws", [offer("b", price="1.0"), offer("a", price="1.0"),
                           offer("c", price="0.9")], T0)
    assert ids(b.query(OfferQuery(), T0)) == ["aws:c", "aws:a", "aws:b"]


async def test_lookups(book: OfferBook) -> None:
    assert book.suppliers() == ["aws", "vast"]
    assert book.updated_at("aws") == T0 and book.updated_at("gcp") is None
    found = book.get("vast:h100-nvl")
    assert found is not None and found.sku == "H100-94GB-NVL"
    assert book.get("vast:nope") is None


async def test_snapshot_must_belong_to_the_supplier() -> None:
    b = OfferBook()
    with pytest.raises(InvalidRequest, match="belongs to vast"):
        await b.update("aws", [offer("x", supplier="vast")], T0)
    with pytest.raises(InvalidRequest, match="twice"):
        await b.update("aws", [offer("x"), offer("x")], T0)


async def test_snapshot_diffs_become_events(event_log: EventLog) -> None:
    b = OfferBook(event_log)
    a, c, d = offer("a", price="2.0000"), offer("c", available=3), offer("d")
    await b.update("aws", [a, c, d], T0)
    added = await event_log.read(kind="offer.")
    assert [(e["kind"], e["subject"]) for e in added] == [
        (EventKind.OFFER_ADDED, "aws:a"), (EventKind.OFFER_ADDED, "aws:c"),
        (EventKind.OFFER_ADDED, "aws:d"),
    ]
    assert added[0]["data"] == {
        "supplier": "aws", "sku": "H100-80GB-SXM", "gpu_name": "NVIDIA H100 SXM5",
        "gpu_count": 8, "region": "us-east-1", "price_per_gpu_hour": "2.0000",
        "available": 3, "spot": False,
    }
    assert all(e["ts"] == T0 for e in added)

    # a: price moves; c: availability moves; d: only its expiry is refreshed; e: new; gone: none
    await b.update("aws", [replace(a, price_per_gpu_hour=Decimal("2.1000")),
                           replace(c, available=1), replace(d, expires_at=T0 + 600),
                           offer("e")], T0 + 60)
    await b.update("aws", [offer("e")], T0 + 120)
    await b.update("aws", [offer("e")], T0 + 180)  # no change: no events
    later = (await event_log.read(kind="offer.", since=T0 + 1))
    assert [(e["ts"], e["kind"], e["subject"]) for e in later] == [
        (T0 + 60, "offer.changed", "aws:a"),
        (T0 + 60, "offer.changed", "aws:c"),
        (T0 + 60, "offer.added", "aws:e"),
        (T0 + 120, "offer.removed", "aws:a"),
        (T0 + 120, "offer.removed", "aws:c"),
        (T0 + 120, "offer.removed", "aws:d"),
    ]
    assert later[0]["data"]["price_per_gpu_hour"] == "2.1000"
    assert later[0]["data"]["previous_price_per_gpu_hour"] == "2.0000"
    assert later[1]["data"]["available"] == 1
    assert ids(b.all_offers()) == ["aws:e"]
