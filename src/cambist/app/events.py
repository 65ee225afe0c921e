"""A buffer between synchronous event producers (the gateway's routing
decisions) and the event log, flushed by a loop off the request path."""

from __future__ import annotations

from typing import Any

from cambist.store.events import EventLog

__all__ = ["EventBuffer"]


class EventBuffer:
    """Collects event rows in memory; ``step`` appends them in one batch.
    Bounded: past ``max_rows`` the oldest unflushed rows are dropped (routing
    decisions are telemetry, not money)."""

    name = "event-flush"

    def __init__(self, log: EventLog, interval_s: float = 1.0, max_rows: int = 50_000) -> None:
        self.log, self.interval_s, self.max_rows = log, interval_s, max_rows
        self._rows: list[dict[str, Any]] = []
        self.dropped = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) > self.max_rows:
            del self._rows[0]
            self.dropped += 1

    async def step(self, now: float) -> None:
        rows, self._rows = self._rows, []
        if rows:
            await self.log.append(rows)
