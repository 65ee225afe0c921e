"""Traffic through the gateway's routing table, per cohort or per request.

Both modes route with the live :class:`~cambist.gateway.routing.RoutingTable`:
its snapshot (swapped by the fleet whenever endpoints change), its candidate
filter (health, visibility, privacy) and its marginal-cost rule
``avg_cost_per_mtok x (in_flight / max_concurrency)**2`` with a queue penalty
at saturation.

- **Per request** (:class:`RequestRouter`): every request calls
  ``table.choose``, ``acquire`` on arrival and ``release`` when it finishes
  on the virtual clock, exactly as the gateway does.
- **Per cohort** (:func:`route_many`): a tenant-minute of requests is placed
  at once. Greedy per-request choice equalizes the marginal cost across
  endpoints, so the batch answer is the water-filling solution
  ``n_i = M_i * min(1, lam / sqrt(a_i))`` for the requests in flight, with
  any excess beyond every endpoint's concurrency spread evenly (the queue
  penalty grows by one step per queued request). This is the ``route_many``
  entry point the gateway would expose; it lives here on top of the table's
  public API.

Serving (:func:`serve_minute`) is a fluid model per endpoint and minute:
tokens beyond the minute's throughput wait as backlog; time to first token is
the idle prefill time stretched by the batch it shares the GPU with
(``ttft0 * (1 + rho)``), plus an exponential wait to join the running batch
of mean ``JOIN_S * rho / (1 - rho)`` (a request joins at a step boundary of a
continuous-batching engine), plus the backlog ahead. Each (endpoint, minute)
contributes a :class:`TtftSample` from which SLO attainment and p99 follow.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from cambist.domain.clock import ManualClock
from cambist.gateway.routing import EndpointRoute, RoutingTable

__all__ = [
    "RequestRouter",
    "TtftSamples",
    "route_many",
    "seq_tok_s",
    "serve_minute",
    "serve_series",
]

F64 = npt.NDArray[np.float64]

_RHO_CAP = 0.98
JOIN_S = 0.05
"""About one decode step of a loaded engine: the scale of the wait to join its batch."""


@dataclass(slots=True)
class TtftSamples:
    """Weighted TTFT distributions: each is ``shift + Exp(mean)`` for ``weight`` requests."""

    weight: list[F64] = field(default_factory=list)
    shift: list[F64] = field(default_factory=list)
    mean: list[F64] = field(default_factory=list)

    def add(self, weight: F64, shift: F64, mean: F64) -> None:
        """Record requests with TTFT ``shift + Exp(mean)`` (seconds)."""
        self.weight.append(weight)
        self.shift.append(shift)
        self.mean.append(mean)

    def _arrays(self) -> tuple[F64, F64, F64]:
        if not self.weight:
            z = np.zeros(0)
            return z, z, z
        return (np.concatenate(self.weight), np.concatenate(self.shift),
                np.concatenate(self.mean))

    def _tail(self, x: float, w: F64, s: F64, m: F64) -> float:
        """Requests with TTFT above ``x`` seconds."""
        over = np.where(s >= x, 1.0,
                        np.exp(-np.maximum(x - s, 0.0) / np.maximum(m, 1e-9)))
        over = np.where((m <= 0) & (s < x), 0.0, over)
        return float((w * over).sum())

    def attainment(self, slo_s: float) -> float:
        """Share of requests whose TTFT met ``slo_s`` (1.0 with no requests)."""
        w, s, m = self._arrays()
        total = float(w.sum())
        return 1.0 - self._tail(slo_s, w, s, m) / total if total > 0 else 1.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of TTFT in seconds (bisection on the mixture)."""
        w, s, m = self._arrays()
        total = float(w.sum())
        if total <= 0:
            return 0.0
        lo, hi = 0.0, float((s + 12.0 * m).max()) + 1.0
        target = (1.0 - q) * total
        for _ in range(50):
            mid = (lo + hi) / 2
            if self._tail(mid, w, s, m) > target:
                lo = mid
            else:
                hi = mid
        return hi


def serve_minute(loads: F64, requests: F64, cap: F64, ttft0: F64, backlog: F64,
                 samples: TtftSamples) -> tuple[F64, F64]:
    """Serve one minute of ``loads`` (output tokens per endpoint); returns
    ``(served, new_backlog)`` and records the TTFT of the minute's ``requests``."""
    capmin = cap * 60.0
    total = backlog + loads
    served = np.minimum(total, capmin)
    rho = np.minimum(np.divide(loads, capmin, out=np.zeros_like(loads), where=capmin > 0),
                     _RHO_CAP)
    wait = np.divide(backlog + np.maximum(loads - capmin, 0.0) / 2, cap,
                     out=np.zeros_like(loads), where=cap > 0)
    samples.add(requests.copy(), ttft0 * (1.0 + rho) + wait, JOIN_S * rho / (1.0 - rho))
    return served, total - served


