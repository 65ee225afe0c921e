"""The deployments page: replicas with their supplier, SKU, health, utilization,
$/h and $/Mtok; tokens served over time; recent moves (deploy steps and lease
transitions). An admin sees every deployment, a tenant key only its own."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cambist.analytics.queries import load_snapshot
from cambist.analytics.report import utilization_report
from cambist.analytics.window import Window
from cambist.api.context import ControlPlane
from cambist.domain.deployment import Deployment
from cambist.domain.events import EventKind
from cambist.domain.lease import Lease
from cambist.domain.models import MODEL_CATALOG
from cambist.web.blocks import (
    chart,
    clock,
    filter_select,
    money,
    pct,
    series,
    stat,
    table,
    window_filter,
    window_seconds,
)
from cambist.web.queries import bucketize, event_data, requests_in_window

__all__ = ["deployments_data"]

_BUCKETS = 60
_EVENTS = 40
_COLORS = ("#2563eb", "#16a34a", "#dc2626", "#7c3aed", "#ea580c", "#0891b2", "#be185d")


def _per_mtok(cp: ControlPlane, d: Deployment, lease: Lease | None) -> Decimal | None:
    """What the replica's lease costs per million output tokens at full batch."""
    model = MODEL_CATALOG.get(d.model)
    if lease is None or not lease.sku or model is None:
        return None
    est = cp.perf.estimate(model, lease.sku, lease.gpu_count)
    return est.cost_per_mtok(lease.price_per_hour) if est.fits else None


def _detail(data: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in data.items() if k != "step" and v not in (None, "")]
    return ", ".join(parts)[:160]


async def _moves(cp: ControlPlane, names: set[str], lease_ids: set[str],
                 since: float) -> list[list[Any]]:
    """The newest deploy steps of ``names`` and transitions of ``lease_ids``."""
    steps = await cp.events.read(kind=EventKind.DEPLOY_STEP, since=since, limit=2000,
                                 latest=True)
    leases = await cp.events.read(kind=EventKind.LEASE, since=since, limit=2000, latest=True)
    rows = [(float(e["ts"]), e["subject"], str(event_data(e).get("step", "")),
             _detail(event_data(e))) for e in steps if e["subject"] in names]
    rows += [(float(e["ts"]), e["subject"], f"lease {event_data(e).get('state', '')}",
              _detail({k: v for k, v in event_data(e).items() if k != "state"}))
             for e in leases if e["subject"] in lease_ids]
    rows.sort(key=lambda r: -r[0])
    return [[clock(t), who, what, detail] for t, who, what, detail in rows[:_EVENTS]]


@dataclass
class _Fleet:
    """The visible deployments' rows and totals, filled by :func:`_fleet`."""

    replica_rows: list[list[Any]] = field(default_factory=list)
    deployment_rows: list[list[Any]] = field(default_factory=list)
    cost_per_hour: Decimal = Decimal(0)
    healthy: int = 0
    lease_ids: set[str] = field(default_factory=set)


async def _fleet(cp: ControlPlane, deps: list[Deployment], window: Window,
                 tenant: str | None) -> _Fleet:
    leases = {x.id: x for x in await cp.records.leases()}
    eps = {e.id: e for e in await cp.records.endpoints(include_removed=True)}
    snap = await load_snapshot(cp.db, window)
    util_ep = {r["key"]: r for r in utilization_report(snap, window, "endpoint", tenant)["data"]}
    util_dep = {r["key"]: r for r in
                utilization_report(snap, window, "deployment", tenant)["data"]}
    out = _Fleet()
    for d in deps:
        healthy, cost = 0, Decimal(0)
        for r in await cp.records.replicas(d.name):
            lease = leases.get(r.lease_id or "")
            ep = eps.get(r.endpoint_id or "")
            if lease is not None:
                out.lease_ids.add(lease.id)
                cost += lease.price_per_hour if lease.ended_at is None else Decimal(0)
            healthy += str(r.state) == "healthy"
            u = util_ep.get(r.endpoint_id or "", {})
            out.replica_rows.append([
                d.name, d.model, r.id, str(r.state), lease.supplier if lease else None,
                lease.sku if lease else None, lease.region if lease else None,
                lease.gpu_count if lease else None,
                ("healthy" if ep.healthy else "unhealthy") if ep else "no endpoint",
                pct(u.get("utilization")), u.get("busy_tokens", 0),
                money(lease.price_per_hour) if lease else None,
                money(_per_mtok(cp, d, lease))])
        out.cost_per_hour += cost
        out.healthy += healthy
        du = util_dep.get(d.name, {})
        out.deployment_rows.append([
            d.name, d.model, d.owner or "platform", str(d.state), f"{healthy}/{d.replicas}",
            money(cost), pct(du.get("utilization")), du.get("busy_tokens", 0),
            clock(d.created_at)])
    return out


