"""The money page. An admin sees revenue, compute and lease cost, margins,
the spread, every tenant's balance and the top tenants (definitions in
:mod:`cambist.analytics.margins`); a tenant key sees only its own spend,
usage and balance, never the platform's costs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from cambist.analytics.queries import load_snapshot
from cambist.analytics.report import margin_report, summary_report
from cambist.analytics.window import Window
from cambist.api.context import ControlPlane
from cambist.domain.money import from_micros
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
from cambist.web.queries import Request, bucketize, requests_in_window

__all__ = ["balances", "money_chart", "money_data", "recent_requests", "tenant_totals"]

_BUCKETS = 60
_TOP = 10
_RECENT = 20


def money_chart(reqs: Sequence[Request], since: float, until: float,
                with_cost: bool) -> dict[str, Any]:
    """Cumulative revenue (a tenant's spend) and, for the operator, compute cost
    and spread over ``[since, until)``."""
    starts, groups = bucketize(reqs, lambda r: r.created_at, since, until, _BUCKETS)
    rev, cost, acc_r, acc_c = [], [], 0, 0
    for g in groups:
        acc_r += sum(r.price_micros for r in g)
        acc_c += sum(r.compute_cost_micros for r in g)
        rev.append(acc_r / 1e6)
        cost.append(acc_c / 1e6)
    lines = [series("revenue" if with_cost else "spend", rev, color="#2563eb", unit="$")]
    if with_cost:
        lines += [series("compute cost", cost, color="#dc2626", unit="$"),
                  series("spread", [r - c for r, c in zip(rev, cost, strict=True)],
                         color="#16a34a", unit="$")]
    title = "Revenue, compute cost and spread (cumulative)" if with_cost else \
        "Spend (cumulative)"
    return chart(title, starts, lines, y_label="$")


def tenant_totals(reqs: Sequence[Request]) -> dict[str, Any]:
    """Requests, tokens and spend of ``reqs``."""
    return {"requests": len(reqs), "prompt": sum(r.prompt_tokens for r in reqs),
            "completion": sum(r.completion_tokens for r in reqs),
            "spend": from_micros(sum(r.price_micros for r in reqs))}


def recent_requests(reqs: Sequence[Request]) -> dict[str, Any]:
    """The newest requests of ``reqs`` as a table (what a tenant paid, no costs)."""
    rows = [[clock(r.created_at), r.model, r.prompt_tokens, r.completion_tokens,
             money(from_micros(r.price_micros), 6), f"{r.latency_ms:,.0f} ms", r.status]
            for r in reversed(reqs[-_RECENT:])]
    return table("Recent requests", ["time", "model", "prompt tokens", "output tokens",
                                     "charged", "latency", "status"], rows)


async def balances(cp: ControlPlane, tenant: str | None) -> dict[str, Any]:
    """Every tenant's credit (or one tenant's) in spend order: its plan's
    allowance left today, pool left this month, then prepaid balance."""
    rows = []
    for t in await cp.keyring.list_tenants():
        if tenant is not None and t["id"] != tenant:
            continue
        c = cp.wallet.credit(t["id"])
        rows.append([t["id"], t["name"], c["plan"], money(c["allowance_left"], 4),
                     money(c["pool_left"], 2), money(c["prepaid"], 2),
                     money(c["spendable"], 2)])
    return table("Balances", ["tenant", "name", "plan", "allowance left", "pool left",
                              "prepaid", "spendable"], rows)


def _margin_rows(rows: list[dict[str, Any]], names: dict[str, str]) -> list[list[Any]]:
    return [[r["key"], names.get(r["key"], ""), r["requests"], money(r["revenue"]),
             money(r["compute_cost"]), money(r["effective_cost"]), money(r["spread"]),
             pct(r["compute_margin"]), pct(r["effective_margin"]), money(r["cost_per_mtok"])]
            for r in rows]


_MARGIN_COLUMNS = ["key", "name", "requests", "revenue", "compute cost", "effective cost",
                   "spread", "compute margin", "effective margin", "cost/Mtok"]


async def _admin(cp: ControlPlane, window: Window, wname: str,
                 reqs: list[Request]) -> dict[str, Any]:
    snap = await load_snapshot(cp.db, window)
    summary = summary_report(snap, window, None)
    total, platform = summary["total"], summary["platform"]
    names = {t["id"]: t["name"] for t in await cp.keyring.list_tenants()}
    by_tenant = margin_report(snap, window, "tenant")["data"][:_TOP]
    by_model = margin_report(snap, window, "model")["data"]
    by_supplier = margin_report(snap, window, "supplier")["data"]
    return {
        "stats": [
            stat("revenue", f"Revenue ({wname})", money(total["revenue"])),
            stat("compute_cost", "Compute cost", money(total["compute_cost"])),
            stat("spread", "Spread", money(total["spread"])),
            stat("compute_margin", "Compute margin", pct(total["compute_margin"])),
            stat("lease_cost", "Lease cost", money(platform["lease_cost"])),
            stat("idle_cost", "Idle cost", money(platform["idle_cost"])),
            stat("effective_margin", "Effective margin", pct(total["effective_margin"])),
            stat("utilization", "Platform utilization", pct(platform["utilization"])),
        ],
        "charts": {"money": money_chart(reqs, window.since, window.until, True)},
        "tables": {
            "tenants": table("Top tenants", _MARGIN_COLUMNS, _margin_rows(by_tenant, names)),
            "models": table("By model", _MARGIN_COLUMNS, _margin_rows(by_model, {})),
            "suppliers": table("By supplier", _MARGIN_COLUMNS, _margin_rows(by_supplier, {})),
            "balances": await balances(cp, None),
        },
    }


async def _tenant(cp: ControlPlane, tenant: str, window: Window, wname: str,
                  reqs: list[Request]) -> dict[str, Any]:
    t = tenant_totals(reqs)
    per: dict[str, list[Request]] = defaultdict(list)
    for r in reqs:
        per[r.model].append(r)
    model_rows = []
    for model, rs in sorted(per.items(), key=lambda kv: -sum(r.price_micros for r in kv[1])):
        x = tenant_totals(rs)
        model_rows.append([model, x["requests"], x["prompt"], x["completion"],
                           money(x["spend"])])
    return {
        "stats": [
            stat("spend", f"Spend ({wname})", money(t["spend"])),
            stat("requests", "Requests", f"{t['requests']:,}"),
            stat("tokens", "Tokens in / out", f"{t['prompt']:,} / {t['completion']:,}"),
            stat("balance", "Balance", money(cp.wallet.balance(tenant), 2)),
            stat("available", "Available", money(cp.wallet.available(tenant), 2)),
        ],
        "charts": {"money": money_chart(reqs, window.since, window.until, False)},
        "tables": {
            "usage": table("Usage by model", ["model", "requests", "prompt tokens",
                                              "output tokens", "spend"], model_rows),
            "recent": recent_requests(reqs),
            "balances": await balances(cp, tenant),
        },
    }


async def money_data(cp: ControlPlane, tenant: str | None,
                     q: Mapping[str, str]) -> dict[str, Any]:
    """The money page's data; ``tenant`` ``None`` is the admin's view."""
    now = cp.clock.now()
    wname, wsec = window_seconds(q.get("window"), default="24h")
    window = Window(now - wsec, now)
    reqs, _ = await requests_in_window(cp.db, window.since, now, tenant)
    out = await (_admin(cp, window, wname, reqs) if tenant is None
                 else _tenant(cp, tenant, window, wname, reqs))
    return {"filters": [window_filter(wname)], **out}
