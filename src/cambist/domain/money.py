"""Exact money.

All amounts are ``Decimal`` US dollars in memory and whole micro-dollars
(``int``, 1 USD = 1_000_000) at rest. The one rounding rule: an amount is
rounded to whole micro-dollars with ROUND_HALF_UP exactly once, when it is
posted (charged, reserved or journaled); intermediate arithmetic stays exact.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = [
    "MICROS_PER_USD",
    "ZERO",
    "format_usd",
    "from_micros",
    "quantize_usd",
    "to_micros",
    "usd",
]

MICROS_PER_USD = 1_000_000
ZERO = Decimal(0)
_MICRO = Decimal("0.000001")


def usd(value: str | int | Decimal) -> Decimal:
    """Build a dollar amount from a string, int or Decimal (never a float)."""
    if isinstance(value, float):
        raise TypeError("money must not be built from float; pass a string")
    return Decimal(value)


def to_micros(amount: Decimal) -> int:
    """Round a dollar amount to whole micro-dollars (ROUND_HALF_UP)."""
    return int((amount * MICROS_PER_USD).to_integral_value(rounding=ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    """Turn whole micro-dollars back into an exact dollar amount."""
    return Decimal(micros) / MICROS_PER_USD


def quantize_usd(amount: Decimal) -> Decimal:
    """Round to whole micro-dollars, staying a Decimal."""
    return amount.quantize(_MICRO, rounding=ROUND_HALF_UP)


def format_usd(amount: Decimal, places: int = 4) -> str:
    """Human display: ``$1.2345``."""
    q = Decimal(1).scaleb(-places)
    return f"${amount.quantize(q, rounding=ROUND_HALF_UP)}"
