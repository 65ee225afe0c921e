"""Money rounding and lease billing arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cambist.domain.lease import Lease, LeaseState, billable_seconds
from cambist.domain.money import from_micros, to_micros, usd


def test_money_never_from_float() -> None:
    with pytest.raises(TypeError):
        usd(0.1)  # type: ignore[arg-type]
    assert usd("0.1") + usd("0.2") == usd("0.3")


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=9,
                   allow_nan=False, allow_infinity=False))
def test_micros_round_trip_within_half_a_micro(x: Decimal) -> None:
    assert abs(from_micros(to_micros(x)) - x) <= Decimal("0.0000005")


def test_half_up() -> None:
    assert to_micros(Decimal("0.0000005")) == 1
    assert to_micros(Decimal("-0.0000005")) == -1
    assert to_micros(Decimal("0.00000049")) == 0


@given(st.floats(0, 1e6), st.integers(1, 3600), st.integers(0, 3600))
def test_billable_seconds(elapsed: float, inc: int, minimum: int) -> None:
    b = billable_seconds(elapsed, inc, minimum)
    if elapsed == 0:
        assert b == 0
    else:
        assert b >= elapsed and b >= minimum and (b % inc == 0 or b == minimum)


def _lease(**kw: object) -> Lease:
    base = dict(id="l", supplier="s", supplier_lease_id="x", offer_id="o", sku="L4-24GB",
                gpu_name="L4", gpu_count=1, region="r", price_per_hour=Decimal("3.60"),
                spot=False, owner=None, state=LeaseState.PROVISIONING, created_at=0.0,
                billing_increment_s=1, billing_minimum_s=60)
    base.update(kw)
    return Lease(**base)  # type: ignore[arg-type]


def test_lease_accrues_per_second_with_minimum() -> None:
    lease = _lease().transition(LeaseState.RUNNING, 100.0)
    assert lease.cost_until(110.0) == Decimal("0.06")  # 60 s minimum at $3.60/h
    assert lease.cost_until(200.0) == Decimal("0.1")
    ended = lease.transition(LeaseState.RELEASING, 200.0).transition(LeaseState.RELEASED, 200.0)
    assert ended.cost_until(10_000.0) == Decimal("0.1")
    assert ended.cost_at(150.0) == Decimal("0.06")


def test_illegal_transition() -> None:
    with pytest.raises(ValueError):
        _lease().transition(LeaseState.RELEASED, 1.0)
