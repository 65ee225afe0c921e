"""The contract every supplier adapter passes: each sim supplier and the local one."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cambist.domain.errors import OfferUnavailable
from cambist.domain.lease import LeaseState
from cambist.domain.offer import Offer
from cambist.domain.sku import gpu_specs
from cambist.providers import (
    SIM_SUPPLIERS,
    EngineSpec,
    LocalGpu,
    LocalSupplier,
    Supplier,
    build_default_registry,
    list_engine_records,
    pid_alive,
)

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
T0 = 1_767_225_600.0  # 2026-01-01T00:00Z
ALL_SUPPLIERS = [*SIM_SUPPLIERS, "local"]


def _supplier(state_dir: Path, name: str) -> Supplier:
    registry = build_default_registry(
        state_dir, provision_delay_s=0,
        reference_engine_argv=[sys.executable, str(FAKE_ENGINE)],
    )
    return registry.get(name)


@pytest.fixture(params=ALL_SUPPLIERS)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def supplier(tmp_path: Path, name: str) -> Supplier:
    return _supplier(tmp_path, name)


async def _leasable(s: Supplier, now: float = T0) -> Offer:
    offers = [o for o in await s.list_offers(now) if o.available > 0 and not o.spot]
    assert offers, f"{s.name} lists nothing leasable"
    return min(offers, key=lambda o: (o.available, o.id))


async def _current(s: Supplier, offer_id: str, now: float) -> Offer:
    return next(o for o in await s.list_offers(now) if o.id == offer_id)


def test_registry_lists_every_adapter(tmp_path: Path) -> None:
    registry = build_default_registry(tmp_path)
    assert registry.names() == sorted(ALL_SUPPLIERS)
    assert all(isinstance(s, Supplier) for s in registry.all())


async def test_offers_are_normalized(supplier: Supplier, name: str) -> None:
    offers = await supplier.list_offers(T0)
    assert offers
    assert len({o.id for o in offers}) == len(offers)
    known = gpu_specs()
    for o in offers:
        assert o.id.startswith(f"{name}:") and o.supplier == name
        assert isinstance(o.price_per_gpu_hour, Decimal) and o.price_per_gpu_hour >= 0
        assert o.price_per_gpu_hour == o.price_per_gpu_hour.quantize(Decimal("0.0001"))
        assert o.gpu_count >= 1 and o.vram_gib > 0 and o.available >= 0
        assert o.expires_at > T0
        assert o.region and o.jurisdiction and o.gpu_name
        assert o.billing_increment_s >= 1 and o.billing_minimum_s >= 0
        assert o.sku in known if o.sku is not None else o.sku_note
        assert o.interconnect in ("nvlink", "pcie")
        assert (o.preemption_notice_s is not None) <= o.spot
        for term in o.term_prices:
            assert isinstance(term.price_per_gpu_hour, Decimal)


async def test_lease_is_idempotent_on_client_token(supplier: Supplier) -> None:
    offer = await _leasable(supplier)
    first = await supplier.lease(offer, T0, "tok-1")
    again = await supplier.lease(offer, T0, "tok-1")
    assert again == first
    assert (await _current(supplier, offer.id, T0)).available == offer.available - 1
    other = await supplier.lease(offer, T0, "tok-2") if offer.available > 1 else None
    assert other is None or other.supplier_lease_id != first.supplier_lease_id


async def test_vanished_offer_is_unavailable(supplier: Supplier, name: str) -> None:
    offer = await _leasable(supplier)
    ghost = replace(offer, id=f"{name}:no-such-offer")
    with pytest.raises(OfferUnavailable, match="no-such-offer"):
        await supplier.lease(ghost, T0, "tok-ghost")


async def test_expired_offer_is_unavailable(supplier: Supplier) -> None:
    offer = await _leasable(supplier)
    with pytest.raises(OfferUnavailable, match="expired"):
        await supplier.lease(offer, offer.expires_at + 1, "tok-late")


async def test_sold_out_offer_is_unavailable(supplier: Supplier) -> None:
    offer = await _leasable(supplier)
    for i in range(offer.available):
        await supplier.lease(offer, T0, f"tok-{i}")
    assert (await _current(supplier, offer.id, T0)).available == 0
    with pytest.raises(OfferUnavailable, match=offer.id):
        await supplier.lease(offer, T0, "tok-one-too-many")


async def test_lease_reaches_running(supplier: Supplier) -> None:
    offer = await _leasable(supplier)
    lease = await supplier.lease(offer, T0, "tok-run")
    assert lease.offer_id == offer.id
    assert lease.state in (LeaseState.PROVISIONING, LeaseState.RUNNING)
    status = await supplier.lease_status(lease.supplier_lease_id, T0 + 1)
    assert status.state == LeaseState.RUNNING


async def test_release_is_idempotent_and_restores_availability(supplier: Supplier) -> None:
    offer = await _leasable(supplier)
    lease = await supplier.lease(offer, T0, "tok-rel")
    assert (await _current(supplier, offer.id, T0 + 1)).available == offer.available - 1
    done = await supplier.release(lease.supplier_lease_id, T0 + 2)
    assert done.state == LeaseState.RELEASED
    twice = await supplier.release(lease.supplier_lease_id, T0 + 3)
    assert twice.state == LeaseState.RELEASED
    assert (await supplier.lease_status(lease.supplier_lease_id, T0 + 4)).state == "released"
    assert (await _current(supplier, offer.id, T0 + 4)).available == offer.available


async def test_state_survives_a_new_adapter(tmp_path: Path, name: str) -> None:
    first = _supplier(tmp_path, name)
    offer = await _leasable(first)
    lease = await first.lease(offer, T0, "tok-keep")
    second = _supplier(tmp_path, name)
    status = await second.lease_status(lease.supplier_lease_id, T0 + 1)
    assert status.state == LeaseState.RUNNING and status.offer_id == offer.id
    assert (await second.lease(offer, T0 + 1, "tok-keep")).supplier_lease_id == \
        lease.supplier_lease_id
    assert (await _current(second, offer.id, T0 + 1)).available == offer.available - 1
    await second.release(lease.supplier_lease_id, T0 + 2)
    third = _supplier(tmp_path, name)
    assert (await third.lease_status(lease.supplier_lease_id, T0 + 3)).state == "released"


def test_unsupported_features_carry_reasons(supplier: Supplier) -> None:
    assert isinstance(supplier.unsupported, dict)
    for feature, reason in supplier.unsupported.items():
        assert isinstance(feature, str) and feature
        assert isinstance(reason, str) and reason.strip()


async def test_launch_and_stop_engine(supplier: Supplier, tmp_path: Path, name: str) -> None:
    offer = await _leasable(supplier)
    spec = EngineSpec(model="qwen2.5-7b", sku=offer.sku or "RTX4090-24GB",
                      gpu_count=offer.gpu_count, lease_id=f"lease_{name}")
    handle = await supplier.launch_engine(spec)
    try:
        assert handle.pid is not None and pid_alive(handle.pid)
        assert handle.lease_id == spec.lease_id and handle.model == spec.model
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{handle.url}/health")).status_code == 200
        assert [r.lease_id for r in list_engine_records(tmp_path)] == [spec.lease_id]
    finally:
        await supplier.stop_engine(handle)
    assert not pid_alive(handle.pid)
    assert list_engine_records(tmp_path) == []
    await supplier.stop_engine(handle)  # already gone: no error


@pytest.mark.skipif(
    importlib.util.find_spec("cambist.engine.__main__") is None,
    reason="the reference engine (cambist.engine.__main__) is not in this tree yet",
)
async def test_real_reference_engine_on_local_supplier(tmp_path: Path) -> None:
    local = LocalSupplier([LocalGpu("RTX4090-24GB", 1, Decimal("0.35"))], tmp_path)
    spec = EngineSpec(model="qwen2.5-7b", sku="RTX4090-24GB", gpu_count=1,
                      lease_id="lease_real", time_scale=0.01)
    handle = await local.launch_engine(spec)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{handle.url}/health")).status_code == 200
    finally:
        await local.stop_engine(handle)
    assert handle.pid is not None and not pid_alive(handle.pid)
