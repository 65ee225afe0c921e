"""One simulation run: demand, market, Cambist, the baselines and the oracle.

``simulate`` generates the demand (plus one warm-up day the figures skip,
so Cambist's forecasts have a yesterday), drives Cambist through it on the
virtual clock, then evaluates the dedicated and single-supplier baselines and
the hindsight oracle on the same realized demand and market tape. When the
scenario turns the market-maker book on, the book trades from the end of the
warm-up (:mod:`cambist.sim.maker`) and its money is settled and posted with
the run's (:mod:`cambist.sim.book_ledger`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np

from cambist.ledger.plans import PlanBook
from cambist.sim.admission import admit_cohorts
from cambist.sim.baselines import Outcome, dedicated, single_supplier
from cambist.sim.book_ledger import BOOK_ACCOUNTS, BookResult, settle_book
from cambist.sim.books import Books, post_books, unit_costs
from cambist.sim.capacity import model_shapes
from cambist.sim.demand import Demand, generate_demand
from cambist.sim.driver import CapacityMode, DriverResult, run_driver
from cambist.sim.maker import BookDesk
from cambist.sim.market import Market
from cambist.sim.oracle import hourly_oracle
from cambist.sim.policy import PolicySettings
from cambist.sim.scenario import Scenario

__all__ = ["RunOptions", "SimRun", "simulate"]

START = 1_767_225_600.0  # 2026-01-01T00:00Z, the ManualClock's default
WARMUP_HOURS = 24


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What to run: size, seed, traffic granularity, which comparisons."""

    days: float
    tenants: int
    seed: int
    per_request: bool = False
    baselines: bool = True
    warmup_hours: int = WARMUP_HOURS
    elastic_single: bool = False
    """Also run the oracle on the single supplier's offers alone (a hindsight
    single-cloud autoscaler): how much of the saving is multi-supplier."""
    capacity: CapacityMode = "policy"
    """Who leases the fleet: the simulator's capacity policy or the real deploy
    controller with its autoscaler (:mod:`cambist.sim.deploy_loop`). (``cambist
    sim`` defaults to the controller; this stays ``policy`` while tests of the
    policy's own behaviour, e.g. ``tests/sim/test_preemption.py``, rely on it.)"""


@dataclass(slots=True)
class SimRun:
    """Everything a report needs."""

    scenario: Scenario
    options: RunOptions
    demand: Demand
    """Measured window only."""
    driver: DriverResult
    outcomes: dict[str, Outcome]
    revenue: dict[str, Decimal]
    """Model -> what tenants paid over the measured window."""
    books: Books
    """Cambist's measured window as posted to the journal."""
    wall_s: float
    simulated_s: float
    cpu_s: float
    """CPU time of this process during the run (steadier than wall time on a busy host)."""
    timings: dict[str, float] = field(default_factory=dict)
    book: BookResult | None = None
    """The market-maker book's result, when the run had one."""

    @property
    def speedup(self) -> float:
        return self.simulated_s / self.wall_s if self.wall_s > 0 else float("inf")


def _revenue(scenario: Scenario, demand: Demand) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for model, idx in demand.by_model().items():
        p_in, p_out = scenario.prices[model]
        prompt = round(float(demand.prompt[idx].astype(np.float64).sum()))
        output = round(float(demand.output[idx].astype(np.float64).sum()))
        out[model] = (p_in * prompt + p_out * output) / Decimal(1_000_000)
    return out


def _cambist_outcome(result: DriverResult, costs: list[float], hourly: np.ndarray,
                     measure_from: int) -> Outcome:
    """Cambist's cost, served tokens and capacity over the measured window."""
    fleet = result.fleet
    served = sum(float(s[measure_from:].sum()) for s in result.served.values())
    capacity = sum(float(c[measure_from:].sum()) * 60.0 for c in result.capacity.values())
    return Outcome("cambist", sum(costs), served, capacity, result.samples, hourly,
                   {"leases": len(fleet.units), "replacements": result.policy.replacements,
                    "solves": result.policy.solves, "leases_refused": fleet.leases_failed})


async def simulate(scenario: Scenario, options: RunOptions) -> SimRun:
    """Run ``scenario`` with ``options``; see the module docstring."""
    t0, c0 = time.perf_counter(), time.process_time()
    warm = options.warmup_hours
    full = generate_demand(scenario, options.tenants, options.days + warm / 24, options.seed)
    refused = admit_cohorts(full, PlanBook())  # plan limits, before anyone sees the demand
    shapes = model_shapes(full)
    settings = PolicySettings(target_utilization=scenario.target_utilization,
                              ttft_ms=scenario.ttft_slo_ms / 2)
    timings: dict[str, float] = {"demand": time.perf_counter() - t0}
    measure = warm * 60
    demand = full.slice(list(range(len(full.tenants))), measure, full.minutes)
    hours = demand.minutes // 60
    with tempfile.TemporaryDirectory(prefix="cambist-sim-") as state:
        market = Market(scenario, Path(state), options.seed)
        desk = None
        if scenario.book.enabled:
            desk = market.book = BookDesk(scenario.book, market, START)
        t1 = time.perf_counter()
        start = START - warm * 3600.0
        result = await run_driver(full, market, shapes, settings, start, measure,
                                  options.per_request, options.seed, options.capacity)
        timings["cambist"] = time.perf_counter() - t1
        prices, _ = market.tape.arrays()
        column = market.tape.index if desk is None else desk.column(market.tape.index)
        costs, hourly = unit_costs(result.fleet.units, column, prices, start, warm, hours)
        book = None
        if desk is not None:
            costs, hourly, book = settle_book(desk, result.fleet.units, costs, hourly,
                                              column, prices, start, warm, hours, result.end)
        t2 = time.perf_counter()
        books = await post_books(scenario, demand, result.fleet.units, costs, start, Path(state),
                                 book.entries if book else (), BOOK_ACCOUNTS if book else ())
        timings["ledger"] = time.perf_counter() - t2
    # The book's units are paid through the book: own use at cost, overruns at spot.
    spent = costs + ([book.own_use_at_cost + book.overrun_cost] if book else [])
    outcomes = {"cambist": _cambist_outcome(result, spent, hourly, measure)}
    outcomes["cambist"].detail["rate_limited"] = round(refused) + result.refused
    if options.baselines:
        t2 = time.perf_counter()
        target = scenario.target_utilization
        outcomes["dedicated"] = dedicated(demand, market.tape, shapes, warm, target)
        outcomes["single-supplier"] = single_supplier(demand, market.tape, shapes, warm, target)
        timings["baselines"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        outcomes["oracle"] = hourly_oracle(demand, market.tape, shapes, market.spin_up_s,
                                           warm, target)
        timings["oracle"] = time.perf_counter() - t3
        if options.elastic_single:
            supplier = outcomes["single-supplier"].detail["supplier"]
            assert isinstance(supplier, str)
            outcomes["single-elastic"] = hourly_oracle(
                demand, market.tape, shapes, market.spin_up_s, warm, target, supplier)
    wall = time.perf_counter() - t0
    return SimRun(scenario, options, demand, result, outcomes, _revenue(scenario, demand),
                  books, wall, full.minutes * 60.0, time.process_time() - c0, timings, book)
