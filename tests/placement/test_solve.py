"""Placement solvers: every plan honours every constraint; the heuristic is close
to the MILP and never below its proven bound."""

from __future__ import annotations

import copy
import math
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.perf import PerfModel
from cambist.placement import Plan, PlanStatus, Policy, WorkloadDemand, solve

SKUS = ["H100-80GB-SXM", "A100-80GB", "L40S-48GB", "L4-24GB", "H200-141GB-SXM",
        "RTX4090-24GB", None]
MODELS = ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1"]
PERF = PerfModel()


def _offer(i: int, sku: str | None, count: int, cents: int, avail: int, sup: int,
           region: str) -> Offer:
    return Offer(id=f"o{i}", supplier=f"s{sup}", gpu_name=sku or "H100", sku=sku,
                 gpu_count=count, vram_gib=80, region=region, jurisdiction="US",
                 price_per_gpu_hour=Decimal(cents) / 100, spot=False, available=avail,
                 expires_at=1e12, sku_note="" if sku else "ambiguous")


offers_st = st.lists(
    st.tuples(st.sampled_from(SKUS), st.sampled_from([1, 2, 4, 8]), st.integers(20, 400),
              st.integers(1, 3), st.integers(0, 3), st.sampled_from(REGIONS)),
    min_size=1, max_size=30,
).map(lambda xs: [_offer(i, *x) for i, x in enumerate(xs)])


@st.composite
def workload_st(draw: st.DrawFn, i: int) -> WorkloadDemand:
    budget = draw(st.sampled_from([None, None, None, 5, 20, 60]))
    return WorkloadDemand(
        name=f"w{i}", model=MODEL_CATALOG[draw(st.sampled_from(MODELS))],
        tokens_per_s=draw(st.integers(0, 8000)),
        ttft_ms=draw(st.sampled_from([None, None, 400.0, 1500.0])),
        regions=draw(st.sampled_from([(), ("us",), ("eu",)])),
        privacy=draw(st.sampled_from(["standard", "standard", "confidential"])),
        budget_per_hour=None if budget is None else Decimal(budget),
        min_replicas=draw(st.integers(0, 3)),
        max_supplier_share=draw(st.sampled_from([1.0, 1.0, 0.5, 0.7])))


@st.composite
def problem_st(draw: st.DrawFn, max_workloads: int = 4) \
        -> tuple[list[WorkloadDemand], list[Offer], dict[str, frozenset[str]]]:
    offers = draw(offers_st)
    n = draw(st.integers(1, max_workloads))
    demand = [draw(workload_st(i)) for i in range(n)]
    confidential = draw(st.sets(st.sampled_from(["s0", "s1", "s2", "s3"])))
    return demand, offers, {s: frozenset({"confidential"}) for s in confidential}


def check_plan(plan: Plan, demand: list[WorkloadDemand], offers: list[Offer],
               policy: Policy) -> None:
    """Every constraint of every placed workload, recomputed from the inputs."""
    by_id = {o.id: o for o in offers}
    used: dict[str, int] = {}
    assert set(plan.workloads) == {w.name for w in demand}
    for w in demand:
        wp = plan.workloads[w.name]
        if not wp.feasible:
            assert wp.reason and not wp.assignments
            continue
        per_sup: dict[str, int] = {}
        served = 0.0
        for a in wp.assignments:
            o = by_id[a.offer_id]
            assert o.sku is not None and a.units >= 1
            assert a.price_per_hour == o.price_per_hour and a.supplier == o.supplier
            used[o.id] = used.get(o.id, 0) + a.units
            per_sup[o.supplier] = per_sup.get(o.supplier, 0) + a.units
            est = PERF.estimate(w.model, o.sku, o.gpu_count)
            assert est.fits and math.isclose(a.tokens_per_s, est.throughput_tok_s)
            if w.ttft_ms is not None:
                assert est.ttft_s(w.prompt_tokens) * 1000 <= w.ttft_ms
            assert not w.regions or any(o.region.startswith(p) for p in w.regions)
            assert w.privacy == "standard" or w.privacy in policy.tiers(o.id, o.supplier)
            served += a.tokens_per_s * a.units
        assert served >= w.tokens_per_s - 1e-6
        assert math.isclose(served, wp.served_tok_s)
        n = wp.replicas
        assert n >= w.min_replicas
        if n and w.max_supplier_share < 1:
            assert max(per_sup.values()) <= math.floor(w.max_supplier_share * n + 1e-9)
        if w.budget_per_hour is not None:
            assert wp.cost_per_hour <= w.budget_per_hour
    assert all(used[o] <= by_id[o].available for o in used)
    assert plan.total_per_hour == sum((w.cost_per_hour for w in plan.workloads.values()),
                                      Decimal(0))
    ok = all(w.feasible for w in plan.workloads.values())
    assert (plan.status != PlanStatus.INFEASIBLE) == ok
    if plan.lower_bound_per_hour is not None:
        assert plan.lower_bound_per_hour <= plan.total_per_hour


