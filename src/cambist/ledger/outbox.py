"""The durable usage outbox: usage is on disk before the response completes.

:meth:`UsageOutbox.append` writes each :class:`UsageRecord` as one JSON line
with a single ``os.write`` on an ``O_APPEND`` descriptor, so a finished
request's record is in the operating system before its response ends.
:class:`OutboxFlusher` then ``fsync``\\ s the file and moves complete lines into
the ``usage`` table and the journal in one transaction per batch, together
with the committed byte position (``settings``), so each record is charged
exactly once across crashes.

The file starts with a header line naming its *generation*. Once everything
is flushed the flusher may truncate the file and start a new generation; a
committed position from an older generation then means "from the top".
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.usage import UsageRecord
from cambist.ledger._sql import insert_ignore
from cambist.store.schema import settings

__all__ = [
    "OutboxPosition",
    "UsageOutbox",
    "decode_record",
    "encode_record",
    "read_position",
]

log = logging.getLogger("cambist.ledger.outbox")

_HEADER_TAG = "cambist_outbox"
_FIELDS = frozenset(UsageRecord._fields)
_READ_LIMIT = 4 << 20
_CACHED_BYTES = 64 << 20
"""Appended lines kept in memory for the flusher (about 250 bytes a record)."""


_FIELD_ORDER = UsageRecord._fields
_DECIMAL_FIELDS = ("price", "compute_cost")


def encode_record(record: UsageRecord) -> bytes:
    """One JSON line: the record's fields as an array, in the order of
    :class:`UsageRecord`'s fields (Decimals as strings, trailing newline).

    An array, not an object: orjson walks a dataclass's field objects for
    every record, about 10 µs on a request's path where little is in the
    processor's caches, against 3-4 µs for a tuple (and each Decimal went
    through a Python ``default``). Fields are only ever added at the end,
    with defaults, so older lines keep decoding."""
    r = record
    return orjson.dumps(
        (r.request_id, r.tenant_id, r.key_id, r.model, r.endpoint_id, r.supplier,
         r.prompt_tokens, r.completion_tokens, r.reasoning_tokens, str(r.price),
         str(r.compute_cost), r.price_version, r.status, r.created_at, r.latency_ms,
         r.ttft_ms, r.stream, r.privacy_tier, r.allowance_micros, r.pool_micros),
        option=orjson.OPT_APPEND_NEWLINE)


def decode_record(line: bytes) -> UsageRecord:
    """Parse a line written by :func:`encode_record`, or by an older version
    (an object with the fields by name; unknown fields ignored, missing ones
    defaulted)."""
    data: Any = orjson.loads(line)
    if isinstance(data, list):
        kept = dict(zip(_FIELD_ORDER, data, strict=False))  # a newer version's extras dropped
    elif data.keys() <= _FIELDS:  # the common case of object lines: no copy
        kept = data
    else:
        kept = {k: v for k, v in data.items() if k in _FIELDS}
    for name in _DECIMAL_FIELDS:
        kept[name] = Decimal(kept[name])
    return UsageRecord(**kept)


def _decode_lines(buffer: bytearray, end: int) -> list[UsageRecord]:
    """The records of ``buffer[:end]``, complete lines written by
    :func:`encode_record` in this process (so arrays of exactly the record's
    fields), decoded as one JSON array: about 3 µs a record, a third of
    :func:`decode_record` line by line."""
    # A line's only raw newline is its end (JSON escapes those in strings),
    # so the newlines become the array's commas.
    rows: list[list[Any]] = orjson.loads(b"[" + buffer[:end - 1].replace(b"\n", b",") + b"]")
    records = []
    for row in rows:
        row[9] = Decimal(row[9])  # price
        row[10] = Decimal(row[10])  # compute_cost
        records.append(UsageRecord(*row))
    return records


@dataclass(frozen=True, slots=True)
class OutboxPosition:
    """How far an outbox file has been committed to the database."""

    gen: str
    offset: int

    def encode(self) -> str:
        """The canonical string stored in ``settings``."""
        return orjson.dumps({"gen": self.gen, "offset": self.offset}).decode()

    @classmethod
    def decode(cls, raw: str) -> OutboxPosition:
        """Parse :meth:`encode`'s output."""
        data = orjson.loads(raw)
        return cls(str(data["gen"]), int(data["offset"]))

    async def advance(self, conn: AsyncConnection, key: str, new: OutboxPosition) -> bool:
        """Compare-and-set the stored position from ``self`` to ``new`` inside
        ``conn``'s transaction; ``False`` if someone else moved it."""
        res = await conn.execute(
            update(settings)
            .where(settings.c.key == key, settings.c.value == self.encode())
            .values(value=new.encode())
        )
        return res.rowcount == 1


