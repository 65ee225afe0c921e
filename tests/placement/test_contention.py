"""The heuristic under contention: a few scarce offers wanted by every workload.

Each instance gives several workloads of one model about half of the
throughput the offers hold in total (one or two units per offer), so the
cheap units must be shared out well, not just taken by whoever comes first.
"""

from __future__ import annotations

import random

from cambist.domain.errors import UnquotableOffer
from cambist.domain.models import MODEL_CATALOG
from cambist.domain.offer import Offer
from cambist.perf import PerfModel
from cambist.placement import PlanStatus, Policy, WorkloadDemand, solve
from tests.placement.test_solve import REGIONS, SKUS, _offer, check_plan

PERF = PerfModel()


def contended(seed: int) -> tuple[list[WorkloadDemand], list[Offer]]:
    """Scarce offers; workloads asking for 40-70% of what they can serve in total."""
    rng = random.Random(seed)
    offers = [_offer(i, rng.choice(SKUS[:-1]), rng.choice([1, 2]), rng.randrange(30, 400),
                     rng.randrange(1, 3), rng.randrange(4), rng.choice(REGIONS))
              for i in range(rng.choice([8, 12, 16]))]
    model = MODEL_CATALOG[rng.choice(["llama-3.1-8b", "qwen2.5-7b"])]
    cap = 0.0
    for o in offers:
        assert o.sku is not None
        try:
            est = PERF.estimate(model, o.sku, o.gpu_count)
        except UnquotableOffer:
            continue
        if est.fits:
            cap += est.throughput_tok_s * o.available
    n = rng.choice([3, 4, 5, 6])
    demand = [WorkloadDemand(f"w{i}", model,
                             tokens_per_s=round(cap * rng.uniform(0.4, 0.7) / n),
                             min_replicas=rng.randrange(0, 3),
                             max_supplier_share=rng.choice([1.0, 1.0, 0.5, 0.7]))
              for i in range(n)]
    return demand, offers


def test_heuristic_shares_scarce_offers_well() -> None:
    """Measured on seeds 0-99 (98 solved to optimality): before noisy restarts and
    anchored share-capped starts 11 were over 2%, mean gap 1.4%, worst 29%; now 5,
    0.37% and 15%. Held here on seeds 0-39 (39 solved; 1 over 2%, mean 0.11%,
    worst 3.8%; before: 2 over, 0.30%, 5.6%). The suite runs seeds 0-19 to stay
    fast; the bounds are those of the 40-seed measurement."""
    gaps = []
    for seed in range(20):
        demand, offers = contended(seed)
        m = solve(demand, offers, Policy(solver="milp", mip_rel_gap=1e-6))
        if m.status != PlanStatus.OPTIMAL or not m.total_per_hour:
            continue
        h = solve(demand, offers, Policy(solver="heuristic"))
        check_plan(h, demand, offers, Policy())
        assert h.status == PlanStatus.FEASIBLE
        assert h.total_per_hour >= (m.lower_bound_per_hour or 0)
        gaps.append(float(h.total_per_hour / m.total_per_hour) - 1)
    assert len(gaps) >= 18
    assert sum(g > 0.02 for g in gaps) <= 2
    assert sum(gaps) / len(gaps) <= 0.003 and max(gaps) <= 0.05
