"""The routing table: which endpoint serves the next request for a model.

The table keeps an immutable snapshot ``model -> tuple[EndpointRoute, ...]``
that :meth:`RoutingTable.swap` replaces in one assignment (readers never see a
half-built table), and live per-endpoint statistics (in flight, EWMA time to
first token, consecutive failures, circuit-open-until) in a separate mutable
map keyed by endpoint id, which survives swaps. :class:`RoutingRefresh` is the
control loop that rebuilds the snapshot from the ``endpoints`` table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import Clock
from cambist.domain.endpoint import Endpoint
from cambist.domain.money import from_micros
from cambist.store.schema import endpoints as endpoints_table

__all__ = [
    "QUEUE_PENALTY_PER_MTOK",
    "EndpointRoute",
    "EndpointStats",
    "RoutingRefresh",
    "RoutingTable",
    "endpoint_from_row",
]

QUEUE_PENALTY_PER_MTOK = 1000.0
"""Dollars per Mtok added per request queued beyond ``max_concurrency``: larger
than any real marginal cost, so a saturated endpoint ranks after every one with
a free slot."""


def _avg_cost_per_mtok(endpoint: Endpoint) -> float:
    if endpoint.cost_per_hour <= 0:
        return 0.0
    if endpoint.capacity_tok_s <= 0:
        return math.inf  # costs money, throughput unknown: last resort once busy
    return float(endpoint.cost_per_hour) / (endpoint.capacity_tok_s * 3600 / 1e6)


def _base_url(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


@dataclass(frozen=True, slots=True)
class EndpointRoute:
    """One routable endpoint with what routing precomputes about it.

    ``base_url`` always ends in ``/v1`` (an endpoint URL may be given with or
    without it); ``order`` is the stable tie-break rank within its model.
    """

    endpoint: Endpoint
    base_url: str
    avg_cost_per_mtok: float
    order: int

    @property
    def id(self) -> str:
        return self.endpoint.id

    @property
    def supplier(self) -> str:
        return self.endpoint.supplier

    def url(self, path: str) -> str:
        """The upstream URL of an API path such as ``/chat/completions``."""
        return f"{self.base_url}{path}"

    def compute_cost(self, completion_tokens: int) -> Decimal:
        """Lease cost allocated to ``completion_tokens`` (0 when capacity is unknown)."""
        ep = self.endpoint
        if ep.capacity_tok_s <= 0 or completion_tokens <= 0:
            return Decimal(0)
        return ep.cost_per_hour * completion_tokens / Decimal(repr(ep.capacity_tok_s)) / 3600


@dataclass(slots=True)
class EndpointStats:
    """Live, mutable statistics of one endpoint."""

    in_flight: int = 0
    ewma_ttft_ms: float | None = None
    consecutive_failures: int = 0
    circuit_open_until: float = 0.0


class RoutingTable:
    """Routes per model, swapped atomically, plus live endpoint statistics.

    ``circuit_open_s`` is how long a failing endpoint is skipped after its first
    failure; it doubles with each consecutive failure up to ``circuit_max_s``.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        circuit_open_s: float = 5.0,
        circuit_max_s: float = 30.0,
        ewma_alpha: float = 0.2,
    ) -> None:
        self._clock = clock
        self._circuit_open_s = circuit_open_s
        self._circuit_max_s = circuit_max_s
        self._alpha = ewma_alpha
        self._snapshot: dict[str, tuple[EndpointRoute, ...]] = {}
        self._stats: dict[str, EndpointStats] = {}

    def swap(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the snapshot with ``endpoints`` (stats of kept endpoints survive)."""
        by_model: dict[str, list[Endpoint]] = {}
        for ep in endpoints:
            by_model.setdefault(ep.model, []).append(ep)
        snapshot: dict[str, tuple[EndpointRoute, ...]] = {}
        for model, eps in by_model.items():
            ranked = sorted(eps, key=lambda e: (_avg_cost_per_mtok(e), e.id))
            snapshot[model] = tuple(
                EndpointRoute(e, _base_url(e.url), _avg_cost_per_mtok(e), i)
                for i, e in enumerate(ranked)
            )
        ids = {r.id for routes in snapshot.values() for r in routes}
        self._stats = {i: s for i, s in self._stats.items() if i in ids or s.in_flight > 0}
        self._snapshot = snapshot

    def models(self) -> list[str]:
        """Every model in the snapshot, healthy or not."""
        return sorted(self._snapshot)

    def knows(self, model: str) -> bool:
        """Whether any endpoint (healthy or not) serves ``model``."""
        return model in self._snapshot

    def routes(self, model: str) -> tuple[EndpointRoute, ...]:
        """All routes of ``model``, cheapest average cost first."""
        return self._snapshot.get(model, ())

    def healthy(self, model: str, tenant: str | None = None) -> tuple[EndpointRoute, ...]:
        """Routes of ``model`` marked healthy that ``tenant`` may use: the
        platform's shared pool (owner ``None``) and the tenant's own dedicated
        endpoints, never another tenant's."""
        return tuple(r for r in self.routes(model) if r.endpoint.healthy
                     and (r.endpoint.owner is None or r.endpoint.owner == tenant))

    def stats(self, endpoint_id: str) -> EndpointStats:
        """The live statistics of an endpoint (created on first use)."""
        stats = self._stats.get(endpoint_id)
        if stats is None:
            stats = self._stats[endpoint_id] = EndpointStats()
        return stats

    def marginal_cost(self, route: EndpointRoute) -> float:
        """Expected marginal cost, $ per Mtok, of sending one more request to ``route``.

        ``avg = cost_per_hour / (capacity_tok_s * 3600 / 1e6)`` is what the
        endpoint's capacity costs per Mtok at full batch; ``load = in_flight /
        max_concurrency``. The marginal cost is ``avg * load**2``: near zero on
        idle leased capacity (its cost is sunk), rising as it saturates, so idle
        replicas attract load. At or beyond ``max_concurrency`` each request
        already waiting adds :data:`QUEUE_PENALTY_PER_MTOK`.
        """
        stats = self.stats(route.id)
        limit = max(route.endpoint.max_concurrency, 1)
        load = stats.in_flight / limit
        cost = 0.0 if load == 0 else route.avg_cost_per_mtok * load * load
        if stats.in_flight >= limit:
            cost += QUEUE_PENALTY_PER_MTOK * (stats.in_flight - limit + 1)
        return cost

    def choose(self, model: str, exclude: set[str] | frozenset[str] = frozenset(),
               tenant: str | None = None) -> EndpointRoute | None:
        """The best healthy route for ``model`` not in ``exclude``, or ``None``.

        Candidates are healthy endpoints whose circuit is closed, ranked by
        :meth:`marginal_cost`, then fewer requests in flight, then the stable
        order (cheaper average cost, then id). If every healthy candidate has
        an open circuit, the one closing soonest is probed rather than failing
        the model outright.
        """
        now = self._clock.now()
        candidates = [r for r in self.healthy(model, tenant) if r.id not in exclude]
        if not candidates:
            return None
        closed = [r for r in candidates if self.stats(r.id).circuit_open_until <= now]
        if not closed:
            return min(candidates, key=lambda r: (self.stats(r.id).circuit_open_until, r.order))
        return min(
            closed,
            key=lambda r: (self.marginal_cost(r), self.stats(r.id).in_flight, r.order),
        )

    def acquire(self, route: EndpointRoute) -> None:
        """Count a request in flight on ``route``."""
        self.stats(route.id).in_flight += 1

    def release(self, route: EndpointRoute) -> None:
        """A request on ``route`` finished (successfully or not)."""
        stats = self.stats(route.id)
        stats.in_flight = max(stats.in_flight - 1, 0)

    def record_success(self, route: EndpointRoute, ttft_ms: float | None) -> None:
        """Close the circuit and fold ``ttft_ms`` into the EWMA."""
        stats = self.stats(route.id)
        stats.consecutive_failures = 0
        stats.circuit_open_until = 0.0
        if ttft_ms is not None:
            prev = stats.ewma_ttft_ms
            stats.ewma_ttft_ms = (
                ttft_ms if prev is None else prev + self._alpha * (ttft_ms - prev)
            )

    def record_failure(self, route: EndpointRoute, *, open_circuit: bool = True) -> float:
        """Count a failure; open the circuit (passive health). Returns open-until."""
        stats = self.stats(route.id)
        stats.consecutive_failures += 1
        if open_circuit:
            wait = min(
                self._circuit_open_s * 2 ** (stats.consecutive_failures - 1), self._circuit_max_s
            )
            stats.circuit_open_until = self._clock.now() + wait
        return stats.circuit_open_until


def endpoint_from_row(row: dict) -> Endpoint:
    """An :class:`Endpoint` from an ``endpoints`` table row."""
    return Endpoint(
        id=row["id"],
        model=row["model"],
        url=row["url"],
        supplier=row["supplier"],
        owner=row["owner"],
        healthy=bool(row["healthy"]),
        deployment=row["deployment"],
        lease_id=row["lease_id"],
        sku=row["sku"],
        region=row["region"] or "",
        cost_per_hour=from_micros(int(row["cost_per_hour_micros"] or 0)),
        capacity_tok_s=float(row["capacity_tok_s"] or 0.0),
        max_concurrency=int(row["max_concurrency"] or 64),
        context_length=int(row["context_length"] or 0),
        created_at=float(row["created_at"]),
    )


class RoutingRefresh:
    """Control loop: reload live endpoints (``removed_at`` NULL) into the table."""

    name = "gateway.routing"

    def __init__(
        self, engine: AsyncEngine, table: RoutingTable, clock: Clock, interval_s: float = 0.5
    ) -> None:
        self._engine = engine
        self._table = table
        self._clock = clock
        self.interval_s = interval_s
        self.refreshed_at: float | None = None

    async def step(self, now: float) -> None:
        """Read the endpoints table once and swap the snapshot."""
        query = select(endpoints_table).where(endpoints_table.c.removed_at.is_(None))
        async with self._engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
        self._table.swap(endpoint_from_row(r) for r in rows)
        self.refreshed_at = now
