"""One leader runs the control loops; every other process follows.

On PostgreSQL, the leader is the process holding a session-level advisory
lock (``pg_try_advisory_lock``) on a dedicated connection kept open for as
long as it leads. Followers try to take the lock every ``retry_s`` seconds
(1 s by default). When the leader dies, even by ``kill -9``, its connection
closes, PostgreSQL drops the lock, and a follower takes it at its next try:
a dead leader is replaced within ``retry_s`` plus a connection round trip.
The leader checks its connection at the same pace and stops leading as soon
as the check fails (a partitioned leader stops within ``retry_s`` + 5 s, while
PostgreSQL may hand the lock to another process once it notices the broken
connection, so for a moment two processes may step; every leader-only loop is
already idempotent through the store).

On SQLite there is one process: it is the leader.

The loops that must run once (market feed, deploy controller, lease sync,
health probe, price history) are wrapped in :class:`LeaderOnly`; the ones
every process needs (routing refresh, keyring, prices, outbox flusher,
wallet refresh, shared limits) are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from cambist.domain.schedule import Loop

__all__ = ["LOCK_KEY", "AdvisoryLockElection", "LeaderOnly", "Leadership", "SoleLeader"]

log = logging.getLogger("cambist.app.leader")

LOCK_KEY = zlib.crc32(b"cambist:control-loops")
"""The advisory lock's key (advisory locks are per database)."""

_TIMEOUT_S = 5.0


class Leadership:
    """Whether this process runs the leader-only loops."""

    is_leader: bool = False

    async def close(self) -> None:
        """Give up leadership (process exit)."""


class SoleLeader(Leadership):
    """The only process (SQLite): always the leader."""

    is_leader = True


def _plain_dsn(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class AdvisoryLockElection(Leadership):
    """Control loop electing the leader through a PostgreSQL advisory lock."""

    name = "leader-election"

    def __init__(self, database_url: str, *, retry_s: float = 1.0, key: int = LOCK_KEY,
                 process: str = "") -> None:
        self.interval_s = retry_s
        self._dsn = _plain_dsn(database_url)
        self._key = key
        self._process = process
        self._conn: Any = None
        self.is_leader = False
        self.changes = 0  # how many times this process became the leader

    async def step(self, now: float) -> None:
        """Followers: try to take the lock. Leader: check the connection holding it."""
        try:
            if self._conn is None:
                self._conn = await asyncpg.connect(self._dsn, timeout=_TIMEOUT_S)
            if self.is_leader:
                await asyncio.wait_for(self._conn.fetchval("SELECT 1"), _TIMEOUT_S)
                return
            got = await asyncio.wait_for(
                self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key), _TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError,
                asyncpg.InterfaceError) as exc:
            if self.is_leader:
                log.warning("%s lost the leader lock's connection (%s): following",
                            self._process or "this process", exc)
            self.is_leader = False
            await self._drop()
            return
        if got:
            self.is_leader = True
            self.changes += 1
            log.info("%s is now the leader: control loops run here",
                     self._process or "this process")

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def close(self) -> None:
        """Release the lock by closing its connection."""
        self.is_leader = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), _TIMEOUT_S)
            except Exception:
                conn.terminate()


class LeaderOnly:
    """A loop that steps only while this process is the leader."""

    def __init__(self, loop: Loop, leadership: Leadership) -> None:
        self.loop = loop
        self.leadership = leadership
        self.name = loop.name
        self.interval_s = loop.interval_s

    async def step(self, now: float) -> None:
        """Step the wrapped loop if this process leads."""
        if self.leadership.is_leader:
            await self.loop.step(now)
