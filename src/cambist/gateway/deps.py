"""What the gateway is assembled from: settings and injected dependencies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from cambist.domain.billing import Authenticator, PriceList, Wallet
from cambist.domain.clock import Clock
from cambist.gateway.errors import log_unexpected
from cambist.gateway.limits import RateLimiter
from cambist.gateway.pool import UpstreamPool
from cambist.gateway.routing import RoutingTable
from cambist.gateway.telemetry import GatewayMetrics
from cambist.ledger.budgets import KeyBudgets
from cambist.ledger.plans import PlanBook

__all__ = ["EventSink", "GatewayDeps", "GatewaySettings"]

log = logging.getLogger("cambist.gateway")

EventSink = Callable[[dict[str, Any]], None]
"""Receives routing decisions as event-log rows ``{"ts", "kind", "subject", "data"}``."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Gateway limits and timeouts, read once where the app is assembled."""

    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = 30.0
    """Longest a client may take to send its whole request body (slow clients
    would otherwise hold a connection and a request slot indefinitely)."""
    default_max_tokens: int = 1024
    max_tokens_cap: int = 131072
    upstream_connect_timeout_s: float = 5.0
    upstream_read_timeout_s: float = 300.0
    """Longest wait for an upstream's first byte (and any read of a complete body)."""
    stream_idle_timeout_s: float = 300.0
    """Longest gap between two reads of a stream once it has started (reasoning
    models can think for minutes between events); an upstream's own
    ``EndpointRoute.stream_idle_timeout_s`` wins."""
    max_attempts: int = 3
    """Upstream attempts per model (each model of a ``models`` list gets its own)."""
    retry_budget_s: float = 30.0
    """No new upstream attempt starts this long after the request arrived."""
    declared_price_markup: Decimal = Decimal("0.30")
    """A model with no entry in the price list, served by external or local
    endpoints, is priced at their declared per-token price x (1 + this)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.retry_budget_s <= 0 or self.declared_price_markup < 0:
            raise ValueError("retry_budget_s must be positive and the markup non-negative")
        if self.stream_idle_timeout_s <= 0:
            raise ValueError("stream_idle_timeout_s must be positive")
        if self.max_body_bytes < 1 or self.default_max_tokens < 1 or self.max_tokens_cap < 1:
            raise ValueError("body and token limits must be positive")

    def timeout(self) -> httpx.Timeout:
        """The per-request upstream timeout."""
        return httpx.Timeout(
            connect=self.upstream_connect_timeout_s,
            read=self.upstream_read_timeout_s,
            write=self.upstream_read_timeout_s,
            pool=self.upstream_connect_timeout_s,
        )


@dataclass(frozen=True, slots=True)
class GatewayDeps:
    """Everything the gateway needs, injected. ``http`` is a shared
    ``httpx.AsyncClient`` for work off the request path (probes), owned and
    closed by the caller; ``upstream`` is the connection pool requests are
    forwarded over (the caller should ``await deps.upstream.aclose()`` when it
    stops; it also closes itself when its event loop shuts down); ``metrics``
    collects latency histograms and counters for ``/metrics``.
    ``plans`` says which plan (rate limits) each tenant is on; the counters
    live in the gateway service, per process."""

    authenticator: Authenticator
    prices: PriceList
    wallet: Wallet
    routes: RoutingTable
    clock: Clock
    http: httpx.AsyncClient
    settings: GatewaySettings = field(default_factory=GatewaySettings)
    plans: PlanBook = field(default_factory=PlanBook)
    on_event: EventSink | None = None
    upstream: UpstreamPool = field(default_factory=UpstreamPool)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    limiter: RateLimiter | None = None
    """The rate limiter to use (shared through Redis when several processes
    serve); ``None``: per-process counters over ``plans``."""
    budgets: KeyBudgets | None = None
    """Per-key spend budgets checked before forwarding; ``None``: none enforced."""

    def emit(self, row: dict[str, Any]) -> None:
        """Hand an event to ``on_event``; a failing sink never fails a request."""
        if self.on_event is None:
            return
        try:
            self.on_event(row)
        except Exception as exc:
            log_unexpected(log, exc, "the gateway event sink failed")
