"""The routing table: which endpoint serves the next request for a model.

The table keeps an immutable snapshot ``model -> tuple[EndpointRoute, ...]``
that :meth:`RoutingTable.swap` replaces in one assignment (readers never see a
half-built table), and live per-endpoint statistics (in flight, EWMA time to
first token, consecutive failures, circuit-open-until, Retry-After) in a
separate mutable map keyed by endpoint id, which survives swaps. Everything a
request's choice needs about an endpoint (base URL, prices, names, the upstream
``Authorization`` header, quantization) is computed once per swap.
``RoutingRefresh`` (in :mod:`cambist.gateway.registry`) is the control loop
that rebuilds the snapshot from the ``endpoints`` table. The scoring and what
the routing policy changes are described in :mod:`cambist.gateway.policy`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from cambist.domain.clock import Clock
from cambist.domain.endpoint import Endpoint, PrivacyTier
from cambist.domain.models import find_model
from cambist.gateway.policy import DEFAULT_POLICY, RoutingPolicy
from cambist.gateway.stats import EndpointStats

__all__ = [
    "QUEUE_PENALTY_PER_MTOK",
    "SLO_PENALTY_PER_MTOK",
    "Credentials",
    "EndpointRoute",
    "EndpointStats",
    "RoutingTable",
]

log = logging.getLogger("cambist.gateway")

QUEUE_PENALTY_PER_MTOK = 1000.0
"""Dollars per Mtok added per request expected to wait (queued beyond
``max_concurrency`` here, or in the engine's own queue): larger than any real
marginal cost, so a saturated endpoint ranks after every one with a free slot."""

SLO_PENALTY_PER_MTOK = 100_000.0
"""Added when an endpoint's TTFT p90 misses the table's ``ttft_slo_ms``: it then
ranks after every endpoint meeting the SLO, however loaded (a request is better
queued briefly on a fast endpoint than served at once by one that is too slow)."""

Credentials = Callable[[str], str | None]
"""Looks up an API key by the name of the environment variable that holds it."""

_MTOK = Decimal(1_000_000)


def _avg_cost_per_mtok(endpoint: Endpoint) -> float:
    if endpoint.kind != "deployment":
        prices = endpoint.declared_prices
        return float(prices[1]) if prices is not None else math.inf
    if endpoint.cost_per_hour <= 0:
        return 0.0
    if endpoint.capacity_tok_s <= 0:
        return math.inf  # costs money, throughput unknown: last resort once busy
    return float(endpoint.cost_per_hour) / (endpoint.capacity_tok_s * 3600 / 1e6)


def _base_url(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def _quantization(endpoint: Endpoint) -> str:
    if endpoint.quantization:
        return endpoint.quantization.lower()
    spec = find_model(endpoint.model) if endpoint.kind == "deployment" else None
    return spec.precision if spec is not None else "unknown"


@dataclass(frozen=True, slots=True)
class EndpointRoute:
    """One routable endpoint with what routing precomputes about it.

    ``base_url`` always ends in ``/v1`` (an endpoint URL may be given with or
    without it); ``order`` is the stable tie-break rank within its model;
    ``avg_cost_per_mtok`` is the lease's cost at full batch (own deployments)
    or the declared output price (external, local). ``headers`` carries the
    upstream's ``Authorization`` (never shown in ``repr``); ``usable`` is false
    when the endpoint needs an API key that is not available; ``tiers`` are
    the privacy tiers it offers (``Endpoint.privacy_tiers``);
    ``stream_idle_timeout_s`` the longest gap allowed between two reads of a
    started stream from this upstream (``None``: the gateway's default).
    """

    endpoint: Endpoint
    base_url: str
    avg_cost_per_mtok: float
    order: int
    names: frozenset[str] = frozenset()
    quantization: str = "unknown"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    usable: bool = True
    tiers: frozenset[PrivacyTier] = frozenset({"standard"})
    stream_idle_timeout_s: float | None = None

    @property
    def id(self) -> str:
        return self.endpoint.id

    @property
    def supplier(self) -> str:
        return self.endpoint.supplier

    @property
    def per_token(self) -> bool:
        """Paid per token (external, local) rather than through a lease."""
        return self.endpoint.kind != "deployment"

    def url(self, path: str) -> str:
        """The upstream URL of an API path such as ``/chat/completions``."""
        return f"{self.base_url}{path}"

    def compute_cost(self, completion_tokens: int, prompt_tokens: int = 0) -> Decimal:
        """What serving the tokens costs: the declared per-token prices for
        external and local endpoints; for own deployments the lease cost allocated
        to ``completion_tokens`` (0 when capacity is unknown)."""
        ep = self.endpoint
        if self.per_token:
            prices = ep.declared_prices
            if prices is None:
                return Decimal(0)
            return (prices[0] * prompt_tokens + prices[1] * completion_tokens) / _MTOK
        if ep.capacity_tok_s <= 0 or completion_tokens <= 0:
            return Decimal(0)
        return ep.cost_per_hour * completion_tokens / Decimal(repr(ep.capacity_tok_s)) / 3600

    def admitted_by(self, policy: RoutingPolicy, parameters: frozenset[str]) -> bool:
        """Whether ``policy`` lets a request with ``parameters`` use this endpoint."""
        ep = self.endpoint
        if policy.privacy not in self.tiers:
            return False
        if policy.only is not None and not (self.names & policy.only):
            return False
        if self.names & policy.ignore:
            return False
        if policy.zdr and not ep.retains_nothing:
            return False
        if policy.data_collection == "deny" and ep.collects_data:
            return False
        if policy.quantizations is not None and self.quantization not in policy.quantizations:
            return False
        return not (policy.require_parameters and not parameters <= ep.parameters)

    def order_rank(self, policy: RoutingPolicy) -> int:
        """Position of the first ``order`` entry naming this endpoint (``len`` if none)."""
        for i, name in enumerate(policy.order):
            if name in self.names:
                return i
        return len(policy.order)


class RoutingTable:
    """Routes per model, swapped atomically, plus live endpoint statistics.

    ``circuit_open_s`` is how long a failing endpoint is skipped after its first
    failure; it doubles with each consecutive failure up to ``circuit_max_s``.
    ``credentials`` looks up upstream API keys by environment variable name
    (once per swap); an endpoint whose key is missing is not routed to.
    ``stream_idle_timeouts`` maps a supplier (an upstream's name) or an
    endpoint id to the longest gap allowed between two reads of its streams.
    ``ttft_slo_ms``, when set, is the TTFT p90 an endpoint must keep to rank
    among the preferred ones (see :meth:`marginal_cost`). The circuit breaker's
    states are described in :mod:`cambist.gateway.stats`.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        circuit_open_s: float = 5.0,
        circuit_max_s: float = 30.0,
        ewma_alpha: float = 0.2,
        credentials: Credentials | None = None,
        stream_idle_timeouts: Mapping[str, float] | None = None,
        ttft_slo_ms: float | None = None,
    ) -> None:
        self._clock = clock
        self._circuit_open_s = circuit_open_s
        self._circuit_max_s = circuit_max_s
        self._alpha = ewma_alpha
        self._credentials = credentials
        self._idle_timeouts = dict(stream_idle_timeouts or {})
        self._ttft_slo_ms = ttft_slo_ms
        self._snapshot: dict[str, tuple[EndpointRoute, ...]] = {}
        self._healthy: dict[tuple[str, str | None], tuple[EndpointRoute, ...]] = {}
        self._stats: dict[str, EndpointStats] = {}
        self._missing_keys: frozenset[str] = frozenset()
        self.generation = 0
        """Bumped by every :meth:`swap` (lets readers cache what they derive)."""

    def _route(self, ep: Endpoint, order: int) -> EndpointRoute:
        headers: dict[str, str] = {}
        usable = True
        if ep.api_key_env:
            key = self._credentials(ep.api_key_env) if self._credentials else None
            if key:
                headers["authorization"] = f"Bearer {key}"
            else:
                usable = False
        return EndpointRoute(
            ep, _base_url(ep.url), _avg_cost_per_mtok(ep), order,
            frozenset({ep.id.lower(), ep.supplier.lower()}), _quantization(ep), headers, usable,
            ep.privacy_tiers,
            self._idle_timeouts.get(ep.id, self._idle_timeouts.get(ep.supplier)))

    def swap(self, endpoints: Iterable[Endpoint]) -> None:
        """Replace the snapshot with ``endpoints`` (stats of kept endpoints survive)."""
        by_model: dict[str, list[Endpoint]] = {}
        for ep in endpoints:
            by_model.setdefault(ep.model, []).append(ep)
        snapshot: dict[str, tuple[EndpointRoute, ...]] = {}
        for model, eps in by_model.items():
            ranked = sorted(eps, key=lambda e: (_avg_cost_per_mtok(e), e.id))
            snapshot[model] = tuple(self._route(e, i) for i, e in enumerate(ranked))
        ids = {r.id for routes in snapshot.values() for r in routes}
        missing = frozenset(r.endpoint.api_key_env or "" for routes in snapshot.values()
                            for r in routes if not r.usable)
        if missing - self._missing_keys:
            log.warning("upstream API key variables not set (their endpoints are skipped): %s",
                        ", ".join(sorted(missing - self._missing_keys)))
        self._missing_keys = missing
        self._stats = {i: s for i, s in self._stats.items() if i in ids or s.in_flight > 0}
        self._snapshot = snapshot
        self._healthy = {}
        self.generation += 1

    def models(self) -> list[str]:
        """Every model in the snapshot, healthy or not."""
        return sorted(self._snapshot)

    def knows(self, model: str) -> bool:
        """Whether any endpoint (healthy or not) serves ``model``."""
        return model in self._snapshot

    def routes(self, model: str) -> tuple[EndpointRoute, ...]:
        """All routes of ``model``, cheapest average cost first."""
        return self._snapshot.get(model, ())

    def visible(self, model: str, tenant: str | None = None) -> tuple[EndpointRoute, ...]:
        """Routes of ``model`` that ``tenant`` may use, healthy or not: the
        platform's shared pool (owner ``None``) and the tenant's own dedicated
        endpoints, never another tenant's."""
        return tuple(r for r in self.routes(model)
                     if r.endpoint.owner is None or r.endpoint.owner == tenant)

    def healthy(self, model: str, tenant: str | None = None) -> tuple[EndpointRoute, ...]:
        """Routes of ``model`` marked healthy (and usable) that ``tenant`` may use.
        Fixed between swaps, so kept per (model, tenant) until the next one."""
        key = (model, tenant)
        found = self._healthy.get(key)
        if found is None:
            if len(self._healthy) > 10_000:  # many tenants: bound the memo
                self._healthy.clear()
            found = self._healthy[key] = tuple(
                r for r in self.visible(model, tenant) if r.endpoint.healthy and r.usable)
        return found

    def stats(self, endpoint_id: str) -> EndpointStats:
        """The live statistics of an endpoint (created on first use)."""
        stats = self._stats.get(endpoint_id)
        if stats is None:
            stats = self._stats[endpoint_id] = EndpointStats()
        return stats

    def marginal_cost(self, route: EndpointRoute) -> float:
        """Expected marginal cost, $ per Mtok, of sending one more request to ``route``.

        Own deployments: ``avg = cost_per_hour / (capacity_tok_s * 3600 / 1e6)``
        is what the endpoint's capacity costs per Mtok at full batch; ``load =
        in_flight / max_concurrency``. The marginal cost is ``avg * load**2``:
        near zero on idle leased capacity (its cost is sunk), rising as it
        saturates, so idle replicas attract load. External and local endpoints
        cost their declared output price per Mtok whatever the load.

        Expected queueing is priced on top: each request that would wait adds
        :data:`QUEUE_PENALTY_PER_MTOK`, counting those queued here beyond
        ``max_concurrency`` (``in_flight - max_concurrency + 1`` when at or over
        the limit) and those the engine reports waiting in its own queue (other
        gateways' included, from its ``/metrics``). With a ``ttft_slo_ms``, an
        endpoint whose TTFT p90 (engine-reported, else observed here) exceeds it
        adds :data:`SLO_PENALTY_PER_MTOK`.
        """
        stats = self.stats(route.id)
        limit = max(route.endpoint.max_concurrency, 1)
        load = stats.in_flight / limit
        if route.per_token:
            cost = route.avg_cost_per_mtok
        else:
            cost = 0.0 if load == 0 else route.avg_cost_per_mtok * load * load
        waiting = max(stats.in_flight - limit + 1, 0) + stats.queue_depth
        if waiting:
            cost += QUEUE_PENALTY_PER_MTOK * waiting
        if self._ttft_slo_ms is not None:
            ttft = stats.ttft_percentiles()
            if ttft is not None and ttft[1] > self._ttft_slo_ms:
                cost += SLO_PENALTY_PER_MTOK
        return cost

    def _sort_key(self, route: EndpointRoute, policy: RoutingPolicy) -> tuple[float, ...]:
        stats = self.stats(route.id)
        default = (self.marginal_cost(route), float(stats.in_flight), float(route.order))
        if policy.sort == "price":
            return (route.avg_cost_per_mtok, *default)
        if policy.sort == "throughput":
            share = route.endpoint.capacity_tok_s / (stats.in_flight + 1)
            return (-share, *default)
        if policy.sort == "latency":
            # the engine's p50 covers every gateway's traffic; else what we saw
            engine = stats.engine_ttft_ms
            ttft = engine[0] if engine is not None else stats.ewma_ttft_ms
            return (math.inf if ttft is None else ttft, *default)
        return default

    def candidates(
        self, model: str, tenant: str | None = None, policy: RoutingPolicy = DEFAULT_POLICY,
        parameters: frozenset[str] = frozenset(),
    ) -> list[EndpointRoute]:
        """Healthy routes ``tenant`` may use that ``policy`` admits (any circuit state)."""
        out = [r for r in self.healthy(model, tenant) if r.admitted_by(policy, parameters)]
        if policy.order and not policy.allow_fallbacks:
            out = [r for r in out if r.order_rank(policy) < len(policy.order)]
        return out

    def choose(self, model: str, exclude: set[str] | frozenset[str] = frozenset(),
               tenant: str | None = None, policy: RoutingPolicy = DEFAULT_POLICY,
               parameters: frozenset[str] = frozenset()) -> EndpointRoute | None:
        """The best route for ``model`` not in ``exclude``, or ``None``.

        Candidates are :meth:`candidates` whose circuit is closed; endpoints
        named in ``policy.order`` come first in that order, then the rest by
        the policy's sort (default: :meth:`marginal_cost`), then fewer requests
        in flight, then the stable order (cheaper average cost, then id).
        Routable circuits are closed ones and half-open ones without a trial in
        flight. If no candidate is routable, the one closing soonest is probed
        rather than failing the model outright, except those an upstream told
        to wait (``Retry-After``), which are skipped until then.
        """
        now = self._clock.now()
        candidates = [r for r in self.candidates(model, tenant, policy, parameters)
                      if r.id not in exclude and self.stats(r.id).retry_after_until <= now]
        if not candidates:
            return None
        closed = [r for r in candidates if self.stats(r.id).routable(now)]
        if not closed:
            return min(candidates, key=lambda r: (self.stats(r.id).circuit_open_until, r.order))
        if policy.order:
            return min(closed, key=lambda r: (r.order_rank(policy), *self._sort_key(r, policy)))
        return min(closed, key=lambda r: self._sort_key(r, policy))

    def acquire(self, route: EndpointRoute) -> None:
        """Count a request in flight on ``route``; on a half-open circuit it is
        the one trial request."""
        stats = self.stats(route.id)
        stats.in_flight += 1
        if stats.opened and stats.circuit_open_until <= self._clock.now():
            stats.probing = True

    def release(self, route: EndpointRoute) -> None:
        """A request on ``route`` finished (successfully or not)."""
        stats = self.stats(route.id)
        stats.in_flight = max(stats.in_flight - 1, 0)
        if stats.in_flight == 0:
            stats.probing = False  # a trial that ended with no verdict (cancelled)

    def observe_engine(self, endpoint_id: str, queue_depth: int,
                       ttft_ms: tuple[float, float] | None = None) -> None:
        """What an engine reports about itself: requests waiting in its queue
        and, if it exports them, its TTFT (p50, p90) in ms."""
        stats = self.stats(endpoint_id)
        stats.queue_depth = max(int(queue_depth), 0)
        stats.engine_ttft_ms = ttft_ms

    def record_success(self, route: EndpointRoute, ttft_ms: float | None) -> None:
        """Close the circuit and fold ``ttft_ms`` into the EWMA and the window."""
        stats = self.stats(route.id)
        stats.consecutive_failures = 0
        stats.circuit_open_until = 0.0
        stats.opened = stats.probing = False
        if ttft_ms is not None:
            stats.observe_ttft(ttft_ms)
            prev = stats.ewma_ttft_ms
            stats.ewma_ttft_ms = (
                ttft_ms if prev is None else prev + self._alpha * (ttft_ms - prev)
            )

    def record_failure(self, route: EndpointRoute, *, open_circuit: bool = True,
                       retry_after_s: float | None = None) -> float:
        """Count a failure; open the circuit (passive health), or reopen it after
        a failed half-open trial, for twice as long as the last time. An
        upstream's ``Retry-After`` keeps the endpoint out of routing until then.
        Returns the time the circuit opens until."""
        stats = self.stats(route.id)
        stats.consecutive_failures += 1
        stats.probing = False
        now = self._clock.now()
        if open_circuit:
            stats.opened = True
            wait = min(
                self._circuit_open_s * 2 ** (stats.consecutive_failures - 1), self._circuit_max_s
            )
            stats.circuit_open_until = now + wait
        if retry_after_s is not None and retry_after_s > 0:
            stats.opened = True
            stats.retry_after_until = now + retry_after_s
            stats.circuit_open_until = max(stats.circuit_open_until, stats.retry_after_until)
        return stats.circuit_open_until
