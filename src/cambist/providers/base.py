"""The supplier protocol: one small adapter per source of GPU supply.

An adapter lists normalized :class:`~cambist.domain.offer.Offer` objects,
leases and releases capacity, and launches an inference engine on a lease.
What an adapter cannot do is declared as data with a reason
(``unsupported``), never discovered by a failing call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cambist.domain.lease import LeaseState
from cambist.domain.offer import Offer

__all__ = [
    "EngineHandle",
    "EngineSpec",
    "Supplier",
    "SupplierLease",
    "SupplierRegistry",
]


@dataclass(frozen=True, slots=True)
class SupplierLease:
    """The supplier's view of one lease."""

    supplier_lease_id: str
    offer_id: str
    state: LeaseState
    detail: str = ""
    preempt_at: float | None = None  # spot: when the supplier will take it back


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What to run on a lease: a catalog model on the leased GPUs."""

    model: str
    sku: str
    gpu_count: int
    lease_id: str
    time_scale: float = 1.0  # reference engine only: <1 runs the simulated GPU faster


@dataclass(frozen=True, slots=True)
class EngineHandle:
    """A running engine: where it listens and how to find it again."""

    url: str
    pid: int | None
    lease_id: str
    model: str


@runtime_checkable
class Supplier(Protocol):
    """One source of GPU supply."""

    name: str
    unsupported: dict[str, str]
    """Feature -> reason, for what this adapter cannot do (e.g. ``{"spot": "..."}``)."""

    async def list_offers(self, now: float) -> list[Offer]:
        """Offers available at ``now``, normalized."""
        ...

    async def lease(self, offer: Offer, now: float, client_token: str) -> SupplierLease:
        """Rent one unit of ``offer``. Idempotent on ``client_token``.
        Raises ``OfferUnavailable`` if it expired, vanished or is sold out."""
        ...

    async def lease_status(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """Current state of a lease (provisioning finishes, spot preemption, ...)."""
        ...

    async def release(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """End a lease. Releasing a released lease is a no-op."""
        ...

    async def launch_engine(self, spec: EngineSpec) -> EngineHandle:
        """Start an engine on a running lease and return once it listens."""
        ...

    async def stop_engine(self, handle: EngineHandle) -> None:
        """Stop an engine (no error if already gone)."""
        ...

    async def step(self, now: float) -> None:
        """Advance the supplier's own dynamics to ``now`` (prices, capacity, spot
        preemptions for simulated suppliers; a no-op for real ones)."""
        ...


@dataclass
class SupplierRegistry:
    """The explicit registry of supplier adapters by name."""

    _suppliers: dict[str, Supplier] = field(default_factory=dict)

    def register(self, supplier: Supplier) -> Supplier:
        if supplier.name in self._suppliers:
            raise ValueError(f"supplier {supplier.name!r} is registered twice")
        self._suppliers[supplier.name] = supplier
        return supplier

    def get(self, name: str) -> Supplier:
        return self._suppliers[name]

    def names(self) -> list[str]:
        return sorted(self._suppliers)

    def all(self) -> list[Supplier]:
        return [self._suppliers[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._suppliers


SupplierFactory = Callable[..., Supplier]
