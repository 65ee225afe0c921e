"""Read-only usage queries for the CLI, the API and the dashboard."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.money import from_micros
from cambist.store.schema import usage

__all__ = ["usage_records", "usage_summary"]

_U = usage.c


async def usage_records(
    engine: AsyncEngine,
    tenant_id: str | None,
    limit: int = 100,
    since: float | None = None,
    privacy_tier: str | None = None,
) -> list[dict]:
    """Flushed usage rows, newest first (all tenants when ``tenant_id`` is
    ``None``; only those served under ``privacy_tier`` when given);
    ``price`` and ``compute_cost`` are Decimal dollars, and so are
    ``paid_allowance``, ``paid_pool`` and ``paid_prepaid``, the parts of the
    price paid from each source."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    q = select(usage).order_by(_U.created_at.desc(), _U.request_id).limit(limit)
    if tenant_id is not None:
        q = q.where(_U.tenant_id == tenant_id)
    if since is not None:
        q = q.where(_U.created_at >= since)
    if privacy_tier is not None:
        q = q.where(_U.privacy_tier == privacy_tier)
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["price"] = from_micros(d.pop("price_micros"))
        d["compute_cost"] = from_micros(d.pop("compute_cost_micros"))
        # How the price was paid, in spend order (cambist.ledger.grants).
        d["paid_allowance"] = from_micros(d.pop("allowance_micros"))
        d["paid_pool"] = from_micros(d.pop("pool_micros"))
        d["paid_prepaid"] = d["price"] - d["paid_allowance"] - d["paid_pool"]
        d["stream"] = bool(d["stream"])
        out.append(d)
    return out


async def usage_summary(engine: AsyncEngine, tenant_id: str | None) -> list[dict]:
    """Per model: ``requests``, ``prompt_tokens``, ``completion_tokens``,
    ``price`` and ``compute_cost`` totals (Decimal dollars), costliest first."""
    price = func.sum(_U.price_micros)
    q = (
        select(
            _U.model,
            func.count().label("requests"),
            func.sum(_U.prompt_tokens).label("prompt_tokens"),
            func.sum(_U.completion_tokens).label("completion_tokens"),
            price.label("price_micros"),
            func.sum(_U.compute_cost_micros).label("compute_cost_micros"),
        )
        .group_by(_U.model)
        .order_by(price.desc(), _U.model)
    )
    if tenant_id is not None:
        q = q.where(_U.tenant_id == tenant_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
    return [
        {
            "model": r.model,
            "requests": int(r.requests),
            "prompt_tokens": int(r.prompt_tokens or 0),
            "completion_tokens": int(r.completion_tokens or 0),
            "price": from_micros(int(r.price_micros or 0)),
            "compute_cost": from_micros(int(r.compute_cost_micros or 0)),
        }
        for r in rows
    ]
