"""A request's price in whole micro-dollars, worked out in integers, is exactly
the Decimal price rounded once (half up), whatever the prices' places."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from cambist.domain.billing import ModelPrice, Reservation
from cambist.domain.money import to_micros

tokens = st.integers(min_value=0, max_value=10**8)


@st.composite
def prices(draw: st.DrawFn) -> Decimal:
    places = draw(st.integers(min_value=0, max_value=12))  # past the integer path's 9 too
    whole = draw(st.integers(min_value=0, max_value=10**4 * 10**places))
    return Decimal(whole).scaleb(-places)


@given(prices(), prices(), tokens, tokens)
def test_charge_micros_is_the_charge_rounded_once(
        price_in: Decimal, price_out: Decimal, prompt: int, completion: int) -> None:
    price = ModelPrice("m", "standard", price_in, price_out, 1)
    assert price.charge_micros(prompt, completion) == to_micros(price.charge(prompt, completion))


def test_halves_round_up_and_odd_prices_fall_back_to_decimal() -> None:
    half = ModelPrice("m", "standard", Decimal("0.5"), Decimal("1.5"), 1)
    assert half.charge_micros(1, 0) == 1 and half.charge_micros(0, 1) == 2
    assert half.charge_micros(3, 1) == 3  # 1.5 + 1.5
    tiny = ModelPrice("m", "standard", Decimal("1E-15"), Decimal("0.1234567891234"), 1)
    assert tiny.charge_micros(10**6, 10**6) == to_micros(tiny.charge(10**6, 10**6)) == 123457
    assert ModelPrice("m", "standard", Decimal("2E+3"), Decimal(0), 1).charge_micros(3, 0) == 6000
    assert half == ModelPrice("m", "standard", Decimal("0.50"), Decimal("1.50"), 1)  # equal prices


def test_a_reservation_holds_whole_micro_dollars() -> None:
    r = Reservation("rsv_1", "ten_a", 617)
    assert r.amount == Decimal("0.000617")
