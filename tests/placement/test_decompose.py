"""Price-and-branch and its Lagrangian bound: plans that honour every constraint,
never dearer than their start, and bounds that never exceed the true optimum."""

from __future__ import annotations

import importlib
import math
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from cambist.domain.offer import Offer
from cambist.placement import PlanStatus, Policy, WorkloadDemand, solve
from cambist.placement.bound import lagrangian_bound
from cambist.placement.contention import decompose
from cambist.placement.heuristic import FAST, solve_heuristic
from cambist.placement.instance import Instance, build_instance
from tests.placement.test_contention import contended
from tests.placement.test_solve import check_plan, problem_st

# The package exports the function ``solve``, which hides the module of that name.
solve_module = importlib.import_module("cambist.placement.solve")

Units = list[dict[int, int] | None]


def check_units(inst: Instance, plan: Units) -> None:
    """Every constraint of every workload, from the instance's arrays."""
    used = np.zeros(len(inst.offers), dtype=np.int64)
    for w, wl in enumerate(inst.workloads):
        units = plan[w]
        assert units is not None
        cand = {int(o): float(t) for o, t in zip(inst.cand[w], inst.tput[w], strict=True)}
        assert set(units) <= set(cand), "an offer the workload may not use"
        n = sum(units.values())
        assert all(u > 0 for u in units.values())
        assert sum(cand[o] * u for o, u in units.items()) >= wl.tokens_per_s - 1e-6
        assert n >= wl.min_replicas
        per: dict[int, int] = {}
        for o, u in units.items():
            per[int(inst.supplier[o])] = per.get(int(inst.supplier[o]), 0) + u
            used[o] += u
        if n and wl.max_supplier_share < 1:
            assert max(per.values()) <= math.floor(wl.max_supplier_share * n + 1e-9)
        if wl.budget_per_hour is not None:
            cost = sum(inst.price[o] * u for o, u in units.items())
            assert cost <= float(wl.budget_per_hour) + 1e-6
    assert (used <= inst.avail).all(), "an offer's capacity exceeded"


def cost(inst: Instance, plan: Units) -> float:
    return float(sum(inst.price[o] * u for x in plan for o, u in (x or {}).items()))


def optimum(demand: list[WorkloadDemand], offers: list[Offer],
            policy: Policy) -> float | None:
    """The MILP's proven optimum ($/h), or ``None`` when it is not proven."""
    m = solve(demand, offers, policy)
    if m.status != PlanStatus.OPTIMAL:
        return None
    return float(m.total_per_hour)


@pytest.mark.parametrize("seed", range(12))
def test_decomposition_is_feasible_and_never_dearer_than_its_start(seed: int) -> None:
    """Contended markets: the plan honours every constraint and costs at most the
    plain heuristic's plan it started from, and its bound is below the optimum."""
    demand, offers = contended(seed)
    inst = build_instance(demand, offers, Policy())
    start, failed = solve_heuristic(inst)
    if failed or not inst.workloads:
        pytest.skip("the heuristic found no complete start")
    dec = decompose(inst, [start], time_limit_s=5.0, rel_gap=0.0)
    assert dec is not None
    check_units(inst, list(dec.plan))
    assert dec.cost <= cost(inst, start) + 1e-6
    assert dec.cost == pytest.approx(cost(inst, list(dec.plan)))
    best = optimum(demand, offers, Policy(solver="milp", mip_rel_gap=1e-6))
    if best is not None:
        assert dec.cost >= best - 1e-6
        assert dec.lower_bound is not None and dec.lower_bound <= best + 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_decomposition_places_workloads_its_start_left_out(seed: int) -> None:
    """A start missing workloads (``None``) still gives a complete plan: each such
    workload starts from a placeholder column the pricing replaces."""
    demand, offers = contended(seed)
    inst = build_instance(demand, offers, Policy())
    if len(inst.workloads) < 2:
        pytest.skip("too few workloads")
    dec = decompose(inst, [[None] * len(inst.workloads)], time_limit_s=5.0, rel_gap=0.0)
    full = optimum(demand, offers, Policy(solver="milp", mip_rel_gap=1e-6))
    if dec is None:
        # No plan: only acceptable when the workloads cannot all be placed together.
        assert full is None or solve(demand, offers, Policy(solver="milp")).status \
            == PlanStatus.INFEASIBLE
        return
    check_units(inst, list(dec.plan))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem_st(max_workloads=4))
