"""The traffic page: requests per second, TTFT and latency percentiles, errors
by cause and the routes taken, from metered requests and the gateway's routing
decisions. A tenant key sees only its own requests and their routing."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from cambist.api.context import ControlPlane
from cambist.domain.events import EventKind
from cambist.web.blocks import (
    chart,
    percentile,
    series,
    stat,
    table,
    window_filter,
    window_seconds,
)
from cambist.web.queries import Request, bucketize, event_data, requests_in_window

__all__ = ["traffic_data"]

_BUCKETS = 60
_ROUTE_EVENTS = 20_000


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} ms"


def _quantile_lines(groups: list[list[Request]], pick: Callable[[Request], float | None],
                    name: str, colors: tuple[str, str, str]) -> list[dict[str, Any]]:
    """p50/p95/p99 of ``pick`` over each bucket's completed requests."""
    out = []
    for q, color in zip((0.5, 0.95, 0.99), colors, strict=True):
        vals = [percentile([v for v in (pick(r) for r in g if r.status == "ok")
                            if v is not None], q) for g in groups]
        out.append(series(f"{name} p{round(q * 100)}", vals, color=color, unit="ms"))
    return out


async def _route_events(cp: ControlPlane, since: float, ids: set[str] | None
                        ) -> tuple[list[dict[str, Any]], bool]:
    """Routing decisions since ``since`` (only those of ``ids`` when given)."""
    rows = await cp.events.read(kind=EventKind.ROUTE, since=since, limit=_ROUTE_EVENTS,
                                latest=True)
    capped = len(rows) >= _ROUTE_EVENTS
    if ids is not None:
        rows = [r for r in rows if r["subject"] in ids]
    return rows, capped


def _tables(reqs: list[Request], routes: list[dict[str, Any]], note: str
            ) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Errors by cause and the routes taken; and the failed upstream attempts."""
    causes: Counter[str] = Counter()
    attempts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for e in routes:
        d = event_data(e)
        outcome = str(d.get("outcome", ""))
        key = (str(d.get("model")), str(d.get("endpoint")), str(d.get("supplier")))
        # Successes are logged only after a failover: each served request is one
        # successful attempt, counted from the usage records below.
        if outcome != "ok":
            attempts[key]["failed"] += 1
            causes[f"upstream: {outcome}"] += 1
    for r in reqs:
        if r.status != "ok":
            causes[f"stream ended early ({r.status})"] += 1
    served: dict[tuple[str, str, str], list[Request]] = defaultdict(list)
    for r in reqs:
        served[(r.model, r.endpoint_id or "—", r.supplier or "—")].append(r)
    rows = []
    for key in sorted(set(served) | set(attempts), key=lambda k: (-len(served.get(k, [])), k)):
        got = served.get(key, [])
        rows.append([*key, len(got), f"{len(got) / max(len(reqs), 1) * 100:.1f}%",
                     len(got), attempts[key]["failed"],
                     _ms(percentile([r.latency_ms for r in got], 0.5)),
                     _ms(percentile([r.ttft_ms for r in got if r.ttft_ms is not None], 0.95))])
    errors = table("Errors by cause", ["cause", "count"],
                   [[c, n] for c, n in causes.most_common()],
                   "failed upstream attempts (retried elsewhere when possible) "
                   "and streams that broke after the first byte")
    route_table = table("Routes", ["model", "endpoint", "supplier", "requests", "share",
                                   "ok attempts", "failed attempts", "latency p50", "TTFT p95"],
                        rows, note)
    return errors, route_table, sum(c["failed"] for c in attempts.values())


async def traffic_data(cp: ControlPlane, tenant: str | None,
                       q: Mapping[str, str]) -> dict[str, Any]:
    """The traffic page's data; ``tenant`` ``None`` is the admin's view."""
    now = cp.clock.now()
    wname, wsec = window_seconds(q.get("window"))
    since = now - wsec
    reqs, capped = await requests_in_window(cp.db, since, now, tenant)
    starts, groups = bucketize(reqs, lambda r: r.created_at, since, now, _BUCKETS)
    width = wsec / _BUCKETS
    rps = chart("Requests per second", starts, [
        series("completed", [sum(r.status == "ok" for r in g) / width for g in groups],
               color="#2563eb", unit="req/s"),
        series("broken streams", [sum(r.status != "ok" for r in g) / width for g in groups],
               color="#dc2626", unit="req/s"),
    ], y_label="req/s", note=f"{int(width)} s buckets over the last {wname}")
    ttft = chart("Time to first token", starts,
                 _quantile_lines(groups, lambda r: r.ttft_ms, "TTFT",
                                 ("#16a34a", "#ea580c", "#dc2626")), y_label="ms",
                 note="per bucket, completed requests; gaps where there were none")
    latency = chart("Latency (full response)", starts,
                    _quantile_lines(groups, lambda r: r.latency_ms, "latency",
                                    ("#2563eb", "#7c3aed", "#be185d")), y_label="ms",
                    note="per bucket, from request start to the last byte")
    routes, events_capped = await _route_events(
        cp, since, None if tenant is None else {r.request_id for r in reqs})
    note = "newest requests only (window capped)" if capped or events_capped else ""
    errors, route_table, failed = _tables(reqs, routes, note)
    ok = [r for r in reqs if r.status == "ok"]
    ttfts = [r.ttft_ms for r in ok if r.ttft_ms is not None]
    lat = [r.latency_ms for r in ok]
    return {
        "filters": [window_filter(wname)],
        "stats": [
            stat("requests", f"Requests ({wname})", f"{len(reqs):,}"),
            stat("rps", "Mean req/s", f"{len(reqs) / wsec:.3f}"),
            stat("ttft_p50", "TTFT p50", _ms(percentile(ttfts, 0.5))),
            stat("ttft_p99", "TTFT p99", _ms(percentile(ttfts, 0.99))),
            stat("latency_p50", "Latency p50", _ms(percentile(lat, 0.5))),
            stat("latency_p99", "Latency p99", _ms(percentile(lat, 0.99))),
            stat("errors", "Failed attempts + broken streams",
                 f"{failed + len(reqs) - len(ok):,}"),
        ],
        "charts": {"rps": rps, "ttft": ttft, "latency": latency},
        "tables": {"errors": errors, "routes": route_table},
    }
