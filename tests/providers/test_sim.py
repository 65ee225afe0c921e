"""Simulated suppliers: calibration on the catalog, dynamics, determinism, spot."""

from __future__ import annotations

import itertools
import statistics
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from cambist.domain.errors import OfferUnavailable
from cambist.domain.lease import LeaseState
from cambist.domain.offer import Offer
from cambist.providers import SIM_SUPPLIERS, SimSupplier
from cambist.providers.catalog import (
    catalog_suppliers,
    jurisdiction_of,
    load_price_levels,
    price_levels_for,
)
from cambist.providers.sim import spread_prices

T0 = 1_767_225_600.0
HOUR = 3600.0


def _snapshot(offers: list[Offer]) -> list[tuple[str, Decimal, int]]:
    return [(o.id, o.price_per_gpu_hour, o.available) for o in offers]


async def _run(sim: SimSupplier, hours: int, every_s: float = HOUR) -> list[list[Offer]]:
    seen = []
    for k in range(hours * int(HOUR / every_s) + 1):
        now = T0 + k * every_s
        await sim.step(now)
        seen.append(await sim.list_offers(now))
    return seen


def test_every_catalog_supplier_is_simulated() -> None:
    assert len(SIM_SUPPLIERS) >= 6
    assert sorted(SIM_SUPPLIERS) == catalog_suppliers()


@pytest.mark.parametrize("name", SIM_SUPPLIERS)
async def test_median_price_is_calibrated(tmp_path: Path, name: str) -> None:
    offers = [o for o in await SimSupplier(name, tmp_path).list_offers(T0) if not o.spot]
    rows = price_levels_for(name)
    lo, hi = min(r.min_price for r in rows), max(r.max_price for r in rows)
    assert lo <= statistics.median(o.price_per_gpu_hour for o in offers) <= hi
    assert len(offers) == sum(r.offers_seen for r in rows)
    for row in rows:
        prefix = f"{name}:{row.gpu.lower().replace('_', '-')}-"
        mine = [o.price_per_gpu_hour for o in offers
                if o.id.startswith(prefix) and o.id[len(prefix):].isdigit()]
        assert len(mine) == row.offers_seen
        assert min(mine) == row.min_price and max(mine) == row.max_price
        assert row.min_price <= statistics.median(mine) <= row.max_price
        if row.offers_seen % 2:
            assert statistics.median(mine) == row.median_price


def test_spread_prices_hits_min_median_max() -> None:
    row = next(r for r in load_price_levels() if r.supplier == "gcp" and r.gpu == "H100")
    prices = spread_prices(row, 5)
    assert prices == sorted(prices)
    assert (prices[0], prices[2], prices[4]) == (row.min_price, row.median_price, row.max_price)


async def test_prices_and_capacity_move_within_a_sane_band(tmp_path: Path) -> None:
    sim = SimSupplier("vast", tmp_path)
    base = {o.id: o.price_per_gpu_hour for o in await sim.list_offers(T0)}
    history = await _run(sim, hours=48)
    moved = {o.id for snap in history for o in snap if o.price_per_gpu_hour != base[o.id]}
    assert len(moved) > len(base) // 2
    for snap in history:
        for o in snap:
            assert base[o.id] / 2 <= o.price_per_gpu_hour <= base[o.id] * 2
            assert o.price_per_gpu_hour == o.price_per_gpu_hour.quantize(Decimal("0.0001"))
    availability = {(o.id, o.available) for snap in history for o in snap}
    assert len(availability) > len(base)


async def test_hyperscaler_prices_are_calmer_than_marketplaces(tmp_path: Path) -> None:
    async def spread(name: str) -> float:
        sim = SimSupplier(name, tmp_path / name)
        base = {o.id: o.price_per_gpu_hour for o in await sim.list_offers(T0)}
        last = (await _run(sim, hours=24))[-1]
        return max(abs(float(o.price_per_gpu_hour / base[o.id]) - 1) for o in last)

    assert await spread("aws") < await spread("vast")


async def test_offers_vanish_and_come_back_under_stable_ids(tmp_path: Path) -> None:
    sim = SimSupplier("vast", tmp_path)
    all_ids = {o.id for o in await sim.list_offers(T0)}
    history = await _run(sim, hours=24, every_s=600)
    present = [{o.id for o in snap} for snap in history]
    assert all(ids <= all_ids for ids in present)
    gone = [oid for oid in all_ids if any(oid not in ids for ids in present)]
    assert gone
    returned = [oid for oid in gone
                if any(oid not in a and oid in b for a, b in itertools.pairwise(present))]
    assert returned

    # Leasing an offer while it is withdrawn fails, with a quote that has not expired.
    sim2 = SimSupplier("vast", tmp_path / "again")
    first = {o.id: o for o in await sim2.list_offers(T0)}
    k = next(k for k, ids in enumerate(present) if all_ids - ids)
    for j in range(k + 1):
        await sim2.step(T0 + j * 600)
    now = T0 + k * 600
    stale = first[sorted(all_ids - present[k])[0]]
    with pytest.raises(OfferUnavailable, match="withdrawn"):
        await sim2.lease(replace(stale, expires_at=now + 60), now, "tok-stale")