async def _tokens_chart(cp: ControlPlane, names: set[str], window: Window, wname: str,
                        tenant: str | None) -> tuple[dict[str, Any], int]:
    """Output tokens per second per deployment, from the metered requests it
    served; and the total output tokens."""
    reqs, _ = await requests_in_window(cp.db, window.since, window.until, tenant)
    ep_dep = {e.id: str(e.deployment) for e in await cp.records.endpoints(include_removed=True)
              if e.deployment in names}
    served = [r for r in reqs if r.endpoint_id in ep_dep]
    starts, groups = bucketize(served, lambda r: r.created_at, window.since, window.until,
                               _BUCKETS)
    width = window.seconds / _BUCKETS
    per: dict[str, list[float]] = defaultdict(lambda: [0.0] * _BUCKETS)
    for i, g in enumerate(groups):
        for req in g:
            per[ep_dep[req.endpoint_id or ""]][i] += req.completion_tokens / width
    lines = [series(n, per[n], color=_COLORS[i % len(_COLORS)], unit="tok/s")
             for i, n in enumerate(sorted(names))]
    return chart("Output tokens/s by deployment", starts, lines, y_label="tok/s",
                 note=f"{int(width)} s buckets over the last {wname}"), \
        sum(r.completion_tokens for r in served)


async def deployments_data(cp: ControlPlane, tenant: str | None,
                           q: Mapping[str, str]) -> dict[str, Any]:
    """The deployments page's data; ``tenant`` ``None`` is the admin's view."""
    now = cp.clock.now()
    wname, wsec = window_seconds(q.get("window"))
    show = q.get("state") or ""
    window = Window(now - wsec, now)
    deps = [d for d in await cp.records.deployments()
            if (tenant is None or d.owner == tenant)
            and (show == "all" or str(d.state) != "stopped")]
    names = {d.name for d in deps}
    fleet = await _fleet(cp, deps, window, tenant)
    tokens, total = await _tokens_chart(cp, names, window, wname, tenant)
    return {
        "filters": [window_filter(wname),
                    filter_select("state", "Show", [("", "active"), ("all", "all, with stopped")],
                                  show)],
        "stats": [
            stat("deployments", "Deployments", str(len(deps))),
            stat("replicas", "Healthy replicas",
                 f"{fleet.healthy}/{sum(d.replicas for d in deps)}"),
            stat("cost", "Lease cost per hour", money(fleet.cost_per_hour, 2)),
            stat("tokens", f"Output tokens ({wname})", f"{total:,}"),
        ],
        "charts": {"tokens": tokens},
        "tables": {
            "deployments": table("Deployments", ["name", "model", "owner", "state", "healthy",
                                                 "$/h", "utilization", "tokens", "created"],
                                 fleet.deployment_rows),
            "replicas": table("Replicas", ["deployment", "model", "replica", "state",
                                           "supplier", "SKU", "region", "GPUs", "health",
                                           "utilization", "tokens", "$/h", "$/Mtok"],
                              fleet.replica_rows,
                              f"utilization: output tokens over full-batch capacity, "
                              f"last {wname}"),
            "moves": table("Recent moves", ["time", "deployment / lease", "step", "detail"],
                           await _moves(cp, names, fleet.lease_ids, now - 86400.0)),
        },
    }
