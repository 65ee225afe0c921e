"""Utilization: busy capacity over available capacity, pure functions over rows.

Busy capacity counts completion tokens (reasoning included) only: an endpoint's
``capacity_tok_s`` is its full-batch *decode* throughput, and the gateway
attributes compute cost to completion tokens the same way, so prompt tokens
(prefill, far cheaper per token and overlapped with decoding by continuous
batching) would be double-counted against a decode-rate capacity.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cambist.analytics.rows import EndpointRow, UsageRow
from cambist.analytics.window import Window, overlap_seconds

__all__ = [
    "PEAK_BUCKET_S",
    "TenantUtilization",
    "Utilization",
    "deployment_utilization",
    "endpoint_utilization",
    "platform_utilization",
    "tenant_utilization",
]

PEAK_BUCKET_S = 300.0


@dataclass(frozen=True, slots=True)
class Utilization:
    """``busy_tokens / capacity_tokens`` of one endpoint, deployment or the
    platform (``utilization`` ``None`` when there was no known capacity)."""

    key: str
    busy_tokens: int
    capacity_tokens: float
    utilization: float | None


@dataclass(frozen=True, slots=True)
class TenantUtilization:
    """A tenant's mean token rate over its peak 5-minute rate: the utilization
    it would get from dedicated GPUs sized for its own peak."""

    tenant_id: str
    tokens: int
    mean_tok_s: float
    peak_tok_s: float
    dedicated_utilization: float | None


def _ratio(busy: float, capacity: float) -> float | None:
    return busy / capacity if capacity > 0 else None


def _served(usage: Iterable[UsageRow], window: Window) -> dict[str, int]:
    busy: dict[str, int] = defaultdict(int)
    for u in usage:
        if u.endpoint_id is not None and window.since <= u.created_at < window.until:
            busy[u.endpoint_id] += u.completion_tokens
    return busy


def _capacity(e: EndpointRow, window: Window) -> float:
    return max(0.0, e.capacity_tok_s) * overlap_seconds(e.created_at, e.removed_at, window)


def endpoint_utilization(endpoints: Sequence[EndpointRow], usage: Iterable[UsageRow],
                         window: Window) -> list[Utilization]:
    """Per endpoint: completion tokens served in ``window`` over
    ``capacity_tok_s x`` the seconds it existed in ``window``; busiest first."""
    busy = _served(usage, window)
    out = []
    for e in endpoints:
        cap = _capacity(e, window)
        out.append(Utilization(e.id, busy.get(e.id, 0), cap, _ratio(busy.get(e.id, 0), cap)))
    return sorted(out, key=lambda x: (-(x.utilization or 0.0), x.key))


def deployment_utilization(endpoints: Sequence[EndpointRow], usage: Iterable[UsageRow],
                           window: Window) -> list[Utilization]:
    """Per deployment: the sums of its endpoints' busy and available tokens."""
    per_endpoint = {u.key: u for u in endpoint_utilization(endpoints, usage, window)}
    busy: dict[str, int] = defaultdict(int)
    cap: dict[str, float] = defaultdict(float)
    for e in endpoints:
        if e.deployment is None:
            continue
        busy[e.deployment] += per_endpoint[e.id].busy_tokens
        cap[e.deployment] += per_endpoint[e.id].capacity_tokens
    out = [Utilization(d, busy[d], cap[d], _ratio(busy[d], cap[d])) for d in cap]
    return sorted(out, key=lambda x: (-(x.utilization or 0.0), x.key))


def platform_utilization(endpoints: Sequence[EndpointRow], usage: Iterable[UsageRow],
                         window: Window) -> Utilization:
    """All tokens served by platform deployments (kind ``deployment``, no owner)
    over all their capacity in ``window``."""
    pool = [e for e in endpoints if e.kind == "deployment" and e.owner is None]
    ids = {e.id for e in pool}
    busy = sum(n for ep, n in _served(usage, window).items() if ep in ids)
    cap = sum(_capacity(e, window) for e in pool)
    return Utilization("platform", busy, cap, _ratio(busy, cap))


def _peak_rate(times_tokens: Sequence[tuple[float, int]], window: Window,
               bucket_s: float) -> float:
    """Largest tokens-per-second over buckets aligned on ``window.since``; every
    bucket counts as ``min(bucket_s, window.seconds)`` long (a partial last
    bucket is not inflated by its short length)."""
    buckets: dict[int, int] = defaultdict(int)
    for t, n in times_tokens:
        buckets[int((t - window.since) // bucket_s)] += n
    length = min(bucket_s, window.seconds)
    return max(buckets.values(), default=0) / length


def tenant_utilization(usage: Iterable[UsageRow], window: Window,
                       bucket_s: float = PEAK_BUCKET_S) -> list[TenantUtilization]:
    """Per tenant: mean completion-token rate over ``window`` divided by its peak
    rate over ``bucket_s`` buckets (aligned on ``window.since``), capped at 1;
    largest first. Low values are idle capacity a fleet sized for the tenant's
    own peak would pay for, which pooling tenants on shared endpoints avoids."""
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    per: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for u in usage:
        if window.since <= u.created_at < window.until:
            per[u.tenant_id].append((u.created_at, u.completion_tokens))
    out = []
    for tenant, events in per.items():
        tokens = sum(n for _, n in events)
        mean = tokens / window.seconds
        peak = _peak_rate(events, window, bucket_s)
        out.append(TenantUtilization(tenant, tokens, mean, peak,
                                     min(1.0, mean / peak) if peak > 0 else None))
    return sorted(out, key=lambda x: (-x.tokens, x.tenant_id))