def seq_tok_s(route: EndpointRoute) -> float:
    """Tokens/s one sequence gets on ``route`` in a full batch (capacity / batch)."""
    ep = route.endpoint
    return max(ep.capacity_tok_s, 1e-9) / max(ep.max_concurrency, 1)


def route_many(table: RoutingTable, model: str, tokens_per_s: float,
               tenant: str | None = None) -> tuple[list[EndpointRoute], F64]:
    """Split a cohort of ``model`` traffic producing ``tokens_per_s`` output
    tokens/s over the candidates ``table.choose`` would consider, as that
    many greedy choices would: requests in flight ``n_i`` equalize the
    marginal cost ``a_i (n_i / M_i)**2`` (excess beyond every endpoint's
    concurrency spread evenly), counting what each endpoint already holds (its
    ``in_flight`` statistic); a request in flight on endpoint ``i`` makes
    ``capacity_i / M_i`` tokens/s (Little's law links requests and tokens).
    Returns the routes and each one's share of the new tokens (summing to 1;
    empty without candidates)."""
    routes = table.candidates(model, tenant)
    if not routes:
        return [], np.zeros(0)
    m = np.array([max(r.endpoint.max_concurrency, 1) for r in routes], dtype=np.float64)
    a = np.array([max(r.avg_cost_per_mtok, 1e-12) for r in routes], dtype=np.float64)
    speed = np.array([seq_tok_s(r) for r in routes])
    held = np.array([table.stats(r.id).in_flight for r in routes], dtype=np.float64) * speed
    total = tokens_per_s + float(held.sum())
    if total <= 0:
        return routes, m * speed / (m * speed).sum()
    target = _water_fill(m, a, speed, total)
    new = np.maximum(target - held, 0.0)
    if new.sum() <= 0:
        return routes, target / target.sum()
    return routes, new / new.sum()


def _water_fill(m: F64, a: F64, speed: F64, total: float) -> F64:
    """Tokens/s per endpoint when requests ``n = M * min(1, lam / sqrt(a))``
    make ``n * speed = total`` tokens/s; beyond every endpoint's concurrency
    the extra requests spread evenly."""
    full = m * speed
    if total >= full.sum():
        extra = (total - full.sum()) / speed.sum()
        return full + extra * speed
    r = 1.0 / np.sqrt(a)
    order = np.argsort(-r)
    fs, ws = full[order], (full * r)[order]
    capped = np.concatenate(([0.0], np.cumsum(fs)))[:-1]        # endpoints full before j
    rest = np.cumsum(ws[::-1])[::-1]                             # sum over j.. of M s r
    lam = (total - capped) / rest
    rs = r[order]
    ok = lam * rs < 1.0
    j = int(np.argmax(ok)) if ok.any() else len(fs) - 1
    t_sorted = np.where(np.arange(len(fs)) < j, fs, fs * np.minimum(1.0, lam[j] * rs))
    out = np.empty_like(t_sorted)
    out[order] = t_sorted
    return out


class RequestRouter:
    """Routes single requests with ``table.choose`` and holds them in flight
    until they finish on the virtual clock."""

    def __init__(self, table: RoutingTable, clock: ManualClock) -> None:
        self.table, self.clock = table, clock
        self._running: list[tuple[float, int, EndpointRoute]] = []
        self._n = 0

    def route(self, model: str, tenant: str, at: float,
              duration_s: Callable[[EndpointRoute], float]) -> EndpointRoute | None:
        """Choose an endpoint for a request arriving at ``at``; it stays in
        flight for ``duration_s(route)`` seconds (queueing included)."""
        while self._running and self._running[0][0] <= at:
            _, _, done = heapq.heappop(self._running)
            self.table.release(done)
        if at > self.clock.now():
            self.clock.set(at)
        route = self.table.choose(model, tenant=tenant)
        if route is None:
            return None
        self.table.acquire(route)
        self._n += 1
        heapq.heappush(self._running, (at + duration_s(route), self._n, route))
        return route


def serve_series(loads: F64, requests: F64, cap: F64, ttft0: F64,
                 samples: TtftSamples) -> F64:
    """Serve a pool whose load spreads evenly over its units, minute by minute
    (the baselines and the oracle); returns the tokens served per minute."""
    capmin = cap * 60.0
    served = np.zeros_like(loads)
    wait = np.zeros_like(loads)
    backlog = 0.0
    for k, (load, c) in enumerate(zip(loads.tolist(), capmin.tolist(), strict=True)):
        total = backlog + load
        s = min(total, c)
        wait[k] = (backlog + max(load - c, 0.0) / 2) / (c / 60.0) if c > 0 else 60.0
        served[k] = s
        backlog = total - s
    rho = np.minimum(np.divide(loads, capmin, out=np.ones_like(loads), where=capmin > 0),
                     _RHO_CAP)
    samples.add(requests.astype(np.float64), ttft0 * (1.0 + rho) + wait,
                JOIN_S * rho / (1.0 - rho))
    return served
