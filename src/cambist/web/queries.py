"""Reads the dashboard needs that no other module exposes: metered requests
with their latencies, scoped to one tenant or the platform, and time buckets.

Pure SQLAlchemy Core over :mod:`cambist.store.schema`; money stays in
micro-dollars until it is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.store.schema import usage

__all__ = ["MAX_ROWS", "Request", "bucketize", "event_data", "requests_in_window"]

MAX_ROWS = 100_000
"""Most requests one page reads (the newest; a note says when it was capped)."""

_U = usage.c
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """One metered request as the dashboard shows it."""

    request_id: str
    tenant_id: str
    model: str
    endpoint_id: str | None
    supplier: str | None
    prompt_tokens: int
    completion_tokens: int
    price_micros: int
    compute_cost_micros: int
    status: str
    created_at: float
    latency_ms: float
    ttft_ms: float | None


async def requests_in_window(db: AsyncEngine, since: float, until: float,
                             tenant: str | None) -> tuple[list[Request], bool]:
    """Requests created in ``[since, until)`` (one tenant's, or all with ``None``),
    oldest first, and whether :data:`MAX_ROWS` cut older ones off."""
    q = select(_U.request_id, _U.tenant_id, _U.model, _U.endpoint_id, _U.supplier,
               _U.prompt_tokens, _U.completion_tokens, _U.price_micros,
               _U.compute_cost_micros, _U.status, _U.created_at, _U.latency_ms, _U.ttft_ms) \
        .where(_U.created_at >= since, _U.created_at < until) \
        .order_by(_U.created_at.desc()).limit(MAX_ROWS + 1)
    if tenant is not None:
        q = q.where(_U.tenant_id == tenant)
    async with db.connect() as conn:
        rows = (await conn.execute(q)).all()
    capped = len(rows) > MAX_ROWS
    out = [Request(r.request_id, r.tenant_id, r.model, r.endpoint_id, r.supplier,
                   int(r.prompt_tokens), int(r.completion_tokens), int(r.price_micros),
                   int(r.compute_cost_micros), str(r.status), float(r.created_at),
                   float(r.latency_ms or 0.0),
                   None if r.ttft_ms is None else float(r.ttft_ms))
           for r in rows[:MAX_ROWS]]
    return out[::-1], capped


def bucketize(items: Sequence[T], time_of: Callable[[T], float], since: float, until: float,
              buckets: int) -> tuple[list[float], list[list[T]]]:
    """Split ``items`` into ``buckets`` equal time buckets over ``[since, until)``;
    returns each bucket's start and its items."""
    width = (until - since) / buckets
    starts = [since + i * width for i in range(buckets)]
    groups: list[list[T]] = [[] for _ in range(buckets)]
    for it in items:
        i = int((time_of(it) - since) // width)
        if 0 <= i < buckets:
            groups[i].append(it)
    return starts, groups


def event_data(row: dict[str, Any]) -> dict[str, Any]:
    """An event row's ``data`` as a dict (empty when absent)."""
    d = row.get("data")
    return d if isinstance(d, dict) else {}
