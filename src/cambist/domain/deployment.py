"""Deployments: a model served on leased GPUs by one engine per replica."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

__all__ = ["LIVE_REPLICA_STATES", "Deployment", "DeploymentState", "Replica", "ReplicaState"]


class DeploymentState(StrEnum):
    DEPLOYING = "deploying"
    READY = "ready"
    DEGRADED = "degraded"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class ReplicaState(StrEnum):
    PENDING = "pending"
    LEASING = "leasing"
    LAUNCHING = "launching"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


LIVE_REPLICA_STATES = frozenset({ReplicaState.PENDING, ReplicaState.LEASING,
                                 ReplicaState.LAUNCHING, ReplicaState.HEALTHY})
"""Replica states that hold (or are on their way to hold) capacity."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """Desired state: ``replicas`` engines of ``model``."""

    name: str
    model: str
    replicas: int
    owner: str | None
    state: DeploymentState
    created_at: float
    max_price_per_mtok: Decimal | None = None
    client_token: str | None = None


@dataclass(frozen=True, slots=True)
class Replica:
    """One engine of a deployment on one lease."""

    id: str
    deployment: str
    state: ReplicaState
    lease_id: str | None
    endpoint_id: str | None
    created_at: float
    detail: str = ""
