"""Leases: capacity rented from a supplier, and what it has cost so far."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

__all__ = ["TERMINAL_LEASE_STATES", "Lease", "LeaseState", "billable_seconds"]


class LeaseState(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    RELEASING = "releasing"
    RELEASED = "released"
    PREEMPTED = "preempted"
    FAILED = "failed"


TERMINAL_LEASE_STATES = frozenset({LeaseState.RELEASED, LeaseState.PREEMPTED, LeaseState.FAILED})

_ALLOWED: dict[LeaseState, frozenset[LeaseState]] = {
    LeaseState.PROVISIONING: frozenset(
        {LeaseState.RUNNING, LeaseState.FAILED, LeaseState.RELEASING, LeaseState.PREEMPTED}
    ),
    LeaseState.RUNNING: frozenset({LeaseState.RELEASING, LeaseState.PREEMPTED, LeaseState.FAILED}),
    LeaseState.RELEASING: frozenset({LeaseState.RELEASED, LeaseState.FAILED}),
    LeaseState.RELEASED: frozenset(),
    LeaseState.PREEMPTED: frozenset(),
    LeaseState.FAILED: frozenset(),
}


def billable_seconds(elapsed: float, increment_s: int, minimum_s: int) -> int:
    """Seconds a supplier bills for ``elapsed`` seconds of use.

    Rounded up to the billing increment, never less than the minimum.
    """
    if elapsed <= 0:
        return 0
    inc = max(1, increment_s)
    billed = math.ceil(elapsed / inc) * inc
    return max(billed, minimum_s)


@dataclass(frozen=True, slots=True)
class Lease:
    """A rental of one offer's unit. ``owner`` is ``None`` for the platform pool
    or the tenant id for dedicated capacity."""

    id: str
    supplier: str
    supplier_lease_id: str
    offer_id: str
    sku: str | None
    gpu_name: str
    gpu_count: int
    region: str
    price_per_hour: Decimal
    spot: bool
    owner: str | None
    state: LeaseState
    created_at: float
    billing_increment_s: int = 1
    billing_minimum_s: int = 60
    started_at: float | None = None
    ended_at: float | None = None
    posted_until: float | None = None
    client_token: str | None = None
    platform_fee_rate: Decimal = Decimal(0)

    def transition(self, new: LeaseState, now: float) -> Lease:
        """Return the lease moved to ``new``; ``ValueError`` if not allowed."""
        if new == self.state:
            return self
        if new not in _ALLOWED[self.state]:
            raise ValueError(f"lease {self.id}: {self.state} -> {new} is not allowed")
        started = self.started_at
        if new == LeaseState.RUNNING and started is None:
            started = now
        ended = now if new in TERMINAL_LEASE_STATES else self.ended_at
        return replace(self, state=new, started_at=started, ended_at=ended)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_LEASE_STATES

    def billed_seconds(self, now: float) -> int:
        """Billable seconds from start until ``now`` (or the end)."""
        if self.started_at is None:
            return 0
        end = self.ended_at if self.ended_at is not None else now
        return billable_seconds(end - self.started_at, self.billing_increment_s,
                                self.billing_minimum_s)

    def cost_at(self, t: float) -> Decimal:
        """What the supplier charges for use from start up to ``t`` (capped at the end)."""
        if self.started_at is None:
            return Decimal(0)
        end = t if self.ended_at is None else min(t, self.ended_at)
        secs = billable_seconds(end - self.started_at, self.billing_increment_s,
                                self.billing_minimum_s)
        return self.price_per_hour * Decimal(secs) / Decimal(3600)

    def cost_until(self, now: float) -> Decimal:
        """What the supplier charges for this lease up to ``now`` (exact)."""
        return self.price_per_hour * Decimal(self.billed_seconds(now)) / Decimal(3600)