async def read_position(engine: AsyncEngine, key: str) -> OutboxPosition:
    """The committed position stored under ``key`` (created empty if absent)."""
    q = select(settings.c.value).where(settings.c.key == key)
    async with engine.connect() as conn:
        raw = (await conn.execute(q)).scalar()
    if raw is not None:
        return OutboxPosition.decode(raw)
    empty = OutboxPosition("", 0)
    async with engine.begin() as conn:
        stmt = insert_ignore(conn, settings, ["key"])
        await conn.execute(stmt, {"key": key, "value": empty.encode()})
        return OutboxPosition.decode((await conn.execute(q)).scalar_one())


class UsageOutbox:
    """An append-only file of usage records owned by one process.

    ``offset_key`` names the ``settings`` row that holds the committed
    position (give each process's outbox its own key when several share a
    database). ``lock`` serializes the flusher and wallet reloads."""

    def __init__(self, path: Path, offset_key: str = "outbox_offset") -> None:
        self.path = Path(path)
        self.offset_key = offset_key
        self.lock = asyncio.Lock()
        self.skipped = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self._gen, self._header_len = self._open_generation()
        except BaseException:
            os.close(self._fd)
            raise
        # The lines this process appended and has not seen flushed, one buffer
        # from byte _tail_at: the flusher sends them on as they are, and the
        # flusher, the reporter and wallet reloads decode them in one batch
        # (orjson over the whole array) instead of reading the file again. The
        # records themselves are not kept: each kept a flush interval or two
        # among a request's short-lived objects cost the gateway's other work
        # its caches (800 kept records: ~20 µs of CPU a request; bench/README.md,
        # *Gateway scale-out*). One buffer, not a bytes object per line, for
        # the same reason (and lines kept apart held the allocator's pages).
        # The file stays the record: after a restart, or past _CACHED_BYTES,
        # reads go to it.
        self._end = os.fstat(self._fd).st_size
        self._tail = bytearray()
        self._tail_at = self._end
        # The last batch decoded (start, end, records): the flusher and the
        # reporter read the same batch one after the other.
        self._decoded: tuple[int, int, list[UsageRecord]] = (-1, -1, [])

    def _open_generation(self) -> tuple[str, int]:
        last = b""
        with open(self.path, "rb") as f:
            first = f.readline()
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size:
                f.seek(size - 1)
                last = f.read(1)
        if not first.endswith(b"\n"):
            # Empty, or a header torn by a crash (nothing can follow a header
            # that was never finished): start a fresh generation.
            os.ftruncate(self._fd, 0)
            return self._write_header()
        header = orjson.loads(first)
        if not isinstance(header, dict) or _HEADER_TAG not in header:
            raise ValueError(f"{self.path} is not a cambist usage outbox")
        if last != b"\n":
            # A record torn by a crash: end its line so the next record starts
            # cleanly; the flusher skips the unparsable fragment.
            os.write(self._fd, b"\n")
        return str(header["gen"]), len(first)

    def _write_header(self) -> tuple[str, int]:
        gen = secrets.token_hex(8)
        line = orjson.dumps({_HEADER_TAG: 1, "gen": gen}, option=orjson.OPT_APPEND_NEWLINE)
        os.write(self._fd, line)
        return gen, len(line)

    @property
    def generation(self) -> str:
        """The id of the file's current generation."""
        return self._gen

    def append(self, record: UsageRecord) -> None:
        """Write one record as one line (one ``os.write``; no fsync here)."""
        data = encode_record(record)
        start = self._end
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (disk nearly full): finish the line
            written += os.write(self._fd, data[written:])
        self._end = start + len(data)
        if len(self._tail) >= _CACHED_BYTES:
            self._tail.clear()  # the flusher is far behind: let it read the file
        if not self._tail:
            self._tail_at = start
        self._tail += data

    async def sync(self) -> None:
        """``fsync`` the file off the event loop."""
        await asyncio.to_thread(os.fsync, self._fd)

    def start_of(self, position: OutboxPosition) -> int:
        """Where unflushed data begins for a committed ``position``."""
        if position.gen != self._gen:
            return self._header_len
        return max(position.offset, self._header_len)

    def read(self, start: int, limit: int = _READ_LIMIT) -> tuple[list[UsageRecord], int]:
        """Records in complete lines from byte ``start`` (at most ``limit``
        bytes), and the offset just past the last complete line read. A
        trailing partial line is left for later."""
        records, _, end = self._read(start, limit, lines=False)
        return records, end

    def read_lines(self, start: int, limit: int = _READ_LIMIT
                   ) -> tuple[list[UsageRecord], bytes | None, int]:
        """:meth:`read`, with the records' lines as :func:`encode_record` wrote
        them (one after the other, each ending in a newline) when they were all
        appended by this process; ``None`` when read from the file (they may
        be older lines, or damaged)."""
        return self._read(start, limit, lines=True)

    def release(self, end: int) -> None:
        """Drop the cached lines that end by byte ``end``: they are committed,
        nobody reads before it again. The flusher calls this once a batch is
        committed, so cached lines live one flush interval, not two."""
        if end >= self._tail_at + len(self._tail):
            self._tail.clear()
        elif end > self._tail_at:
            del self._tail[:end - self._tail_at]
            self._tail_at = end
        if self._decoded[1] <= end:
            self._decoded = (-1, -1, [])

    def _read(self, start: int, limit: int, *, lines: bool
              ) -> tuple[list[UsageRecord], bytes | None, int]:
        self.release(start)  # flushed: nobody reads before start
        records: list[UsageRecord] = []
        if self._tail and self._tail_at == start:
            tail = self._tail
            end = tail.rfind(b"\n", 0, limit) + 1 or tail.find(b"\n") + 1  # one line at least
            first, last, decoded = self._decoded
            if first == start and last == start + end:
                records = decoded
            else:
                records = _decode_lines(tail, end)
                self._decoded = (start, start + end, records)
            return records, bytes(tail[:end]) if lines else None, start + end
        with open(self.path, "rb") as f:
            f.seek(start)
            chunk = f.read(limit)
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) >= limit:
            raise ValueError(f"{self.path}: a line at byte {start} exceeds {limit} bytes")
        pos = start
        for line in chunk[:end].splitlines(keepends=True):
            try:
                records.append(decode_record(line))
            except (ValueError, KeyError, TypeError, ArithmeticError):
                self.skipped += 1
                log.error("skipping an unreadable usage record at byte %d of %s", pos, self.path)
            pos += len(line)
        return records, None, start + end

    def pending(self, position: OutboxPosition) -> list[UsageRecord]:
        """Every record in complete lines after the committed ``position``."""
        start, out = self.start_of(position), []
        while True:
            records, end = self.read(start)
            out.extend(records)
            if end == start:
                return out
            start = end

    def size(self) -> int:
        """The current file size in bytes."""
        return os.fstat(self._fd).st_size

    def rotate(self, flushed_to: int) -> OutboxPosition | None:
        """If the file ends exactly at ``flushed_to`` (everything flushed),
        truncate it and start a new generation; returns the new position to
        commit, else ``None``. Synchronous, so no append can slip in between."""
        if self.size() != flushed_to or flushed_to <= self._header_len:
            return None
        os.ftruncate(self._fd, 0)
        self._tail.clear()
        self._decoded = (-1, -1, [])
        self._gen, self._header_len = self._write_header()
        self._end = self._header_len
        return OutboxPosition(self._gen, self._header_len)

    def close(self) -> None:
        """Close the file descriptor (after the last flush)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
