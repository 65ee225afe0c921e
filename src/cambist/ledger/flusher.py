"""Moves usage records from the outbox file into the database.

One transaction per batch holds, in this order: the compare-and-set of the
committed file position (first, so SQLite takes its write lock before any
read), the ``usage`` rows (duplicates by ``request_id`` skipped), and one
journal entry per newly inserted, non-zero-price row (kind ``usage``, key
``usage:{request_id}``: debit ``tenant:{id}``, credit
``platform:revenue:inference``). A crash before the commit leaves the
position where it was, so the batch is read again; the unique keys make the
second attempt charge nothing twice. The rows are written in bulk
(:mod:`cambist.ledger.usage_bulk`); on PostgreSQL the compare-and-set and the
writes are one statement (atomic on its own: no BEGIN and COMMIT round trips,
which with SQLAlchemy's transaction cost about as much CPU as the batch's
rows). With a :class:`UsageReporter` (shared credit through Redis), each batch
is reported before its transaction opens.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.clock import Clock, SystemClock
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import OutboxBatch, OutboxPosition, UsageOutbox, read_position
from cambist.ledger.usage_bulk import flush_usage_pg, usage_row, write_usage

__all__ = ["OutboxFlusher", "UsageReporter", "usage_row"]

_BATCH_BYTES = 1 << 20
_ROTATE_BYTES = 8 << 20


class UsageReporter(Protocol):
    """Told each batch before it is committed (the shared wallet moves its charges
    into Redis); must be idempotent per byte range, since a crash between the
    report and the commit reports the range again."""

    async def report(self, outbox: UsageOutbox, start: int, end: int) -> None: ...


class OutboxFlusher:
    """Control loop flushing an :class:`UsageOutbox` into ``usage`` and the journal."""

    name = "outbox-flusher"

    def __init__(
        self,
        outbox: UsageOutbox,
        engine: AsyncEngine,
        journal: Journal,
        interval_s: float = 0.2,
        *,
        batch_bytes: int = _BATCH_BYTES,
        rotate_bytes: int = _ROTATE_BYTES,
        reporter: UsageReporter | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.outbox = outbox
        self.interval_s = interval_s
        self._engine = engine
        self._journal = journal
        self._batch_bytes = batch_bytes
        self._rotate_bytes = rotate_bytes
        self._position: OutboxPosition | None = None
        self.reporter = reporter
        self._clock = clock or SystemClock()  # stamps the journal entries
        self.flushed = 0  # records committed by this flusher (duplicates included)

    async def step(self, now: float) -> None:
        """Flush one batch; rotate the file when all is flushed and it is large."""
        async with self.outbox.lock:
            if await self._flush_batch() == 0:
                await self._rotate(self._rotate_bytes)

    async def recover(self) -> int:
        """Flush everything now (startup, shutdown); returns the records read.
        Leaves a fully flushed file truncated to a new generation."""
        total = 0
        async with self.outbox.lock:
            while (n := await self._flush_batch()) > 0:
                total += n
            await self._rotate(0)
        return total

    async def _current(self) -> OutboxPosition:
        if self._position is None:
            self._position = await read_position(self._engine, self.outbox.offset_key)
        return self._position

    def backlog_bytes(self) -> int:
        """Bytes appended to the outbox and not yet committed (flush lag)."""
        if self._position is None:
            return 0
        return max(0, self.outbox.size() - self.outbox.start_of(self._position))

    async def _flush_batch(self) -> int:
        """Commit the next batch of complete lines; returns the lines' record count
        (0 when nothing new was complete)."""
        await self.outbox.sync()
        old = await self._current()
        start = self.outbox.start_of(old)
        batch = self.outbox.read_batch(start, self._batch_bytes, keep=True)
        end = batch.end
        new = OutboxPosition(self.outbox.generation, end)
        if new == old:
            return 0
        if self.reporter is not None:
            await self.reporter.report(self.outbox, start, end)
        if not await self._commit(old, new, batch):
            self._position = None  # moved elsewhere: re-read before the next try
            raise RuntimeError(
                f"outbox position {self.outbox.offset_key!r} changed under this flusher; "
                "is another process flushing the same outbox?"
            )
        self._position = new
        self.outbox.release(end)
        self.flushed += len(batch)
        return max(len(batch), 1 if end > start else 0)

    async def _commit(self, old: OutboxPosition, new: OutboxPosition,
                      batch: OutboxBatch) -> bool:
        """Move the committed position from ``old`` to ``new`` and write the
        batch, all or nothing; ``False`` (nothing written) if the position was
        not ``old``."""
        key = self.outbox.offset_key
        if self._engine.dialect.name == "postgresql":  # one statement, one round trip
            async with self._engine.connect() as conn:
                written = await flush_usage_pg(conn, batch, self._clock.now(), key,
                                               old.encode(), new.encode())
            return written is not None
        async with self._engine.begin() as conn:
            if not await old.advance(conn, key, new):
                return False
            await write_usage(conn, self._journal, batch.records, self._clock.now(),
                              batch.lines)
        return True

    async def _rotate(self, min_bytes: int) -> None:
        old = await self._current()
        flushed_to = self.outbox.start_of(old)
        if self.outbox.size() < min_bytes:
            return
        new = self.outbox.rotate(flushed_to)
        if new is None:
            return
        # Crash here: the stored generation is stale, which start_of reads as
        # "from the top of the new file" — nothing lost, nothing repeated.
        async with self._engine.begin() as conn:
            if not await old.advance(conn, self.outbox.offset_key, new):
                self._position = None
                return
        self._position = new
