"""Which endpoints claim a trusted execution environment, and what their last
attestation check found (rows of ``endpoint_attestations``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.store.schema import endpoint_attestations as table

__all__ = ["AttestationRecords"]


class AttestationRecords:
    """Rows are plain dicts (this layer knows no domain types): ``endpoint_id``,
    ``format``, ``status`` (pending | verified | failed | revoked), ``reason``,
    ``measurement``, ``checked_at``, ``expires_at``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def claim(self, endpoint_id: str, fmt: str) -> None:
        """Mark ``endpoint_id`` as attesting in ``fmt``; pending until first checked.
        Claiming again (re-registration) resets it to pending."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(table).where(table.c.endpoint_id == endpoint_id))
            await conn.execute(insert(table).values(
                endpoint_id=endpoint_id, format=fmt, status="pending"))

    async def record(self, endpoint_id: str, *, status: str, reason: str | None,
                     measurement: str | None, checked_at: float,
                     expires_at: float | None) -> bool:
        """Store a check's outcome; False when the endpoint no longer claims one."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(table).where(table.c.endpoint_id == endpoint_id).values(
                    status=status, reason=reason[:200] if reason else None,
                    measurement=measurement, checked_at=checked_at, expires_at=expires_at))
        return bool(result.rowcount)

    async def revoke(self, endpoint_id: str, reason: str, now: float) -> bool:
        """Revoke the endpoint's attestation at once (an operator's decision); it
        stays revoked, unchecked, until claimed again."""
        return await self.record(endpoint_id, status="revoked", reason=reason,
                                 measurement=None, checked_at=now, expires_at=None)

    async def forget(self, endpoint_id: str) -> None:
        """Drop the claim (the endpoint was removed)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(table).where(table.c.endpoint_id == endpoint_id))

    async def all(self) -> dict[str, dict[str, Any]]:
        """Every claim by endpoint id."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(table))
            return {r.endpoint_id: dict(r._mapping) for r in rows}
