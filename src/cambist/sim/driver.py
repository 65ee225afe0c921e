"""The discrete-event driver: one virtual clock, the real control loops, traffic.

Events fall on a minute grid of a :class:`~cambist.domain.clock.ManualClock`:
every hour the market steps (each simulated supplier's ``step(now)``, then a
fresh listing); every five minutes the capacity loop steps (placement
solves, leases, releases through the suppliers) and the routing table is
swapped. The capacity loop is either the simulator's own policy
(:class:`~cambist.sim.policy.CapacityPolicy`, ``mode="policy"``) or the
real deploy controller with its autoscaler
(:class:`~cambist.sim.deploy_loop.ControlledCapacity`, ``"controller"``);
both answer :class:`CapacityLoop`. every minute each model's traffic is routed and served, per
cohort or per request (:mod:`cambist.sim.traffic`), and the served tokens
are metered with the route's own ``compute_cost``. Units whose supplier took
them back since the last minute leave the fleet at each minute boundary,
before the policy runs, and the policy replaces them at once. Nothing sleeps,
so a month runs in minutes. The policy only ever sees minutes already simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from cambist.domain.clock import ManualClock
from cambist.gateway.limits import RateLimiter
from cambist.gateway.routing import EndpointRoute, RoutingTable
from cambist.ledger.plans import PlanBook
from cambist.sim.admission import admit_request
from cambist.sim.capacity import ModelShape
from cambist.sim.demand import Demand
from cambist.sim.deploy_loop import ControlledCapacity
from cambist.sim.fleet import Fleet, Preemption
from cambist.sim.market import Market
from cambist.sim.policy import CapacityPolicy, Observed, PolicySettings
from cambist.sim.traffic import (
    RequestRouter,
    TtftSamples,
    route_many,
    seq_tok_s,
    serve_minute,
)

__all__ = ["CapacityLoop", "CapacityMode", "DriverResult", "run_driver"]

F64 = npt.NDArray[np.float64]
_NO_CAPACITY_WAIT_S = 60.0

CapacityMode = Literal["policy", "controller"]


class CapacityLoop(Protocol):
    """What the driver asks of the loop that leases and releases the fleet."""

    @property
    def solves(self) -> int: ...

    @property
    def replacements(self) -> int: ...

    @property
    def interval_s(self) -> float: ...

    async def listing(self, now: float) -> None:
        """The market just re-listed."""

    async def step(self, now: float) -> None:
        """Every ``interval_s``."""

    async def minute(self, now: float) -> None:
        """Every other minute."""

    async def replace_lost(self, lost: list[Preemption], now: float) -> None:
        """Units the market just took back."""

    def track_restores(self, now: float) -> None:
        """Close the loss records whose capacity is whole again."""

    async def close(self, now: float) -> None:
        """End of run: release everything."""


@dataclass(slots=True)
class DriverResult:
    """What the Cambist run produced (measured minutes only where noted)."""

    fleet: Fleet
    policy: CapacityLoop
    samples: TtftSamples
    served: dict[str, F64]
    """Model -> output tokens served per minute (whole run)."""
    capacity: dict[str, F64]
    """Model -> ready capacity, tokens/s, per minute (whole run)."""
    refused: int = 0
    """Requests the rate limiter refused (per-request traffic)."""
    metered: list[tuple[str, int, int, Decimal]] = field(default_factory=list)
    """(model, hour, output tokens, metered compute cost) per endpoint-hour."""
    end: float = 0.0


@dataclass(slots=True)
class _ModelState:
    idx: list[int]
    reqs: F64
    tokens: F64
    ahead: dict[str, list[float]] = field(default_factory=dict)
    """Endpoint -> output tokens its running requests make in this and the next minutes."""
    backlog: dict[str, float] = field(default_factory=dict)
    pool: float = 0.0
    """Tokens waiting for any endpoint (none routable, or theirs went away)."""
    hour_tokens: dict[str, float] = field(default_factory=dict)
    hour_routes: dict[str, EndpointRoute] = field(default_factory=dict)


def _spread(ahead: list[float], start_s: float, duration_s: float, tokens: float) -> None:
    """Add ``tokens`` made evenly from ``start_s`` for ``duration_s`` seconds
    (0 = the current minute's start) to the per-minute bins of ``ahead``."""
    end = start_s + max(duration_s, 1e-6)
    rate = tokens / (end - start_s)
    j = int(start_s // 60)
    while j * 60.0 < end:
        lo, hi = max(start_s, j * 60.0), min(end, (j + 1) * 60.0)
        while len(ahead) <= j:
            ahead.append(0.0)
        ahead[j] += rate * (hi - lo)
        j += 1


class _Traffic:
    """Routes and serves one minute of one model's demand.

    A request's output tokens are made over its whole life (its time in flight
    at the endpoint's per-sequence speed), so routed work is spread over the
    coming minutes of its endpoint before the minute is served."""

    def __init__(self, demand: Demand, shapes: dict[str, ModelShape], table: RoutingTable,
                 clock: ManualClock, per_request: bool, measure_from: int, seed: int) -> None:
        self.demand, self.shapes, self.table = demand, shapes, table
        self.per_request, self.measure_from = per_request, measure_from
        self.router = RequestRouter(table, clock)
        self.clock = clock
        self.limiter = RateLimiter(PlanBook(), clock)
        self.refused = 0
        self.refused_now = 0
        self.rng = np.random.default_rng([seed, 2])
        self.samples = TtftSamples()
        self.scratch = TtftSamples()

    def _duration(self, st: _ModelState, route: EndpointRoute, tokens: float) -> float:
        queued = st.backlog.get(route.id, 0.0) / max(route.endpoint.capacity_tok_s, 1e-9)
        return self.shapes[route.endpoint.model].ttft0_s + tokens / seq_tok_s(route) + queued

    def _route_requests(self, model: str, st: _ModelState, k: int, t0: float) \
            -> tuple[dict[str, float], float]:
        """Route each request of the minute with ``table.choose``; returns new
        requests per endpoint and the tokens no endpoint took."""
        d = self.demand
        req: dict[str, float] = {}
        arrivals = []
        for i in st.idx:
            n = int(d.requests[i, k])
            if n == 0:
                continue
            split = self.rng.dirichlet(np.ones(n)) * float(d.visible[i, k] + d.reasoning[i, k])
            times = self.rng.uniform(0.0, 60.0, n)
            prompt = float(d.prompt[i, k]) / n
            arrivals += [(float(t), d.tenants[i].id, float(x), prompt)
                         for t, x in zip(times, split, strict=True)]
        unrouted = 0.0
        self.refused_now = 0
        for at, tenant, out, prompt in sorted(arrivals):
            if t0 + at > self.clock.now():
                self.clock.set(t0 + at)
            if not admit_request(self.limiter, tenant, round(prompt + out)):
                self.refused += 1
                self.refused_now += 1
                continue
            def duration(route: EndpointRoute, out: float = out) -> float:
                return self._duration(st, route, out)

            r = self.router.route(model, tenant, t0 + at, duration)
            if r is None:
                unrouted += out
                continue
            _spread(st.ahead.setdefault(r.id, []), at, duration(r), out)
            req[r.id] = req.get(r.id, 0.0) + 1.0
        return req, unrouted

    def _route_cohort(self, model: str, st: _ModelState, k: int) -> tuple[dict[str, float], float]:
        """Route the minute's cohort (and the pool) with ``route_many``."""
        reqs, tokens = float(st.reqs[k]), float(st.tokens[k]) + st.pool
        for r in self.table.candidates(model):
            # What an endpoint is already making (and has queued) holds requests there.
            held = (st.backlog.get(r.id, 0.0) + (st.ahead.get(r.id) or [0.0])[0]) / 60.0
            self.table.stats(r.id).in_flight = round(held / seq_tok_s(r))
        routes, shares = route_many(self.table, model, tokens / 60.0)
        if not routes:
            return {}, tokens
        per_req = float(st.tokens[k]) / reqs if reqs else float(self.shapes[model].output_tokens)
        req = {}
        for r, share in zip(routes, shares.tolist(), strict=True):
            if share > 0:
                _spread(st.ahead.setdefault(r.id, []), 30.0, self._duration(st, r, per_req),
                        share * tokens)
                req[r.id] = share * reqs
        return req, 0.0

    def minute(self, model: str, st: _ModelState, k: int, t0: float) -> float:
        """Route and serve minute ``k``; returns the tokens served."""
        single = self.per_request and k >= self.measure_from
        if single and k == self.measure_from:
            # Hand over from cohorts (warm-up) to single requests: from now on
            # in-flight counts come from acquire/release alone.
            for r in self.table.routes(model):
                self.table.stats(r.id).in_flight = 0
        if single:
            req, unrouted = self._route_requests(model, st, k, t0)
            if st.pool > 0:  # work orphaned earlier is re-routed as one batch
                routes, shares = route_many(self.table, model, st.pool / 60.0)
                for r, share in zip(routes, shares.tolist(), strict=True):
                    _spread(st.ahead.setdefault(r.id, []), 0.0, 60.0, share * st.pool)
                if routes:
                    st.pool = 0.0
        else:
            req, unrouted = self._route_cohort(model, st, k)
            if req:
                st.pool = 0.0
        st.pool += unrouted
        samples = self.samples if k >= self.measure_from else self.scratch
        waiting = float(st.reqs[k]) - sum(req.values()) - (self.refused_now if single else 0)
        if waiting > 1e-9:
            samples.add(np.array([waiting]), np.array([_NO_CAPACITY_WAIT_S]), np.zeros(1))
        serving = self.table.routes(model)
        live = {r.id for r in serving}
        for rid in [r for r in st.ahead if r not in live]:
            st.pool += sum(st.ahead.pop(rid)) + st.backlog.pop(rid, 0.0)
        if not serving:
            return 0.0
        loads = np.array([st.ahead[r.id].pop(0) if st.ahead.get(r.id) else 0.0 for r in serving])
        rq = np.array([req.get(r.id, 0.0) for r in serving])
        cap = np.array([r.endpoint.capacity_tok_s for r in serving])
        shape = self.shapes[model]
        ttft0 = np.array([shape.ttft_for(r.endpoint.sku, r.endpoint.capacity_tok_s)
                          for r in serving])
        back = np.array([st.backlog.get(r.id, 0.0) for r in serving])
        served, newb = serve_minute(loads, rq, cap, ttft0, back, samples)
        for r, s, b in zip(serving, served.tolist(), newb.tolist(), strict=True):
            st.backlog[r.id] = b
            st.hour_tokens[r.id] = st.hour_tokens.get(r.id, 0.0) + s
            st.hour_routes[r.id] = r
        return float(served.sum())


async def run_driver(demand: Demand, market: Market, shapes: dict[str, ModelShape],
                     settings: PolicySettings, start: float, measure_from: int,
                     per_request: bool = False, seed: int = 7,
                     mode: CapacityMode = "policy") -> DriverResult:
    """Run Cambist over every minute of ``demand`` (the first ``measure_from``
    minutes are warm-up: the policy learns, the figures skip them; traffic
    there always moves in cohorts, so both modes measure the same days after
    the same warm-up). ``mode`` picks the capacity loop (module docstring)."""
    clock = ManualClock(start)
    table = RoutingTable(clock)
    fleet = Fleet(market, shapes, table, clock)
    by_model = demand.by_model()
    rate = {m: np.zeros(demand.minutes) for m in by_model}
    observed = Observed(rate)
    policy: CapacityLoop
    if mode == "controller":
        policy = ControlledCapacity(fleet, observed, start, settings, clock, table)
    else:
        policy = CapacityPolicy(fleet, observed, start, settings)
    traffic = _Traffic(demand, shapes, table, clock, per_request, measure_from, seed)
    output = demand.output
    states = {m: _ModelState(idx, demand.requests[idx].sum(axis=0).astype(np.float64),
                             output[idx].sum(axis=0).astype(np.float64))
              for m, idx in by_model.items()}
    served = {m: np.zeros(demand.minutes) for m in by_model}
    capacity = {m: np.zeros(demand.minutes) for m in by_model}
    result = DriverResult(fleet, policy, traffic.samples, served, capacity)
    for k in range(demand.minutes):
        now = start + 60.0 * k
        clock.set(max(now, clock.now()))
        if k % 60 == 0:
            if k:
                _meter(states, k // 60 - 1, result)
            await market.step(now)
            await policy.listing(now)
        lost = await fleet.preempt_due(now)
        if lost:
            await policy.replace_lost(lost, now)
        if k % int(settings.interval_s // 60) == 0:
            await policy.step(now)
        else:
            await policy.minute(now)
        policy.track_restores(now)
        for m, st in states.items():
            capacity[m][k] = sum(r.endpoint.capacity_tok_s for r in table.routes(m))
            served[m][k] = traffic.minute(m, st, k, now)
            rate[m][k] = st.tokens[k] / 60.0
            observed.backlog[m] = st.pool + sum(st.backlog.values())
        observed.upto = k + 1
    _meter(states, (demand.minutes - 1) // 60, result)
    result.end = start + 60.0 * demand.minutes
    result.refused = traffic.refused
    await policy.close(result.end)
    return result


def _meter(states: dict[str, _ModelState], hour: int, result: DriverResult) -> None:
    """Meter an hour of served tokens per endpoint with the route's compute cost."""
    for m, st in states.items():
        for rid, tokens in st.hour_tokens.items():
            n = round(tokens)
            if n > 0:
                cost = st.hour_routes[rid].compute_cost(n)
                result.metered.append((m, hour, n, cost))
        st.hour_tokens.clear()
        st.hour_routes.clear()
