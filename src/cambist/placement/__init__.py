"""Placement: choosing offers for workloads by $/Mtok under constraints."""

from cambist.placement.problem import (
    STANDARD_TIER,
    Assignment,
    Plan,
    PlanStatus,
    Policy,
    SolverName,
    WorkloadDemand,
    WorkloadPlan,
)
from cambist.placement.rank import Quote, quote, rank_for_model
from cambist.placement.solve import solve

__all__ = [
    "STANDARD_TIER",
    "Assignment",
    "Plan",
    "PlanStatus",
    "Policy",
    "Quote",
    "SolverName",
    "WorkloadDemand",
    "WorkloadPlan",
    "quote",
    "rank_for_model",
    "solve",
]
