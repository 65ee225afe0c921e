"""The analytics reports: pure assembly of utilization and margins over a
:class:`Snapshot` of rows, scoped to the platform (admin) or one tenant."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from cambist.analytics.margins import (
    GROUPINGS,
    allocate_idle,
    group_key,
    lease_cost,
    margin_rows,
    margin_total,
)
from cambist.analytics.rows import EndpointRow, LeaseRow, UsageRow
from cambist.analytics.utilization import (
    deployment_utilization,
    endpoint_utilization,
    platform_utilization,
    tenant_utilization,
)
from cambist.analytics.window import Window
from cambist.domain.errors import InvalidRequest

__all__ = [
    "UTILIZATION_GROUPINGS",
    "Snapshot",
    "margin_report",
    "summary_report",
    "utilization_report",
]

UTILIZATION_GROUPINGS = ("endpoint", "deployment", "tenant")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rows of one window: its usage, every endpoint, the leases that ran in it."""

    usage: tuple[UsageRow, ...]
    endpoints: tuple[EndpointRow, ...]
    leases: tuple[LeaseRow, ...]


@dataclass(frozen=True, slots=True)
class _Costs:
    lease: Decimal
    idle: Decimal
    unallocated: Decimal
    shares: list[Decimal]


def _costs(snap: Snapshot, window: Window) -> _Costs:
    leased = lease_cost(snap.leases, window)
    busy = sum((u.compute_cost for u in snap.usage if u.pooled), Decimal(0))
    idle = leased - busy
    shares = allocate_idle(snap.usage, idle)
    unallocated = idle - sum(shares, Decimal(0))
    return _Costs(leased, idle, unallocated, shares)


def _scoped(snap: Snapshot, shares: list[Decimal], tenant: str | None) \
        -> tuple[list[UsageRow], list[Decimal]]:
    pairs = [(u, s) for u, s in zip(snap.usage, shares, strict=True)
             if tenant is None or u.tenant_id == tenant]
    return [u for u, _ in pairs], [s for _, s in pairs]


def _window(window: Window) -> dict[str, float]:
    return {"since": window.since, "until": window.until}


def margin_report(snap: Snapshot, window: Window, by: str,
                  tenant: str | None = None) -> dict[str, Any]:
    """Margins grouped ``by`` model, tenant, supplier or endpoint, with totals."""
    if by not in GROUPINGS:
        raise InvalidRequest(f"by must be one of {', '.join(GROUPINGS)}", param="by")
    costs = _costs(snap, window)
    usage, shares = _scoped(snap, costs.shares, tenant)
    total = margin_total(usage, shares, costs.unallocated if tenant is None else Decimal(0))
    return {"window": _window(window), "tenant": tenant, "by": by,
            "data": [asdict(r) for r in margin_rows(usage, shares, group_key(by))],
            "total": asdict(total)}


def _visible_endpoints(snap: Snapshot, window: Window, tenant: str | None) -> list[EndpointRow]:
    return [e for e in snap.endpoints
            if (tenant is None or e.owner == tenant)
            and e.created_at < window.until
            and (e.removed_at is None or e.removed_at > window.since)]


def utilization_report(snap: Snapshot, window: Window, by: str,
                       tenant: str | None = None) -> dict[str, Any]:
    """Utilization per endpoint or deployment (a tenant sees only its own
    dedicated ones) or per tenant (mean over peak rate)."""
    if by not in UTILIZATION_GROUPINGS:
        raise InvalidRequest(f"by must be one of {', '.join(UTILIZATION_GROUPINGS)}",
                             param="by")
    rows: list[Any]
    if by == "tenant":
        rows = [t for t in tenant_utilization(snap.usage, window)
                if tenant is None or t.tenant_id == tenant]
    else:
        endpoints = _visible_endpoints(snap, window, tenant)
        fn = endpoint_utilization if by == "endpoint" else deployment_utilization
        rows = fn(endpoints, snap.usage, window)
    platform = None if tenant is not None else \
        asdict(platform_utilization(snap.endpoints, snap.usage, window))
    return {"window": _window(window), "tenant": tenant, "by": by,
            "data": [asdict(r) for r in rows], "platform": platform}


def summary_report(snap: Snapshot, window: Window, tenant: str | None = None) -> dict[str, Any]:
    """Totals, platform utilization and lease/idle cost (the last two only for
    the platform view), and per-tenant utilization."""
    costs = _costs(snap, window)
    usage, shares = _scoped(snap, costs.shares, tenant)
    total = margin_total(usage, shares, costs.unallocated if tenant is None else Decimal(0))
    tenants = [asdict(t) for t in tenant_utilization(snap.usage, window)
               if tenant is None or t.tenant_id == tenant]
    out: dict[str, Any] = {"window": _window(window), "tenant": tenant, "total": asdict(total),
                           "tenants": tenants}
    if tenant is None:
        out["platform"] = {
            **asdict(platform_utilization(snap.endpoints, snap.usage, window)),
            "lease_cost": costs.lease, "idle_cost": costs.idle,
            "deployments": [asdict(d) for d in deployment_utilization(
                _visible_endpoints(snap, window, None), snap.usage, window)]}
    return out
