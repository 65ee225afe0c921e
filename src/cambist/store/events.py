"""The append-only event log."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.store.schema import events

__all__ = ["EventLog"]


class EventLog:
    """Appends events and reads them back in order. Events are dicts
    ``{"ts", "kind", "subject", "data"}`` so this layer needs no domain types."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, rows: Sequence[dict]) -> None:
        """Append events (one transaction)."""
        if not rows:
            return
        async with self._engine.begin() as conn:
            await conn.execute(insert(events), list(rows))

    async def read(
        self, *, kind: str | None = None, since: float | None = None, limit: int = 1000,
        latest: bool = False,
    ) -> list[dict]:
        """Events in time order, optionally of one kind prefix and since a time;
        with ``latest``, the last ``limit`` of them (still in time order)."""
        order = events.c.id.desc() if latest else events.c.id
        q = select(events).order_by(order).limit(limit)
        if kind is not None:
            q = q.where(events.c.kind.startswith(kind))
        if since is not None:
            q = q.where(events.c.ts >= since)
        async with self._engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(q)]
        return rows[::-1] if latest else rows
