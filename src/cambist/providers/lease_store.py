"""Leases a simulated or local supplier remembers, persisted as JSON.

A real cloud remembers its leases when the exchange restarts; the suppliers
that live inside Cambist (``sim``, ``local``) do the same by keeping them in
one JSON file per supplier under the ``state_dir`` they were given. A lease's
state is derived from its recorded times, so reading it never writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cambist.domain.errors import Conflict, NotFound, SupplierError
from cambist.domain.lease import LeaseState
from cambist.providers.base import SupplierLease

__all__ = ["LeaseRecord", "LeaseStore", "lease_id_for"]


def lease_id_for(supplier: str, client_token: str) -> str:
    """The supplier lease id for a client token: deterministic, so a retried
    lease call names the same lease even before the store is consulted."""
    digest = hashlib.sha256(f"{supplier}\x00{client_token}".encode()).hexdigest()[:16]
    return f"{supplier}-lease-{digest}"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What a supplier recorded about one lease."""

    supplier_lease_id: str
    offer_id: str
    client_token: str
    created_at: float
    ready_at: float
    """When provisioning finishes and the lease is running."""
    spot: bool = False
    preempt_at: float | None = None
    """Spot only: when the supplier takes the capacity back (``None``: never)."""
    preemption_notice_s: int | None = None
    released_at: float | None = None

    def state_at(self, now: float) -> LeaseState:
        """The lease's state at ``now``."""
        if self.released_at is not None:
            return LeaseState.RELEASED
        if self.preempt_at is not None and now >= self.preempt_at:
            return LeaseState.PREEMPTED
        if now >= self.ready_at:
            return LeaseState.RUNNING
        return LeaseState.PROVISIONING

    def holds_capacity(self, now: float) -> bool:
        """Whether the lease occupies its unit at ``now``."""
        return self.state_at(now) in (LeaseState.PROVISIONING, LeaseState.RUNNING)

    def view(self, now: float) -> SupplierLease:
        """The protocol's view of the lease at ``now``. A spot lease shows its
        preemption time once the supplier's notice period has begun."""
        state = self.state_at(now)
        preempt_at = None
        if self.preempt_at is not None and state in (
            LeaseState.PROVISIONING, LeaseState.RUNNING, LeaseState.PREEMPTED
        ):
            notice = self.preemption_notice_s or 0
            if now >= self.preempt_at - notice:
                preempt_at = self.preempt_at
        detail = {
            LeaseState.PROVISIONING: f"provisioning until {self.ready_at:.3f}",
            LeaseState.RUNNING: "running",
            LeaseState.PREEMPTED: f"spot capacity reclaimed at {self.preempt_at}",
            LeaseState.RELEASED: f"released at {self.released_at}",
        }[state]
        if state == LeaseState.RUNNING and preempt_at is not None:
            detail = f"running; spot preemption notice: reclaimed at {preempt_at:.3f}"
        return SupplierLease(
            supplier_lease_id=self.supplier_lease_id,
            offer_id=self.offer_id,
            state=state,
            detail=detail,
            preempt_at=preempt_at,
        )


class LeaseStore:
    """One supplier's leases, loaded from and written through to a JSON file."""

    def __init__(self, path: Path, supplier: str) -> None:
        self.path = path
        self.supplier = supplier
        self._leases: dict[str, LeaseRecord] = {}
        self._by_token: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            records = [LeaseRecord(**item) for item in raw["leases"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SupplierError(
                f"lease state file {self.path} is unreadable ({exc}); move it aside to start "
                "with no leases",
                supplier=self.supplier,
            ) from exc
        for rec in records:
            self._leases[rec.supplier_lease_id] = rec
            self._by_token[rec.client_token] = rec.supplier_lease_id

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"supplier": self.supplier,
                "leases": [asdict(r) for r in self._leases.values()]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    def by_token(self, client_token: str, offer_id: str) -> LeaseRecord | None:
        """The lease made with ``client_token``; ``Conflict`` if that token was
        used for a different offer."""
        lease_id = self._by_token.get(client_token)
        if lease_id is None:
            return None
        rec = self._leases[lease_id]
        if rec.offer_id != offer_id:
            raise Conflict(
                f"client token {client_token!r} was already used to lease {rec.offer_id}, "
                f"not {offer_id}; use a new token for a new lease",
                param="client_token",
            )
        return rec

    def get(self, supplier_lease_id: str) -> LeaseRecord:
        """A lease by id; ``NotFound`` naming the supplier if unknown."""
        try:
            return self._leases[supplier_lease_id]
        except KeyError:
            raise NotFound(
                f"{self.supplier} has no lease {supplier_lease_id!r}", param="supplier_lease_id"
            ) from None

    def add(self, rec: LeaseRecord) -> None:
        """Record a new lease and persist."""
        self._leases[rec.supplier_lease_id] = rec
        self._by_token[rec.client_token] = rec.supplier_lease_id
        self._save()

    def release(self, supplier_lease_id: str, now: float) -> LeaseRecord:
        """Mark a lease released at ``now``; a no-op on a lease already ended."""
        rec = self.get(supplier_lease_id)
        if rec.state_at(now) in (LeaseState.PROVISIONING, LeaseState.RUNNING):
            rec = replace(rec, released_at=now)
            self._leases[supplier_lease_id] = rec
            self._save()
        return rec

    def units_held(self, now: float) -> dict[str, int]:
        """Offer id -> units held by leases at ``now``."""
        held: dict[str, int] = {}
        for rec in self._leases.values():
            if rec.holds_capacity(now):
                held[rec.offer_id] = held.get(rec.offer_id, 0) + 1
        return held

    def records(self) -> list[LeaseRecord]:
        """Every lease recorded, in creation order."""
        return list(self._leases.values())
