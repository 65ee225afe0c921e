from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import OutboxPosition, UsageOutbox, decode_record, encode_record

D = Decimal
Make = Callable[..., UsageRecord]


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[UsageOutbox]:
    box = UsageOutbox(tmp_path / "usage.outbox")
    yield box
    box.close()


async def _counts(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT count(*) FROM usage")).scalar_one()
        entries = (
            await conn.exec_driver_sql("SELECT count(*) FROM journal_entries WHERE kind = 'usage'")
        ).scalar_one()
    return rows, entries


def test_record_round_trip(make_record: Make) -> None:
    r = make_record("req_1", price="0.0012345")
    line = encode_record(r)
    assert line.endswith(b"\n") and b'"0.0012345"' in line
    assert decode_record(line) == r


def _every_field_set() -> UsageRecord:
    """A record whose every field holds a value of its own (none defaulted)."""
    return UsageRecord(
        request_id="req_9", tenant_id="ten_t", key_id="key_k", model="m-\"q\"\n",
        endpoint_id="ep_e", supplier="sup", prompt_tokens=11, completion_tokens=22,
        reasoning_tokens=3, price=D("0.000123456789"), compute_cost=D("0.0000042"),
        price_version=7, status="partial", created_at=1234.5, latency_ms=6.25, ttft_ms=1.5,
        stream=True, privacy_tier="zdr", allowance_micros=44, pool_micros=55)


def test_a_line_holds_every_field_in_order() -> None:
    r = _every_field_set()
    values = orjson.loads(encode_record(r))
    assert len(values) == len(UsageRecord._fields)  # a new field must be encoded
    for name, value in zip(UsageRecord._fields, values, strict=True):
        got = getattr(r, name)
        assert value == (str(got) if isinstance(got, Decimal) else got), name
    assert decode_record(encode_record(r)) == r


def test_lines_of_older_and_newer_versions_decode() -> None:
    r = _every_field_set()
    as_object = {name: getattr(r, name) for name in UsageRecord._fields}
    as_object |= {"price": str(r.price), "compute_cost": str(r.compute_cost), "gone": 1}
    assert decode_record(orjson.dumps(as_object)) == r  # before lines were arrays
    newer = [*orjson.loads(encode_record(r)), "a field added later"]
    assert decode_record(orjson.dumps(newer)) == r
    older = orjson.loads(encode_record(r._replace(pool_micros=0)))[:-1]  # before pool_micros
    assert decode_record(orjson.dumps(older)) == r._replace(pool_micros=0)


async def test_append_then_flush(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal)
    assert flusher.interval_s == 0.2 and flusher.name
    for i in range(5):
        outbox.append(make_record(f"req_{i}", price="0.0015"))
    await flusher.step(0.0)
    assert await _counts(engine) == (5, 5)
    assert await journal.tenant_balance(tenant) == D("-0.0075")
    assert await journal.balance("platform:revenue:inference") == D("-0.0075")
    await flusher.step(0.0)
    assert await _counts(engine) == (5, 5)
    assert await journal.check() == []


async def test_crash_recovery_charges_each_record_once(
    tmp_path: Path, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    path = tmp_path / "usage.outbox"
    box = UsageOutbox(path)
    flusher = OutboxFlusher(box, engine, journal)
    for i in range(3):
        box.append(make_record(f"early_{i}", price="0.01"))
    await flusher.step(0.0)  # some flushed before the crash
    for i in range(7):
        box.append(make_record(f"late_{i}", price="0.01"))
    with open(path, "ab") as f:  # a record torn by the crash
        f.write(encode_record(make_record("torn", price="5"))[:40])
    box.close()  # the process dies: nothing else is flushed
    del box, flusher

    box2 = UsageOutbox(path)
    try:
        flusher2 = OutboxFlusher(box2, engine, journal)
        assert await flusher2.recover() >= 7
        assert await _counts(engine) == (10, 10)
        assert await journal.tenant_balance(tenant) == D("-0.10")
        assert await flusher2.recover() == 0
        box2.append(make_record("after", price="0.01"))  # the torn line did not eat it
        await flusher2.recover()
        assert await _counts(engine) == (11, 11)
        assert await journal.tenant_balance(tenant) == D("-0.11")
        assert box2.skipped == 1
        assert await journal.check() == []
    finally:
        box2.close()


async def test_partial_line_waits_until_complete(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal)
    line = encode_record(make_record("slow", price="0.5"))
    fd = os.open(outbox.path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line[:30])
        await flusher.step(0.0)
        assert await _counts(engine) == (0, 0)
        os.write(fd, line[30:])
    finally:
        os.close(fd)
    await flusher.step(0.0)
    assert await _counts(engine) == (1, 1)


async def test_zero_price_and_duplicates(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal)
    outbox.append(make_record("free", price="0"))
    outbox.append(make_record("dup", price="0.2"))
    outbox.append(make_record("dup", price="0.2"))
    await flusher.step(0.0)
    outbox.append(make_record("dup", price="0.2"))
    await flusher.step(0.0)
    assert await _counts(engine) == (2, 1)
    assert await journal.tenant_balance(tenant) == D("-0.2")
    assert await journal.check() == []


async def test_reflushing_a_committed_region_charges_nothing(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal)
    for i in range(4):
        outbox.append(make_record(f"r{i}"))
    await flusher.step(0.0)
    async with engine.begin() as conn:  # lose the committed position
        await conn.exec_driver_sql("DELETE FROM settings WHERE key = 'outbox_offset'")
    fresh = OutboxFlusher(outbox, engine, journal)
    await fresh.step(0.0)
    assert await _counts(engine) == (4, 4)
    assert await journal.tenant_balance(tenant) == D("-0.004")


async def test_rotation_after_everything_is_flushed(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal, rotate_bytes=1)
    gen = outbox.generation
    for i in range(3):
        outbox.append(make_record(f"a{i}"))
    await flusher.step(0.0)  # flushes
    await flusher.step(0.0)  # nothing new: rotates
    assert outbox.generation != gen
    assert outbox.size() < 100
    outbox.append(make_record("b0"))
    await flusher.step(0.0)
    assert await _counts(engine) == (4, 4)


async def test_crash_between_truncate_and_commit(
    tmp_path: Path, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    path = tmp_path / "usage.outbox"
    box = UsageOutbox(path)
    flusher = OutboxFlusher(box, engine, journal)
    for i in range(3):
        box.append(make_record(f"a{i}"))
    await flusher.step(0.0)
    assert box.rotate(box.size()) is not None  # truncated; the new position never committed
    box.append(make_record("b0"))
    box.close()
    box2 = UsageOutbox(path)
    try:
        await OutboxFlusher(box2, engine, journal).recover()
    finally:
        box2.close()
    assert await _counts(engine) == (4, 4)
    assert await journal.tenant_balance(tenant) == D("-0.004")


async def test_appends_during_a_flush_are_not_lost(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal)
    outbox.append(make_record("x0"))
    task = asyncio.create_task(flusher.step(0.0))
    for i in range(1, 20):
        await asyncio.sleep(0)
        outbox.append(make_record(f"x{i}"))
    await task
    await flusher.recover()
    assert await _counts(engine) == (20, 20)


async def test_position_is_committed_with_the_rows(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    flusher = OutboxFlusher(outbox, engine, journal)
    outbox.append(make_record("p0"))
    await flusher.step(0.0)
    async with engine.connect() as conn:
        raw = (
            await conn.exec_driver_sql("SELECT value FROM settings WHERE key = 'outbox_offset'")
        ).scalar_one()
    pos = OutboxPosition.decode(raw)
    assert pos == OutboxPosition(outbox.generation, outbox.size())


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError, match="not a cambist usage outbox"):
        UsageOutbox(path)


def _filled(path: Path, make_record: Make, n: int
            ) -> tuple[UsageOutbox, int, list[UsageRecord]]:
    """An outbox at ``path`` with ``n`` records appended, where its records start."""
    box = UsageOutbox(path)
    start = box.start_of(OutboxPosition(box.generation, 0))
    records = [make_record(f"req_{i}", price=f"0.00{i + 1}") for i in range(n)]
    for r in records:
        box.append(r)
    return box, start, records


async def test_the_appender_and_a_restart_read_alike(tmp_path: Path, make_record: Make
                                                     ) -> None:
    """The appending process and another reader (a restart) see the same
    records and ends, in batches, across a partial read and a rotation."""
    path = tmp_path / "usage.outbox"
    box, start, records = _filled(path, make_record, 40)
    try:
        fresh = UsageOutbox(path)  # what a restarted process reads
        try:
            for limit in (1_000, 3_000, 1 << 20):
                got_mem, end_mem = box.read(start, limit)
                got_file, end_file = fresh.read(start, limit)
                assert (got_mem, end_mem) == (got_file, end_file)
                assert got_mem == records[:len(got_mem)] and got_mem
        finally:
            fresh.close()
        # reading on from a position
        half, mid = box.read(start, 2_000)
        rest, end = box.read(mid)
        assert half + rest == records and end == os.path.getsize(path)
        assert box.read(end) == ([], end)
        new = box.rotate(end)
        assert new is not None
        later = make_record("req_after", price="0.001")
        box.append(later)
        assert box.read(box.start_of(new)) == ([later], os.path.getsize(path))
    finally:
        box.close()


def test_appended_records_are_not_kept(tmp_path: Path, make_record: Make) -> None:
    """The outbox keeps no record: a record lives no longer than the request
    that made it (records kept for the flusher cost the gateway's other work
    its caches), yet reads give it back equal, and the flusher and the
    reporter reading the same batch decode it once."""
    box = UsageOutbox(tmp_path / "usage.outbox")
    try:
        start = box.start_of(OutboxPosition(box.generation, 0))
        record = make_record("req_kept", price="0.0123")._replace(ttft_ms=12.5, stream=True)
        before = sys.getrefcount(record)
        box.append(record)
        assert sys.getrefcount(record) == before
        box.append(make_record("req_next", price="0"))
        batch = box.read_batch(start, keep=True)  # the flusher's
        got, lines, end = batch.records, batch.lines, batch.end
        assert got[0] == record and got[0] is not record and lines is not None
        assert box.read_batch(start, end - start) is batch  # the reporter's: the same
        assert batch.charges() == [("req_kept", record.tenant_id, 12_300, 0, 0,
                                    record.created_at), ("req_next", record.tenant_id, 0, 0, 0,
                                                         record.created_at)]
        first, mid = box.read(start, len(lines.split(b"\n")[0]) + 1)
        assert first == [record] and mid < end
        box.release(end)
        assert box.read(end) == ([], end)
    finally:
        box.close()


def test_reading_pending_records_leaves_the_flusher_its_batches(
        tmp_path: Path, make_record: Make) -> None:
    """A wallet reload reads every pending record (past the committed position,
    in several reads): the flusher's batches are unchanged by it, their lines
    sent as they are."""
    box, start, records = _filled(tmp_path / "usage.outbox", make_record, 30)
    try:
        position = OutboxPosition(box.generation, start)
        assert box.pending(position) == records
        got, lines, end = box.read_lines(start, 2_000)
        assert lines is not None and got == records[:len(got)] and 0 < len(got) < 30
        assert box.pending(OutboxPosition(box.generation, end)) == records[len(got):]
        rest, more, last = box.read_lines(end)
        assert more is not None and got + rest == records
        assert box.read_lines(last) == ([], b"", last)  # nothing after the end yet
    finally:
        box.close()


async def test_lines_sent_are_the_file_bytes(tmp_path: Path, make_record: Make) -> None:
    """The flusher sends the lines as they are in the file when each is one
    :func:`encode_record` writes now, for the appending process and for a
    reader after a restart alike, batch after batch and past a rotation."""
    path = tmp_path / "usage.outbox"
    box, start, records = _filled(path, make_record, 12)
    try:
        got, lines, end = box.read_lines(start)
        assert got == records and lines == path.read_bytes()[start:end]
        assert lines == b"".join(encode_record(r) for r in records)
        fresh = UsageOutbox(path)
        try:
            assert fresh.read_lines(start) == (records, lines, end)
        finally:
            fresh.close()
        pos = start
        while True:
            got, lines, nxt = box.read_lines(pos, 700)
            if nxt == pos:
                break
            assert lines == path.read_bytes()[pos:nxt] and len(got) == lines.count(b"\n")
            pos = nxt
        new = box.rotate(pos)
        assert new is not None
        later = [make_record(f"req_after_{i}", price="0.001") for i in range(3)]
        for r in later:
            box.append(r)
        at = box.start_of(new)
        got, lines, end = box.read_lines(at)
        assert got == later and lines == path.read_bytes()[at:end]
    finally:
        box.close()


async def test_older_and_torn_lines_are_read_one_by_one(tmp_path: Path, make_record: Make
                                                        ) -> None:
    """A batch holding a line of an older version or a torn one is decoded line
    by line (the torn one skipped and counted) and has no lines to send as
    they are: the flusher re-encodes its records."""
    path = tmp_path / "usage.outbox"
    box, start, records = _filled(path, make_record, 3)
    try:
        old = make_record("req_old", price="0.5")
        as_object = {k: str(v) if isinstance(v, Decimal) else v
                     for k, v in old._asdict().items()}
        shorter = orjson.loads(encode_record(make_record("req_short")))[:-1]  # no pool_micros
        with open(path, "ab") as f:
            f.write(orjson.dumps(as_object) + b"\n" + orjson.dumps(shorter) + b"\n")
            f.write(encode_record(make_record("req_torn"))[:40] + b"\n")
        box.append(make_record("req_last"))
        got, lines, end = box.read_lines(start)
        assert lines is None and end == os.path.getsize(path)
        assert [r.request_id for r in got] == ["req_0", "req_1", "req_2", "req_old",
                                               "req_short", "req_last"]
        assert got[3] == old and box.skipped == 1
        # The current lines before them still go as they are.
        first, lines, _ = box.read_lines(start, len(encode_record(records[0])) * 3)
        assert first == records and lines == b"".join(encode_record(r) for r in records)
    finally:
        box.close()


async def test_a_position_moved_elsewhere_stops_the_flush_writing_nothing(
    outbox: UsageOutbox, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    """Two flushers on one outbox key (a misconfiguration): the one whose
    position is stale writes nothing and says so, on every backend (on
    PostgreSQL the compare-and-set and the writes are one statement)."""
    first = OutboxFlusher(outbox, engine, journal)
    outbox.append(make_record("m0"))
    await first.step(0.0)
    stale = OutboxFlusher(outbox, engine, journal)
    await stale._current()  # reads the position now
    outbox.append(make_record("m1"))
    await first.step(0.0)  # moves it on
    outbox.append(make_record("m2"))
    with pytest.raises(RuntimeError, match="changed under this flusher"):
        await stale.step(0.0)
    assert await _counts(engine) == (2, 2)  # m2 was not written by the stale flusher
    await first.step(0.0)
    assert await _counts(engine) == (3, 3)
    assert await journal.check() == []