async def test_same_seed_same_market(tmp_path: Path) -> None:
    a = SimSupplier("runpod", tmp_path / "a", seed=11)
    b = SimSupplier("runpod", tmp_path / "b", seed=11)
    c = SimSupplier("runpod", tmp_path / "c", seed=12)
    ha, hb, hc = [await _run(s, hours=12) for s in (a, b, c)]
    assert [_snapshot(s) for s in ha] == [_snapshot(s) for s in hb]
    assert [_snapshot(s) for s in ha] != [_snapshot(s) for s in hc]


async def test_leasing_does_not_disturb_the_market(tmp_path: Path) -> None:
    a = SimSupplier("aws", tmp_path / "a", provision_delay_s=0)
    b = SimSupplier("aws", tmp_path / "b", provision_delay_s=0)
    offer = next(o for o in await a.list_offers(T0) if o.spot and o.available)
    await a.lease(offer, T0, "tok")
    for k in range(1, 6):
        await a.step(T0 + k * HOUR)
        await b.step(T0 + k * HOUR)
    pa = {o.id: o.price_per_gpu_hour for o in await a.list_offers(T0 + 5 * HOUR)}
    pb = {o.id: o.price_per_gpu_hour for o in await b.list_offers(T0 + 5 * HOUR)}
    assert pa == pb


@pytest.mark.parametrize(("rate", "expect"), [(3600.0, "preempted"), (0.0, "running")])
async def test_spot_preemption_rate(tmp_path: Path, rate: float, expect: str) -> None:
    sim = SimSupplier("aws", tmp_path, spot_preemption_per_hour=rate, provision_delay_s=0)
    spots = [o for o in await sim.list_offers(T0) if o.spot and o.available][:5]
    leases = [await sim.lease(o, T0, f"tok-{o.id}") for o in spots]
    for k in range(1, 25):
        await sim.step(T0 + k * HOUR)
    later = T0 + 24 * HOUR
    states = [(await sim.lease_status(le.supplier_lease_id, later)) for le in leases]
    assert {s.state for s in states} == {LeaseState(expect)}
    if expect == "preempted":
        assert all(s.preempt_at is not None and s.preempt_at <= later for s in states)
        # the units came back
        now = {o.id: o.available for o in await sim.list_offers(later)}
        assert all(now[o.id] >= 0 for o in spots)
    # on-demand leases are never preempted
    od = next(o for o in await sim.list_offers(later) if not o.spot and o.available)
    status = await sim.lease(od, later, "tok-od")
    assert status.preempt_at is None


async def test_provisioning_then_running(tmp_path: Path) -> None:
    sim = SimSupplier("gcp", tmp_path, provision_delay_s=2.0)
    offer = next(o for o in await sim.list_offers(T0) if o.available)
    lease = await sim.lease(offer, T0, "tok")
    assert lease.state == LeaseState.PROVISIONING
    assert (await sim.lease_status(lease.supplier_lease_id, T0 + 1.9)).state == "provisioning"
    assert (await sim.lease_status(lease.supplier_lease_id, T0 + 2.0)).state == "running"


async def test_supplier_profiles_shape_the_offers(tmp_path: Path) -> None:
    aws = await SimSupplier("aws", tmp_path).list_offers(T0)
    h100 = [o for o in aws if o.sku == "H100-80GB-SXM"]
    assert h100 and all(o.gpu_count == 8 and o.interconnect == "nvlink" for o in h100)
    assert all((o.billing_increment_s, o.billing_minimum_s) == (1, 60) for o in aws)
    assert all(o.term_prices and o.term_prices[0].months == 12 for o in aws if not o.spot)
    assert all(o.preemption_notice_s == 120 for o in aws if o.spot)
    assert {o.jurisdiction for o in aws} >= {"US", "EU", "JP"}
    vast = await SimSupplier("vast", tmp_path).list_offers(T0)
    assert all((o.billing_increment_s, o.billing_minimum_s) == (1, 0) for o in vast)
    assert {o.gpu_count for o in vast} <= {1, 2, 4, 8}
    assert any(o.sku is None for o in vast)
    lam = await SimSupplier("lambda", tmp_path).list_offers(T0)
    assert all(o.billing_increment_s == 60 for o in lam)
    assert len({o.region for o in lam}) > 5
    small = [o for o in aws if o.sku == "L4-24GB"]
    assert 1 in {o.gpu_count for o in small}
    for o in (o for o in aws if o.spot):
        assert o.price_per_gpu_hour < max(x.price_per_gpu_hour for x in aws if not x.spot)


@pytest.mark.parametrize(
    ("region", "expected"),
    [("us-east-1", "US"), ("eu-west-2", "GB"), ("eu-central-1", "EU"), ("ap-northeast-1", "JP"),
     ("Bavaria, DE, EU", "EU"), ("Quebec, CA, NA", "CA"), ("US, NA", "US"), ("FIN-03", "EU"),
     ("tokyo-japan-1", "JP"), ("warsaw-poland-1", "EU"), ("default", "unknown")],
)
def test_jurisdictions(region: str, expected: str) -> None:
    assert jurisdiction_of(region) == expected
