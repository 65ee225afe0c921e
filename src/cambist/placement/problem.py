"""The placement problem and its answer: workloads, policy, plan.

A workload asks for a model served at a sustained output rate under a
time-to-first-token SLO, in allowed regions, at a privacy tier, within a
budget, with at least some replicas spread over several suppliers. Each unit
of an :class:`~cambist.domain.offer.Offer` hosts one replica of one workload.
A :class:`Plan` says which offer units serve which workload and what that
costs per hour (exact ``Decimal``, from the offers' own prices).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from cambist.domain.models import ModelSpec
from cambist.perf.model import PerfModel

__all__ = [
    "STANDARD_TIER",
    "Assignment",
    "Plan",
    "PlanStatus",
    "Policy",
    "SolverName",
    "WorkloadDemand",
    "WorkloadPlan",
]

STANDARD_TIER = "standard"
"""The privacy tier every offer satisfies."""

SolverName = Literal["milp", "heuristic", "auto"]


@dataclass(frozen=True, slots=True)
class WorkloadDemand:
    """One workload to place.

    ``regions`` are prefixes of allowed offer regions (empty: anywhere).
    ``max_supplier_share`` caps the fraction of the workload's replicas on any
    one supplier (1.0: no cap; 0.5 needs at least two suppliers).
    """

    name: str
    model: ModelSpec
    tokens_per_s: float
    ttft_ms: float | None = None
    prompt_tokens: int = 1000
    regions: tuple[str, ...] = ()
    privacy: str = STANDARD_TIER
    budget_per_hour: Decimal | None = None
    min_replicas: int = 1
    max_supplier_share: float = 1.0

    def __post_init__(self) -> None:
        if self.tokens_per_s < 0:
            raise ValueError(f"{self.name}: tokens_per_s must be non-negative")
        if self.min_replicas < 0:
            raise ValueError(f"{self.name}: min_replicas must be non-negative")
        if not 0 < self.max_supplier_share <= 1:
            raise ValueError(f"{self.name}: max_supplier_share must be in (0, 1]")
        if self.prompt_tokens < 1:
            raise ValueError(f"{self.name}: prompt_tokens must be positive")


@dataclass(frozen=True, slots=True)
class Policy:
    """How to solve.

    ``current`` is the placement in force (workload -> offer id -> units); among
    equally cheap plans the one moving fewer units wins. ``offer_tiers`` and
    ``supplier_tiers`` name the privacy tiers beyond ``standard`` an offer
    supports (an offer's own entry wins over its supplier's). ``auto`` runs the
    heuristic, then the MILP from it when the problem has at most
    ``auto_max_pairs`` feasible (workload, offer) pairs; on many workloads the
    MILP path first tries price-and-branch (:mod:`cambist.placement.contention`),
    whose Lagrangian bound usually proves its plan within the gap far sooner.
    ``time_limit_s`` bounds price-and-branch and the MILP together (the
    heuristic before the MILP is not counted); they stop once the
    plan is proven within ``mip_rel_gap`` of the cheapest (1%: the last percent
    costs many times the first 99 on large markets; :attr:`Plan.gap` reports
    where it stopped).
    """

    solver: SolverName = "auto"
    time_limit_s: float = 10.0
    mip_rel_gap: float = 0.01
    current: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    offer_tiers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    supplier_tiers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    perf: PerfModel = field(default_factory=PerfModel)
    auto_max_pairs: int = 200_000

    def tiers(self, offer_id: str, supplier: str) -> frozenset[str]:
        """Privacy tiers an offer supports besides ``standard``."""
        own = self.offer_tiers.get(offer_id)
        return own if own is not None else self.supplier_tiers.get(supplier, frozenset())


class PlanStatus(StrEnum):
    OPTIMAL = "optimal"
    """Proven cheapest (within the solver's relative gap)."""
    FEASIBLE = "feasible"
    """Every constraint holds; not proven cheapest."""
    INFEASIBLE = "infeasible"
    """At least one workload could not be placed (see the reasons)."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """``units`` units of one offer serving one workload."""

    offer_id: str
    supplier: str
    units: int
    price_per_hour: Decimal
    """Price of one unit (all its GPUs) per hour."""
    tokens_per_s: float
    """Output tokens/s one unit serves for this workload."""

    @property
    def cost_per_hour(self) -> Decimal:
        return self.price_per_hour * self.units


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    """What one workload gets; ``reason`` says why when it is infeasible."""

    name: str
    assignments: tuple[Assignment, ...]
    feasible: bool
    reason: str = ""

    @property
    def replicas(self) -> int:
        return sum(a.units for a in self.assignments)

    @property
    def served_tok_s(self) -> float:
        return sum(a.tokens_per_s * a.units for a in self.assignments)

    @property
    def cost_per_hour(self) -> Decimal:
        return sum((a.cost_per_hour for a in self.assignments), Decimal(0))

    def supplier_units(self) -> dict[str, int]:
        """Units per supplier."""
        out: dict[str, int] = {}
        for a in self.assignments:
            out[a.supplier] = out.get(a.supplier, 0) + a.units
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer of :func:`cambist.placement.solve.solve`."""

    status: PlanStatus
    workloads: Mapping[str, WorkloadPlan]
    total_per_hour: Decimal
    lower_bound_per_hour: Decimal | None
    """A proven lower bound on the cheapest feasible cost, when the solver has one."""
    solve_time_s: float
    solver: str

    @property
    def gap(self) -> float | None:
        """Cost over the proven lower bound, minus one (``None`` without a bound)."""
        lb = self.lower_bound_per_hour
        if lb is None:
            return None
        return 0.0 if lb <= 0 and self.total_per_hour <= 0 else (
            float(self.total_per_hour / lb) - 1 if lb > 0 else None)

    @property
    def assignments(self) -> dict[str, list[tuple[str, int]]]:
        """Workload -> [(offer id, units)]."""
        return {n: [(a.offer_id, a.units) for a in w.assignments]
                for n, w in self.workloads.items()}

    @property
    def served_tok_s(self) -> dict[str, float]:
        """Workload -> output tokens/s its replicas serve."""
        return {n: w.served_tok_s for n, w in self.workloads.items()}

    @property
    def reasons(self) -> dict[str, str]:
        """Workload -> why it could not be placed (infeasible ones only)."""
        return {n: w.reason for n, w in self.workloads.items() if not w.feasible}

    @property
    def suppliers(self) -> set[str]:
        """Distinct suppliers the plan uses."""
        return {a.supplier for w in self.workloads.values() for a in w.assignments}
