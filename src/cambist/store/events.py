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
        self, *, kind: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[dict]:
        """Events in time order, optionally of one kind prefix and since a time."""
        q = select(events).order_by(events.c.id).limit(limit)
        if kind is not None:
            q = q.where(events.c.kind.startswith(kind))
        if since is not None:
            q = q.where(events.c.ts >= since)
        async with self._engine.connect() as conn:
            res = await conn.execute(q)
            return [dict(r._mapping) for r in res]
