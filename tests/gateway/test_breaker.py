"""Half-open circuit breaking, engine queue depth and TTFT in the routing score."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cambist.domain.clock import ManualClock
from cambist.domain.endpoint import Endpoint
from cambist.gateway import RoutingTable
from cambist.gateway.policy import RoutingPolicy
from cambist.gateway.routing import QUEUE_PENALTY_PER_MTOK, SLO_PENALTY_PER_MTOK
from cambist.gateway.stats import TTFT_WINDOW, EndpointStats


def ep(name: str, cost: str = "3.60", *, mc: int = 10) -> Endpoint:
    return Endpoint(id=name, model="m", url="http://h:1", supplier="s", owner=None,
                    healthy=True, cost_per_hour=Decimal(cost), capacity_tok_s=1000.0,
                    max_concurrency=mc)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_half_open_lets_one_trial_through_and_success_closes(clock: ManualClock) -> None:
    table = RoutingTable(clock, circuit_open_s=5.0)
    table.swap([ep("a", "1"), ep("b", "9")])
    a = table.choose("m")
    assert a is not None and a.id == "a"
    table.record_failure(a)
    assert table.stats("a").state(clock.now()) == "open"
    assert table.choose("m").id == "b"
    clock.advance(5.0)
    assert table.stats("a").state(clock.now()) == "half_open"
    trial = table.choose("m")
    assert trial is not None and trial.id == "a"
    table.acquire(trial)
    # while the trial is in flight everyone else keeps away from "a"
    assert table.choose("m").id == "b"
    assert table.choose("m").id == "b"
    table.record_success(trial, ttft_ms=50.0)
    table.release(trial)
    assert table.stats("a").state(clock.now()) == "closed"
    assert table.choose("m").id == "a"


def test_failed_trial_reopens_with_doubled_backoff(clock: ManualClock) -> None:
    table = RoutingTable(clock, circuit_open_s=5.0, circuit_max_s=30.0)
    table.swap([ep("a", "1"), ep("b", "9")])
    a = table.routes("m")[0]
    table.record_failure(a)
    clock.advance(5.0)
    table.acquire(a)  # the trial
    assert table.record_failure(a) == clock.now() + 10.0
    table.release(a)
    assert table.stats("a").state(clock.now()) == "open"
    assert not table.stats("a").probing
    clock.advance(10.0)
    table.acquire(a)
    assert table.record_failure(a) == clock.now() + 20.0
    table.release(a)
    clock.advance(20.0)
    table.acquire(a)
    assert table.record_failure(a) == clock.now() + 30.0  # capped
    table.release(a)


def test_trial_without_a_verdict_frees_the_probe(clock: ManualClock) -> None:
    table = RoutingTable(clock, circuit_open_s=5.0)
    table.swap([ep("a", "1"), ep("b", "9")])
    a = table.routes("m")[0]
    table.record_failure(a)
    clock.advance(5.0)
    table.acquire(a)
    assert table.choose("m").id == "b"
    table.release(a)  # cancelled before any answer: the next request may try again
    assert table.choose("m").id == "a"


def test_throttling_without_retry_after_does_not_open_the_circuit(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("a", "1"), ep("b", "9")])
    a = table.routes("m")[0]
    table.record_failure(a, open_circuit=False)
    assert table.stats("a").state(clock.now()) == "closed"
    assert table.choose("m").id == "a"


def test_engine_queue_depth_prices_expected_waiting(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("cheap", "0.36"), ep("pricey", "36")])
    cheap = table.routes("m")[0]
    assert table.choose("m").id == "cheap"
    table.observe_engine("cheap", queue_depth=3)
    assert table.marginal_cost(cheap) == pytest.approx(3 * QUEUE_PENALTY_PER_MTOK)
    assert table.choose("m").id == "pricey"  # an idle engine beats one with a queue
    table.observe_engine("cheap", queue_depth=0)
    assert table.choose("m").id == "cheap"


def test_ttft_slo_ranks_slow_endpoints_last(clock: ManualClock) -> None:
    table = RoutingTable(clock, ttft_slo_ms=500.0)
    table.swap([ep("cheap", "0.36"), ep("pricey", "36")])
    cheap = table.routes("m")[0]
    for ms in (100.0, 120.0, 900.0, 950.0, 110.0):  # p90 is 950 ms: misses the SLO
        table.record_success(cheap, ms)
    assert table.marginal_cost(cheap) == pytest.approx(SLO_PENALTY_PER_MTOK)
    assert table.choose("m").id == "pricey"
    table.observe_engine("cheap", 0, ttft_ms=(80.0, 300.0))  # the engine's figures win
    assert table.choose("m").id == "cheap"


def test_latency_sort_prefers_the_engine_reported_p50(clock: ManualClock) -> None:
    table = RoutingTable(clock)
    table.swap([ep("a", "1"), ep("b", "9")])
    table.stats("a").ewma_ttft_ms = 50.0
    table.stats("b").ewma_ttft_ms = 80.0
    latency = RoutingPolicy(sort="latency")
    assert table.choose("m", policy=latency).id == "a"
    table.observe_engine("a", 0, ttft_ms=(400.0, 800.0))
    assert table.choose("m", policy=latency).id == "b"


def test_ttft_percentiles_nearest_rank_over_a_window() -> None:
    stats = EndpointStats()
    assert stats.ttft_percentiles() is None
    for ms in range(1, 11):
        stats.observe_ttft(float(ms))
    assert stats.ttft_percentiles() == (5.0, 9.0)
    for _ in range(TTFT_WINDOW):
        stats.observe_ttft(100.0)  # the old observations fall out of the window
    assert stats.ttft_percentiles() == (100.0, 100.0)
