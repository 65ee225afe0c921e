"""Batch routing agrees with per-request choice; the serving model and the oracle are exact."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

import numpy as np
import pytest

from cambist.domain.clock import ManualClock
from cambist.domain.endpoint import Endpoint
from cambist.gateway.routing import RoutingTable
from cambist.sim.oracle import solve_hour
from cambist.sim.traffic import TtftSamples, route_many, seq_tok_s, serve_minute


def _table(clock: ManualClock) -> RoutingTable:
    table = RoutingTable(clock)
    specs = [("a", "2.0", 4000.0, 128), ("b", "3.5", 4500.0, 256), ("c", "1.2", 1500.0, 64),
             ("d", "6.0", 9000.0, 256)]
    table.swap([Endpoint(id=i, model="m", url=f"http://{i}.invalid", supplier=f"s-{i}",
                         owner=None, healthy=True, cost_per_hour=Decimal(p),
                         capacity_tok_s=cap, max_concurrency=mc) for i, p, cap, mc in specs])
    return table


@pytest.mark.parametrize("requests", [40, 200, 520, 900])
def test_route_many_matches_repeated_choose(requests: int) -> None:
    clock = ManualClock()
    table = _table(clock)
    for _ in range(requests):
        r = table.choose("m")
        assert r is not None
        table.acquire(r)
    routes = table.routes("m")
    greedy = np.array([table.stats(r.id).in_flight * seq_tok_s(r) for r in routes])
    for r in routes:
        table.stats(r.id).in_flight = 0
    got, shares = route_many(table, "m", float(greedy.sum()))
    by_id = {r.id: s for r, s in zip(got, shares, strict=True)}
    want = greedy / greedy.sum()
    for r, w in zip(routes, want, strict=True):
        assert by_id[r.id] == pytest.approx(w, abs=0.03), (requests, r.id)


def test_route_many_counts_what_endpoints_already_hold() -> None:
    clock = ManualClock()
    table = _table(clock)
    cheapest = min(table.routes("m"), key=lambda r: r.avg_cost_per_mtok)
    table.stats(cheapest.id).in_flight = cheapest.endpoint.max_concurrency  # saturated
    routes, shares = route_many(table, "m", 1000.0)
    assert dict(zip([r.id for r in routes], shares, strict=True))[cheapest.id] == 0.0
    assert shares.sum() == pytest.approx(1.0)


def test_ttft_samples_are_exact_for_shifted_exponentials() -> None:
    s = TtftSamples()
    s.add(np.array([100.0, 300.0]), np.array([0.2, 0.5]), np.array([0.1, 0.0]))
    # 100 requests: 0.2 + Exp(0.1); 300 requests: exactly 0.5.
    assert s.attainment(0.4) == pytest.approx(100 * (1 - math.exp(-2.0)) / 400)
    assert s.attainment(0.6) == pytest.approx(1 - 100 * math.exp(-4.0) / 400)
    q = s.quantile(0.99)  # 4 requests of 400 above: 100 * exp(-(q-0.2)/0.1) = 4
    assert q == pytest.approx(0.2 + 0.1 * math.log(25), rel=1e-6)


def test_serve_minute_carries_backlog() -> None:
    s = TtftSamples()
    served, back = serve_minute(np.array([1200.0, 30.0]), np.array([4.0, 1.0]),
                                np.array([10.0, 10.0]), np.array([0.1, 0.1]),
                                np.array([0.0, 0.0]), s)
    assert served.tolist() == [600.0, 30.0] and back.tolist() == [600.0, 0.0]
    assert s.attainment(2.0) == pytest.approx(1 / 5, abs=1e-3)  # the queued ones wait ~30 s


def _brute(price: np.ndarray, cap: np.ndarray, avail: np.ndarray, spin: np.ndarray,
           prev: np.ndarray, need: float) -> float:
    best = math.inf
    for x in itertools.product(*(range(int(a) + 1) for a in avail)):
        xs = np.array(x, dtype=float)
        if (xs * cap).sum() >= need:
            new = np.maximum(xs - prev, 0)
            best = min(best, float((xs * price).sum() + (new * price * spin).sum() / 3600))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_oracle_hour_is_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4
    price = rng.uniform(1, 20, n).round(2)
    cap = rng.uniform(500, 5000, n).round(0)
    avail = rng.integers(0, 4, n).astype(float)
    spin = rng.choice([0.0, 300.0, 1800.0], n)
    prev = np.minimum(rng.integers(0, 3, n), avail).astype(float)
    need = float(rng.uniform(0.2, 0.9) * (cap * avail).sum())
    x, ok = solve_hour(price, cap, avail, spin, prev, need)
    assert ok and (x <= avail).all() and (x * cap).sum() >= need - 1e-6
    cost = float((x * price).sum() + (np.maximum(x - prev, 0) * price * spin).sum() / 3600)
    assert cost == pytest.approx(_brute(price, cap, avail, spin, prev, need), rel=1e-6)


def test_oracle_hour_short_of_capacity_takes_everything() -> None:
    x, ok = solve_hour(np.array([1.0, 2.0]), np.array([10.0, 10.0]), np.array([1.0, 2.0]),
                       np.zeros(2), np.zeros(2), 100.0)
    assert not ok and x.tolist() == [1.0, 2.0]


def test_plan_limits_per_cohort_and_per_request() -> None:
    from cambist.gateway.limits import RateLimiter
    from cambist.ledger.plans import PlanBook
    from cambist.sim.admission import admit_cohorts, admit_request
    from cambist.sim.demand import generate_demand
    from cambist.sim.scenario import load_scenario

    free = PlanBook(default="free")  # 20 requests and 40k tokens a minute per key
    d = generate_demand(load_scenario("steady"), 6, 0.25, seed=1)
    before = d.requests.sum()
    refused = admit_cohorts(d, free)
    assert refused > 0 and d.requests.max() <= 20
    assert d.requests.sum() == pytest.approx(before - refused, abs=len(d.tenants) * d.minutes)
    assert ((d.prompt + d.output) <= 40_000 * 1.001).all()
    clock = ManualClock()
    limiter = RateLimiter(free, clock)
    got = [admit_request(limiter, "t1", 100) for _ in range(25)]
    assert got.count(True) == 20 and not any(got[20:])
    clock.advance(60)
    assert admit_request(limiter, "t1", 100)
