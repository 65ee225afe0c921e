"""Offers: normalized units of rentable GPU capacity, whatever the supplier."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["Offer", "OfferQuery", "TermPrice"]


@dataclass(frozen=True, slots=True)
class TermPrice:
    """A committed-term discount: price per GPU-hour for a term of ``months``."""

    months: int
    price_per_gpu_hour: Decimal


@dataclass(frozen=True, slots=True)
class Offer:
    """One rentable configuration (an instance type in a region) at a price.

    ``sku`` is the canonical SKU or ``None`` when the supplier's name could not
    be mapped without guessing (``sku_note`` says why); such offers are listed
    and rentable but the performance model will not quote them.
    """

    id: str
    supplier: str
    gpu_name: str
    sku: str | None
    gpu_count: int
    vram_gib: float
    region: str
    jurisdiction: str
    price_per_gpu_hour: Decimal
    spot: bool
    available: int
    expires_at: float
    billing_increment_s: int = 1
    billing_minimum_s: int = 60
    preemption_notice_s: int | None = None
    term_prices: tuple[TermPrice, ...] = ()
    interconnect: str | None = None
    async_provisioning: bool = True
    sku_note: str = ""

    @property
    def price_per_hour(self) -> Decimal:
        """Price of the whole unit (all its GPUs) per hour."""
        return self.price_per_gpu_hour * self.gpu_count

    @property
    def total_vram_gib(self) -> float:
        return self.vram_gib * self.gpu_count


@dataclass(frozen=True, slots=True)
class OfferQuery:
    """Filters for the offer book; ``None`` means no constraint."""

    gpu: str | None = None
    count: int | None = None
    min_vram_gib: float | None = None
    region: str | None = None
    max_price_per_gpu_hour: Decimal | None = None
    supplier: str | None = None
    spot: bool | None = None
    include_unavailable: bool = False
    suppliers_excluded: tuple[str, ...] = field(default=())
