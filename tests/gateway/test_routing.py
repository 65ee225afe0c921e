"""The routing table's score, choice, circuit breaker and refresh loop."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from cambist.domain.clock import ManualClock
from cambist.domain.endpoint import Endpoint
from cambist.domain.money import to_micros
from cambist.gateway import RoutingRefresh, RoutingTable
from cambist.gateway.routing import QUEUE_PENALTY_PER_MTOK
from cambist.store.schema import endpoints, metadata


def ep(name: str, cost: str = "3.60", cap: float = 1000.0, *, model: str = "m",
       mc: int = 10, healthy: bool = True, url: str = "http://h:1") -> Endpoint:
    return Endpoint(id=name, model=model, url=url, supplier="s", owner=None, healthy=healthy,
                    cost_per_hour=Decimal(cost), capacity_tok_s=cap, max_concurrency=mc)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_marginal_cost_formula(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("a", "3.60", 1000.0, mc=10)])
    [route] = table.routes("m")
    assert route.avg_cost_per_mtok == pytest.approx(1.0)  # $3.60/h over 3.6 Mtok/h
    assert table.marginal_cost(route) == 0.0
    table.stats("a").in_flight = 5
    assert table.marginal_cost(route) == pytest.approx(0.25)
    table.stats("a").in_flight = 10
    assert table.marginal_cost(route) == pytest.approx(1.0 + QUEUE_PENALTY_PER_MTOK)
    table.stats("a").in_flight = 12
    assert table.marginal_cost(route) == pytest.approx(1.44 + 3 * QUEUE_PENALTY_PER_MTOK)


def test_idle_cheap_first_then_spread_by_marginal_cost(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("pricey", "36.0"), ep("cheap", "3.60")])
    assert table.choose("m").id == "cheap"
    table.acquire(table.choose("m"))
    # cheap now has load 0.1 -> marginal 0.01 $/Mtok; the idle pricey one costs 0 at the margin
    assert table.choose("m").id == "pricey"
    table.acquire(table.choose("m"))
    # pricey at load 0.1 costs 0.1; cheap at 0.1 costs 0.01
    assert table.choose("m").id == "cheap"


def test_saturated_endpoint_ranks_after_any_with_a_free_slot(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("cheap", "0.36", mc=2), ep("pricey", "360", mc=100)])
    table.stats("cheap").in_flight = 2
    table.stats("pricey").in_flight = 99
    assert table.choose("m").id == "pricey"


def test_ties_prefer_fewer_in_flight_then_stable_order(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("b", "0"), ep("a", "0"), ep("c", "0")])  # free capacity: marginal 0
    assert table.choose("m").id == "a"
    table.stats("a").in_flight = 1
    assert table.choose("m").id == "b"
    assert table.choose("m", {"b"}).id == "c"
    assert table.choose("m", {"a", "b", "c"}) is None
    assert table.choose("other") is None


def test_unhealthy_and_unknown_capacity(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("sick", "0", healthy=False), ep("unknown", "2.0", 0.0), ep("known", "50")])
    assert [r.id for r in table.healthy("m")] == ["known", "unknown"]
    assert table.choose("m").id == "known"  # idle, known cost ranks first in stable order
    table.stats("known").in_flight = 1
    assert table.choose("m").id == "unknown"  # idle unknown: nothing at the margin
    table.stats("unknown").in_flight = 1
    assert table.choose("m").id == "known"  # busy unknown-capacity is a last resort


def test_circuit_opens_skips_and_recovers(clock: ManualClock) -> None:
    table = RoutingTable(clock, circuit_open_s=5.0, circuit_max_s=30.0)
    table.swap([ep("a", "1"), ep("b", "9")])
    a = table.choose("m")
    assert a.id == "a"
    assert table.record_failure(a) == clock.now() + 5.0
    assert table.choose("m").id == "b"
    clock.advance(5.0)
    assert table.choose("m").id == "a"
    table.record_failure(a)
    assert table.stats("a").circuit_open_until == clock.now() + 10.0  # doubles
    # every candidate open: probe the one that reopens soonest instead of failing
    table.record_failure(table.routes("m")[1])
    assert table.choose("m").id == "b"
    table.record_success(a, ttft_ms=100.0)
    assert table.stats("a").consecutive_failures == 0
    assert table.choose("m").id == "a"
    table.record_success(a, ttft_ms=200.0)
    assert table.stats("a").ewma_ttft_ms == pytest.approx(120.0)


def test_swap_keeps_stats_of_kept_endpoints(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("a"), ep("b")])
    table.stats("a").in_flight = 3
    table.stats("b").consecutive_failures = 2
    table.swap([ep("a"), ep("c", model="n")])
    assert table.stats("a").in_flight == 3
    assert table.stats("b").consecutive_failures == 0  # dropped with its endpoint
    assert table.models() == ["m", "n"]


def test_base_url_and_compute_cost(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("a", url="http://h:1/"), ep("b", "7.2", 500.0, url="http://h:2/v1")])
    a, b = sorted(table.routes("m"), key=lambda r: r.id)
    assert a.url("/chat/completions") == "http://h:1/v1/chat/completions"
    assert b.url("/embeddings") == "http://h:2/v1/embeddings"
    assert b.compute_cost(900) == Decimal("7.2") * 900 / Decimal("500.0") / 3600
    table.swap([ep("z", cap=0.0)])
    assert table.routes("m")[0].compute_cost(900) == 0


async def test_refresh_loads_live_rows(tmp_path: Path, clock: ManualClock) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            base = {"model": "m", "url": "http://h:1", "supplier": "s", "owner": None,
                    "deployment": None, "lease_id": None, "sku": "H100", "region": "us",
                    "capacity_tok_s": 1000.0, "max_concurrency": 16, "context_length": 4096,
                    "created_at": 1.0}
            await conn.execute(insert(endpoints), [
                {**base, "id": "live", "healthy": True,
                 "cost_per_hour_micros": to_micros(Decimal("2.5")), "removed_at": None},
                {**base, "id": "sick", "healthy": False, "cost_per_hour_micros": 1,
                 "removed_at": None},
                {**base, "id": "gone", "healthy": True, "cost_per_hour_micros": 1,
                 "removed_at": 2.0},
            ])
        table = RoutingTable(clock)
        loop = RoutingRefresh(engine, table, clock)
        assert loop.name and loop.interval_s == 0.5
        await loop.step(clock.now())
        assert sorted(r.id for r in table.routes("m")) == ["live", "sick"]
        [live] = table.healthy("m")
        assert live.endpoint.cost_per_hour == Decimal("2.5")
        assert (live.endpoint.max_concurrency, live.endpoint.context_length) == (16, 4096)
        assert loop.refreshed_at == clock.now()
    finally:
        await engine.dispose()


def test_dedicated_endpoints_serve_only_their_owner(clock: ManualClock) -> None:
    from dataclasses import replace

    table = RoutingTable(clock)
    shared = ep("shared", "9.00")
    mine = replace(ep("mine", "0.10"), owner="ten_a")
    table.swap([shared, mine])
    assert table.choose("m", tenant="ten_a").id == "mine"  # type: ignore[union-attr]
    assert table.choose("m", tenant="ten_b").id == "shared"  # type: ignore[union-attr]
    assert {r.id for r in table.healthy("m", "ten_b")} == {"shared"}
    table.swap([mine])
    assert table.choose("m", tenant="ten_b") is None


def test_own_dedicated_endpoint_meters_without_charge() -> None:
    from dataclasses import replace

    from cambist.domain.billing import ModelPrice, Principal
    from cambist.gateway.metering import Meter, Usage
    from cambist.testing import FakeWallet

    clock = ManualClock()
    table = RoutingTable(clock)
    table.swap([replace(ep("mine", "1.00"), owner="ten_a"), ep("shared", "1.00")])
    wallet = FakeWallet({"ten_a": Decimal(10)})
    price = ModelPrice("m", "standard", Decimal(1), Decimal(2), 1)
    charged = {}
    for rid, route_id in (("r1", "mine"), ("r2", "shared")):
        route = next(r for r in table.routes("m") if r.id == route_id)
        res = wallet.reserve("ten_a", Decimal(1), rid)
        meter = Meter(wallet, res, price, Principal("k", "ten_a", "inference"), rid, "m",
                      clock.now(), 0.0, False)
        charged[route_id] = meter.settle(route, Usage(100, 100, 0), "ok", None)
    assert charged["mine"] == 0 and charged["shared"] > 0
    assert [r.completion_tokens for r in wallet.records] == [100, 100]