def test_lagrangian_bound_never_exceeds_the_optimum(
        problem: tuple[list[WorkloadDemand], list[Offer], dict[str, frozenset[str]]]) -> None:
    """For any unit prices (random ones here) the bound is at most the MILP's proven
    optimum, budgets, tiers, share caps and minimum replicas included."""
    demand, offers, tiers = problem
    policy = Policy(supplier_tiers=tiers)
    inst = build_instance(demand, offers, policy)
    if not inst.workloads:
        return
    best = optimum(demand, offers, Policy(solver="milp", supplier_tiers=tiers,
                                          mip_rel_gap=1e-6))
    if best is None:
        return
    rng = random.Random(len(offers) * 31 + len(demand))
    n_groups = int(inst.group.max()) + 1
    for scale in (0.0, 1.0, 3.0):
        nu = np.array([rng.uniform(0, scale * 50) for _ in range(n_groups)])
        got = lagrangian_bound(inst, nu, time_limit_s=5.0)
        assert got.value <= best + 1e-6 * max(1.0, best)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem_st(max_workloads=4))
def test_decomposition_plans_honour_every_constraint(
        problem: tuple[list[WorkloadDemand], list[Offer], dict[str, frozenset[str]]]) -> None:
    """Random problems (budgets, privacy tiers, regions, TTFT SLOs) through ``solve``
    with price-and-branch switched on for any number of workloads."""
    demand, offers, tiers = problem
    policy = Policy(solver="milp", supplier_tiers=tiers, time_limit_s=5)
    keep = solve_module.DECOMPOSE_MIN_WORKLOADS
    solve_module.DECOMPOSE_MIN_WORKLOADS = 1
    try:
        plan = solve(demand, offers, policy)
    finally:
        solve_module.DECOMPOSE_MIN_WORKLOADS = keep
    check_plan(plan, demand, offers, policy)
    if plan.status != PlanStatus.INFEASIBLE:
        best = optimum(demand, offers, Policy(solver="milp", supplier_tiers=tiers,
                                              mip_rel_gap=1e-6))
        if best is not None:
            assert plan.lower_bound_per_hour is not None
            assert float(plan.lower_bound_per_hour) <= best + 1e-6 * max(1.0, best)
            assert float(plan.total_per_hour) >= best - 1e-6


@pytest.mark.parametrize("seed", range(4))
def test_proven_gap_is_reported_honestly(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan marked optimal has ``gap`` = cost / proven bound - 1 within the policy's
    gap, and that bound is at most the true optimum (so the gap is never understated)."""
    monkeypatch.setattr(solve_module, "DECOMPOSE_MIN_WORKLOADS", 1)
    demand, offers = contended(seed)
    plan = solve(demand, offers, Policy(solver="milp", mip_rel_gap=0.01))
    best = optimum(demand, offers, Policy(solver="milp", mip_rel_gap=1e-6))
    if plan.status == PlanStatus.INFEASIBLE or best is None:
        return
    lb = plan.lower_bound_per_hour
    assert lb is not None and float(lb) <= best + 1e-6
    assert plan.gap is not None
    assert plan.gap == pytest.approx(float(plan.total_per_hour / lb) - 1)
    if plan.status == PlanStatus.OPTIMAL:
        assert plan.gap <= 0.01 + 1e-9
    if plan.solver == "decomposition":
        assert plan.status == PlanStatus.OPTIMAL


def test_fast_start_decomposition_beats_the_heuristic_on_a_contended_market() -> None:
    """Many workloads of one model contending for few cheap offers (the case the
    heuristic handles worst): from the fast heuristic's plan, price-and-branch ends
    at least as cheap as the full heuristic, with a bound proving it near-optimal."""
    costs = []
    for seed in range(20):
        demand, offers = contended(seed)
        inst = build_instance(demand, offers, Policy())
        fast, _ = solve_heuristic(inst, FAST)
        full, failed = solve_heuristic(inst)
        dec = decompose(inst, [fast], time_limit_s=5.0, rel_gap=0.0)
        if dec is None or failed:
            continue
        check_units(inst, list(dec.plan))
        costs.append((dec.cost, cost(inst, full)))
    assert len(costs) >= 15
    assert sum(d for d, _ in costs) <= sum(h for _, h in costs) + 1e-6
