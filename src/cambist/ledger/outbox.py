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
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.money import to_micros
from cambist.domain.usage import UsageRecord
from cambist.ledger._sql import insert_ignore
from cambist.store.schema import settings

__all__ = [
    "OutboxBatch",
    "OutboxPosition",
    "UsageOutbox",
    "decode_record",
    "encode_record",
    "read_position",
    "record_charges",
]

log = logging.getLogger("cambist.ledger.outbox")

_HEADER_TAG = "cambist_outbox"
_FIELDS = frozenset(UsageRecord._fields)
_READ_LIMIT = 4 << 20


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


_ROW_LEN = len(_FIELD_ORDER)


def _decode_rows(chunk: bytes, end: int) -> tuple[list[list[Any]], dict[str, Decimal]] | None:
    """The lines of ``chunk[:end]`` (complete lines) decoded as one JSON array
    into rows (the arrays :func:`encode_record` writes, money still as text),
    with every money text met parsed once; ``None`` unless every line is such
    an array with money that parses (older lines, a line torn by a crash:
    decode those one by one)."""
    # A line's only raw newline is its end (JSON escapes those in strings),
    # so the newlines become the array's commas; an empty or torn line makes
    # the whole array invalid.
    money: dict[str, Decimal] = {}
    try:
        rows: Any = orjson.loads(b"[" + chunk[:end - 1].replace(b"\n", b",") + b"]")
        for row in rows:
            if type(row) is not list or len(row) != _ROW_LEN:
                return None
            if row[9] not in money:  # price
                money[row[9]] = Decimal(row[9])
            if row[10] not in money:  # compute_cost
                money[row[10]] = Decimal(row[10])
    except (ValueError, TypeError, ArithmeticError):
        return None
    return rows, money


def record_charges(records: Iterable[UsageRecord]) -> list[tuple[str, str, int, int, int, float]]:
    """Per record, what it charged, as :meth:`OutboxBatch.charges` lists it."""
    return [(r.request_id, r.tenant_id, to_micros(r.price), r.allowance_micros, r.pool_micros,
             r.created_at) for r in records]


class OutboxBatch:
    """Complete lines read from an outbox, bytes ``[start, end)``, decoded once
    for whoever reads the same range (the flusher, then the reporter).

    When every line is current they stay rows (orjson's arrays, 1 µs a
    record less than building records): the flusher on PostgreSQL sends the
    lines as they are and both it and the reporter need only :meth:`charges`;
    :attr:`records` are built when asked for. ``lines`` are the file's bytes
    when every line is current, else ``None``."""

    __slots__ = ("_charges", "_money", "_records", "_rows", "end", "lines", "start")

    def __init__(self, start: int, end: int, lines: bytes | None,
                 rows: list[list[Any]] | None, money: dict[str, Decimal],
                 records: list[UsageRecord] | None = None) -> None:
        self.start = start
        self.end = end
        self.lines = lines
        self._rows = rows
        self._money = money
        self._records = records
        self._charges: list[tuple[str, str, int, int, int, float]] | None = None

    def __len__(self) -> int:
        return len(self._rows) if self._rows is not None else len(self.records)

    @property
    def records(self) -> list[UsageRecord]:
        """The batch's records (built from the rows on first use)."""
        if self._records is None:
            money, rows = self._money, self._rows or []
            self._records = [UsageRecord._make([*row[:9], money[row[9]], money[row[10]],
                                                *row[11:]]) for row in rows]
        return self._records

    def charges(self) -> list[tuple[str, str, int, int, int, float]]:
        """Per record, what it charged: ``(request_id, tenant_id, price in
        micro-dollars, allowance part, pool part, created_at)``; worked out once."""
        if self._charges is not None:
            return self._charges
        if self._rows is None:
            out = record_charges(self.records)
        else:
            micros: dict[str, int] = {}  # the same price text comes back again and again
            out = []
            for row in self._rows:
                price = micros.get(row[9])
                if price is None:
                    price = micros[row[9]] = to_micros(self._money[row[9]])
                out.append((row[0], row[1], price, row[18], row[19], row[13]))
        self._charges = out
        return out


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
        # The flusher's last batch: the reporter reads the same one right after.
        self._kept: OutboxBatch | None = None

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
        written = os.write(self._fd, data)
        while written < len(data):  # a short write (disk nearly full): finish the line
            written += os.write(self._fd, data[written:])

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
        batch = self.read_batch(start, limit)
        return batch.records, batch.end

    def read_lines(self, start: int, limit: int = _READ_LIMIT
                   ) -> tuple[list[UsageRecord], bytes | None, int]:
        """:meth:`read`, with the records' lines as they are in the file (one
        after the other, each ending in a newline) when every line read is one
        :func:`encode_record` writes now; ``None`` otherwise (older lines,
        damaged ones: send :func:`encode_record` of the records instead)."""
        batch = self.read_batch(start, limit)
        return batch.records, batch.lines, batch.end

    def read_batch(self, start: int, limit: int = _READ_LIMIT, *,
                   keep: bool = False) -> OutboxBatch:
        """The complete lines from byte ``start`` (at most ``limit`` bytes) as
        an :class:`OutboxBatch`. ``keep``: remember it, so that a read of
        exactly the same range (the reporter's, after the flusher's) is not
        decoded again, until :meth:`release`."""
        kept = self._kept
        if kept is not None and kept.start == start and kept.end == start + limit:
            return kept
        batch = self._read(start, limit)
        if keep:
            self._kept = batch
        return batch

    def release(self, end: int) -> None:
        """Forget the batch kept if it ends by byte ``end`` (committed): the
        flusher calls this once a batch is committed."""
        if self._kept is not None and self._kept.end <= end:
            self._kept = None

    def _read(self, start: int, limit: int) -> OutboxBatch:
        with open(self.path, "rb") as f:
            f.seek(start)
            chunk = f.read(limit)
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) >= limit:
            raise ValueError(f"{self.path}: a line at byte {start} exceeds {limit} bytes")
        if end == 0:
            return OutboxBatch(start, start, b"", [], {})
        # The file's lines, not records kept in memory: records kept for the
        # flusher, each among a request's short-lived objects, cost the gateway
        # its caches (~20 µs of CPU a request for 800 kept) and, when the
        # flusher fell behind, their memory. The file's pages are in the
        # page cache, and a batch of current lines decodes in one orjson call.
        decoded = _decode_rows(chunk, end)
        if decoded is None:
            return OutboxBatch(start, start + end, None, None, {},
                               self._decode_each(chunk[:end], start))
        rows, money = decoded
        return OutboxBatch(start, start + end, chunk[:end], rows, money)

    def _decode_each(self, chunk: bytes, start: int) -> list[UsageRecord]:
        """Line by line, skipping (and logging) what does not decode."""
        records: list[UsageRecord] = []
        pos = start
        for line in chunk.splitlines(keepends=True):
            try:
                records.append(decode_record(line))
            except (ValueError, KeyError, TypeError, ArithmeticError):
                self.skipped += 1
                log.error("skipping an unreadable usage record at byte %d of %s", pos, self.path)
            pos += len(line)
        return records

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
        self._kept = None
        self._gen, self._header_len = self._write_header()
        return OutboxPosition(self._gen, self._header_len)

    def close(self) -> None:
        """Close the file descriptor (after the last flush)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
