"""The overview page (``/ui``) and the counts on the landing page (``/``).

An admin sees the exchange at a glance (supply, leases, deployments,
endpoints, traffic, revenue and margin) and its latest events; a tenant key
sees its balance, its traffic and spend, and its own latest requests."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cambist.api.context import ControlPlane
from cambist.domain.events import EventKind
from cambist.domain.money import from_micros
from cambist.domain.offer import OfferQuery
from cambist.web.blocks import (
    chart,
    clock,
    money,
    pct,
    series,
    stat,
    table,
    window_filter,
    window_seconds,
)
from cambist.web.data_money import money_chart, recent_requests, tenant_totals
from cambist.web.queries import Request, bucketize, event_data, requests_in_window

__all__ = ["exchange_counts", "overview_data"]

_BUCKETS = 60
_EVENT_KINDS = (EventKind.DEPLOY_STEP, EventKind.LEASE, EventKind.ENDPOINT,
                EventKind.PRICE_LIST)


async def exchange_counts(cp: ControlPlane) -> dict[str, int]:
    """Platform counts with no tenant data (what ``/`` shows to anyone)."""
    now = cp.clock.now()
    return {
        "suppliers": len(cp.book.suppliers()),
        "offers": len(cp.book.query(OfferQuery(), now)),
        "leases": len(await cp.records.leases(active_only=True)),
        "deployments": sum(1 for d in await cp.records.deployments()
                           if str(d.state) != "stopped"),
        "endpoints": sum(1 for e in await cp.records.endpoints() if e.healthy),
    }


def _rps_chart(reqs: list[Request], since: float, until: float, wname: str) -> dict[str, Any]:
    starts, groups = bucketize(reqs, lambda r: r.created_at, since, until, _BUCKETS)
    width = (until - since) / _BUCKETS
    return chart("Requests per second", starts,
                 [series("requests", [len(g) / width for g in groups], unit="req/s")],
                 y_label="req/s", note=f"{int(width)} s buckets over the last {wname}")


async def _recent_events(cp: ControlPlane, since: float) -> list[list[Any]]:
    rows: list[dict[str, Any]] = []
    for kind in _EVENT_KINDS:
        rows += await cp.events.read(kind=kind, since=since, limit=15, latest=True)
    rows.sort(key=lambda e: -float(e["ts"]))
    out = []
    for e in rows[:15]:
        d = event_data(e)
        what = d.get("step") or d.get("state") or d.get("healthy", "")
        out.append([clock(float(e["ts"])), e["kind"], e["subject"], str(what)])
    return out


async def _admin(cp: ControlPlane, reqs: list[Request], since: float, now: float,
                 wname: str) -> dict[str, Any]:
    counts = await exchange_counts(cp)
    active = await cp.records.leases(active_only=True)
    revenue = from_micros(sum(r.price_micros for r in reqs))
    cost = from_micros(sum(r.compute_cost_micros for r in reqs))
    margin = (revenue - cost) / revenue if revenue else None
    return {
        "stats": [
            stat("suppliers", "Suppliers", str(counts["suppliers"])),
            stat("offers", "Offers listed", str(counts["offers"])),
            stat("leases", "Active leases", str(counts["leases"])),
            stat("lease_cost", "Lease cost per hour",
                 money(sum((x.price_per_hour for x in active), Decimal(0)), 2)),
            stat("deployments", "Deployments", str(counts["deployments"])),
            stat("endpoints", "Healthy endpoints", str(counts["endpoints"])),
            stat("requests", f"Requests ({wname})", f"{len(reqs):,}"),
            stat("revenue", f"Revenue ({wname})", money(revenue)),
            stat("compute_margin", "Compute margin", pct(margin)),
        ],
        "charts": {"rps": _rps_chart(reqs, since, now, wname),
                   "money": money_chart(reqs, since, now, True)},
        "tables": {"events": table("Latest events", ["time", "kind", "subject", "what"],
                                   await _recent_events(cp, now - 86400.0))},
    }


async def _tenant(cp: ControlPlane, tenant: str, reqs: list[Request], since: float,
                  now: float, wname: str) -> dict[str, Any]:
    t = tenant_totals(reqs)
    own = [d for d in await cp.records.deployments()
           if d.owner == tenant and str(d.state) != "stopped"]
    return {
        "stats": [
            stat("balance", "Balance", money(cp.wallet.balance(tenant), 2)),
            stat("available", "Available", money(cp.wallet.available(tenant), 2)),
            stat("requests", f"Requests ({wname})", f"{t['requests']:,}"),
            stat("spend", f"Spend ({wname})", money(t["spend"])),
            stat("tokens", "Output tokens", f"{t['completion']:,}"),
            stat("deployments", "Own deployments", str(len(own))),
        ],
        "charts": {"rps": _rps_chart(reqs, since, now, wname),
                   "money": money_chart(reqs, since, now, False)},
        "tables": {"recent": recent_requests(reqs)},
    }


async def overview_data(cp: ControlPlane, tenant: str | None,
                        q: Mapping[str, str]) -> dict[str, Any]:
    """The overview page's data; ``tenant`` ``None`` is the admin's view."""
    now = cp.clock.now()
    wname, wsec = window_seconds(q.get("window"))
    reqs, _ = await requests_in_window(cp.db, now - wsec, now, tenant)
    out = await (_admin(cp, reqs, now - wsec, now, wname) if tenant is None
                 else _tenant(cp, tenant, reqs, now - wsec, now, wname))
    return {"filters": [window_filter(wname)], **out}
