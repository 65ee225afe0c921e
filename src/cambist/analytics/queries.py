"""Reading one window's rows from the store, and the reports over them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.analytics.report import Snapshot, margin_report, summary_report, utilization_report
from cambist.analytics.rows import EndpointRow, LeaseRow, UsageRow
from cambist.analytics.window import Window
from cambist.domain.money import from_micros
from cambist.store.schema import endpoints, leases, usage

__all__ = ["load_snapshot", "margins", "summary", "utilization"]

_U, _E, _L = usage.c, endpoints.c, leases.c


def _endpoint(r: Any) -> EndpointRow:
    return EndpointRow(id=r.id, model=r.model, supplier=r.supplier, kind=r.kind, owner=r.owner,
                       deployment=r.deployment, capacity_tok_s=float(r.capacity_tok_s or 0.0),
                       created_at=float(r.created_at),
                       removed_at=None if r.removed_at is None else float(r.removed_at))


def _usage(r: Any, pooled: set[str]) -> UsageRow:
    return UsageRow(tenant_id=r.tenant_id, model=r.model, endpoint_id=r.endpoint_id,
                    supplier=r.supplier, prompt_tokens=int(r.prompt_tokens),
                    completion_tokens=int(r.completion_tokens),
                    reasoning_tokens=int(r.reasoning_tokens or 0),
                    price=from_micros(int(r.price_micros)),
                    compute_cost=from_micros(int(r.compute_cost_micros)),
                    created_at=float(r.created_at), pooled=r.endpoint_id in pooled)


def _lease(r: Any) -> LeaseRow:
    return LeaseRow(id=r.id, owner=r.owner, supplier=r.supplier,
                    price_per_hour=from_micros(int(r.price_per_hour_micros)),
                    started_at=r.started_at, ended_at=r.ended_at)


async def load_snapshot(engine: AsyncEngine, window: Window) -> Snapshot:
    """Usage created in ``window``, every endpoint, and the leases that ran in it."""
    uq = select(usage).where(_U.created_at >= window.since, _U.created_at < window.until) \
        .order_by(_U.created_at, _U.request_id)
    lq = select(leases).where(_L.started_at.is_not(None), _L.started_at < window.until,
                              (_L.ended_at.is_(None)) | (_L.ended_at > window.since))
    async with engine.connect() as conn:
        eps = [_endpoint(r) for r in (await conn.execute(select(endpoints))).all()]
        pooled = {e.id for e in eps if e.kind == "deployment" and e.owner is None}
        rows = [_usage(r, pooled) for r in (await conn.execute(uq)).all()]
        lease_rows = [_lease(r) for r in (await conn.execute(lq)).all()]
    return Snapshot(tuple(rows), tuple(eps), tuple(lease_rows))


async def summary(engine: AsyncEngine, window: Window, tenant: str | None = None) \
        -> dict[str, Any]:
    """:func:`cambist.analytics.report.summary_report` over the store."""
    return summary_report(await load_snapshot(engine, window), window, tenant)


async def utilization(engine: AsyncEngine, window: Window, by: str,
                      tenant: str | None = None) -> dict[str, Any]:
    """:func:`cambist.analytics.report.utilization_report` over the store."""
    return utilization_report(await load_snapshot(engine, window), window, by, tenant)


async def margins(engine: AsyncEngine, window: Window, by: str,
                  tenant: str | None = None) -> dict[str, Any]:
    """:func:`cambist.analytics.report.margin_report` over the store."""
    return margin_report(await load_snapshot(engine, window), window, by, tenant)