SLOW = settings(max_examples=35, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SLOW
@given(problem=problem_st())
def test_both_solvers_honour_every_constraint(problem: tuple) -> None:
    demand, offers, tiers = problem
    plans = {}
    for solver in ("heuristic", "milp"):
        policy = Policy(solver=solver, supplier_tiers=tiers, time_limit_s=5)
        plans[solver] = solve(demand, offers, policy)
        check_plan(plans[solver], demand, offers, policy)
    h, m = plans["heuristic"], plans["milp"]
    if m.status == PlanStatus.OPTIMAL:
        # The MILP proves the optimum; the heuristic cannot beat its bound.
        assert m.lower_bound_per_hour is not None
        if h.status != PlanStatus.INFEASIBLE:
            assert h.total_per_hour >= m.lower_bound_per_hour
    if m.status == PlanStatus.INFEASIBLE and h.status != PlanStatus.INFEASIBLE:
        pytest.fail("the heuristic placed what the MILP calls infeasible")


@SLOW
@given(problem=problem_st(max_workloads=1))
def test_heuristic_within_two_percent_on_one_workload(problem: tuple) -> None:
    demand, offers, tiers = problem
    m = solve(demand, offers, Policy(solver="milp", supplier_tiers=tiers, mip_rel_gap=1e-6))
    h = solve(demand, offers, Policy(solver="heuristic", supplier_tiers=tiers))
    if m.status == PlanStatus.OPTIMAL:
        assert h.status == PlanStatus.FEASIBLE
        assert h.total_per_hour <= m.total_per_hour * Decimal("1.02") + Decimal("1e-9")


def _random_problem(seed: int) -> tuple[list[WorkloadDemand], list[Offer]]:
    rng = random.Random(seed)
    offers = [_offer(i, rng.choice(SKUS[:-1]), rng.choice([1, 2, 4, 8]),
                     rng.randrange(30, 400), rng.randrange(1, 4), rng.randrange(4),
                     rng.choice(REGIONS)) for i in range(rng.choice([10, 30, 60]))]
    demand = [WorkloadDemand(f"w{i}", MODEL_CATALOG[rng.choice(MODELS)],
                             tokens_per_s=rng.randrange(100, 8000),
                             min_replicas=rng.randrange(0, 4),
                             max_supplier_share=rng.choice([1.0, 0.5, 0.7]),
                             regions=rng.choice([(), ("us",), ("eu",)]))
              for i in range(rng.choice([2, 4, 6]))]
    return demand, offers


def test_heuristic_gap_distribution_on_several_workloads() -> None:
    """With workloads competing for the same units the heuristic is not always within
    2%: measured over 166 such instances (seeds 0-199 solved to optimality), 99% were
    within 2%, the mean gap was 0.05% and the worst 4.7% (before the grouped LP start
    and anchored starts: 96%, 0.23%, 11.9%). On this fixed corpus every one is within
    2%; the bounds leave room for one miss. (Twenty seeds keep the suite fast;
    ``bench/placement.py`` measures the full distribution.)"""
    gaps = []
    for seed in range(20):
        demand, offers = _random_problem(seed)
        m = solve(demand, offers, Policy(solver="milp", mip_rel_gap=1e-4))
        if m.status != PlanStatus.OPTIMAL or not m.total_per_hour:
            continue
        h = solve(demand, offers, Policy(solver="heuristic"))
        assert h.status == PlanStatus.FEASIBLE
        gaps.append(float(h.total_per_hour / m.total_per_hour) - 1)
    assert len(gaps) >= 12
    assert sum(g > 0.02 for g in gaps) <= 1
    assert sum(gaps) / len(gaps) <= 0.003 and max(gaps) <= 0.05


def test_solve_is_pure_and_deterministic() -> None:
    demand, offers = _random_problem(3)
    current = {"w0": {offers[0].id: 1}}
    policy = Policy(solver="heuristic", current=current)
    before = (copy.deepcopy(demand), copy.deepcopy(offers), copy.deepcopy(current))
    a, b = solve(demand, offers, policy), solve(demand, offers, policy)
    assert (demand, offers, current) == before
    assert a.assignments == b.assignments and a.total_per_hour == b.total_per_hour


def test_reasons_name_the_missing_constraint() -> None:
    small = [_offer(0, "L4-24GB", 1, 80, 1, 0, "us-east-1"),
             _offer(1, None, 8, 100, 4, 1, "us-east-1")]
    big = MODEL_CATALOG["llama-3.1-405b"]
    demand = [WorkloadDemand("huge", big, 100),
              WorkloadDemand("eu", MODEL_CATALOG["llama-3.1-8b"], 100, regions=("eu",)),
              WorkloadDemand("fast", MODEL_CATALOG["llama-3.1-8b"], 1e6),
              WorkloadDemand("spread", MODEL_CATALOG["llama-3.1-8b"], 100,
                             max_supplier_share=0.5)]
    plan = solve(demand, small, Policy(solver="milp"))
    assert plan.status == PlanStatus.INFEASIBLE and plan.lower_bound_per_hour is None
    r = plan.reasons
    assert "fits on no offered GPU" in r["huge"]
    assert "regions eu" in r["eu"]
    assert "tok/s" in r["fast"]
    assert "two suppliers" in r["spread"]


def test_ties_keep_the_current_placement_and_fewer_suppliers() -> None:
    offers = [_offer(i, "H100-80GB-SXM", 1, 200, 2, i, "us-east-1") for i in range(3)]
    w = [WorkloadDemand("w", MODEL_CATALOG["llama-3.1-8b"], 100, min_replicas=2)]
    for solver in ("milp", "heuristic"):
        plan = solve(w, offers, Policy(solver=solver, current={"w": {"o2": 2}}))
        assert plan.assignments == {"w": [("o2", 2)]}, solver
    plan = solve(w, offers, Policy(solver="milp"))
    assert len(plan.suppliers) == 1 and plan.status == PlanStatus.OPTIMAL


def test_auto_uses_the_milp_and_reports_a_bound() -> None:
    demand, offers = _random_problem(5)
    plan = solve(demand, offers)
    assert plan.solver == "milp" and plan.lower_bound_per_hour is not None
    assert plan.solve_time_s > 0
    assert plan.gap is not None and 0 <= plan.gap <= Policy().mip_rel_gap + 1e-9
    assert plan.gap == float(plan.total_per_hour / plan.lower_bound_per_hour) - 1
