"""Rate limits on simulated traffic, through the gateway's plans and limiter.

Per request, the gateway's own :class:`~cambist.gateway.limits.RateLimiter`
admits each request (request and token buckets of the tenant's key and of
the tenant, by its plan in the :class:`~cambist.ledger.plans.PlanBook`) and
settles its tokens. Per cohort, :func:`admit_cohorts` applies the same plan
limits to a tenant-minute at once: a minute can take at most the plan's
per-minute requests and tokens (the buckets refill by exactly that much a
minute), so the admitted share of a cohort is ``min(1, rpm / n, tpm / tokens)``.
This is the ``admit_many`` entry point the gateway would expose. The
simulated tenants use one key each, so key and tenant limits both apply.
"""

from __future__ import annotations

import numpy as np

from cambist.gateway.errors import RateLimited
from cambist.gateway.limits import RateLimiter
from cambist.ledger.plans import PlanBook
from cambist.sim.demand import Demand

__all__ = ["admit_cohorts", "admit_request"]


def admit_cohorts(demand: Demand, plans: PlanBook) -> float:
    """Scale every tenant-minute cohort to what its plan admits (in place);
    returns the requests refused."""
    refused = 0.0
    for i, t in enumerate(demand.tenants):
        plan = plans.plan_of(t.id)
        rpm = min(plan.requests_per_minute, plan.tenant_requests_per_minute)
        tpm = min(plan.tokens_per_minute, plan.tenant_tokens_per_minute)
        n = demand.requests[i].astype(np.float64)
        tokens = (demand.prompt[i] + demand.output[i]).astype(np.float64)
        share = np.minimum(1.0, np.minimum(
            np.divide(rpm, n, out=np.ones_like(n), where=n > 0),
            np.divide(tpm, tokens, out=np.ones_like(tokens), where=tokens > 0)))
        if (share < 1.0).any():
            refused += float((n * (1.0 - share)).sum())
            kept = np.floor(n * share)
            scale = np.divide(kept, n, out=np.zeros_like(n), where=n > 0).astype(np.float32)
            demand.requests[i] = kept.astype(np.float32)
            for arr in (demand.prompt, demand.visible, demand.reasoning):
                arr[i] *= scale
    return refused


def admit_request(limiter: RateLimiter, tenant: str, tokens: int) -> bool:
    """Admit one request of ``tokens`` (prompt plus output) and settle it at once
    (the simulation knows its size); ``False`` if the plan refuses it."""
    try:
        admission = limiter.admit(tenant, tenant)
        admission.reserve_tokens(tokens)
    except RateLimited:
        return False
    admission.settle(tokens)
    return True
