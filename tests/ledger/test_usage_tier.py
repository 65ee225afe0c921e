"""Issue 6: each usage record names the privacy tier it was served under,
through the outbox (old lines without the field included) into the ``usage``
table on both backends, and back out of the usage queries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import UsageOutbox, decode_record, encode_record
from cambist.ledger.queries import usage_records

Make = Callable[..., UsageRecord]

# A line exactly as the outbox wrote it before ``privacy_tier`` existed.
OLD_LINE = (
    b'{"request_id":"req_old","tenant_id":"ten_acme","key_id":"key_1",'
    b'"model":"llama-3-8b","endpoint_id":"ep_1","supplier":"sim","prompt_tokens":100,'
    b'"completion_tokens":50,"reasoning_tokens":0,"price":"0.001","compute_cost":"0.0002",'
    b'"price_version":1,"status":"ok","created_at":1767225600.0,"latency_ms":12.5,'
    b'"ttft_ms":null,"stream":false}\n'
)


def test_tier_round_trips_through_a_line(make_record: Make) -> None:
    rec = make_record("req_zr")._replace(privacy_tier="zero_retention")
    line = encode_record(rec)
    assert "zero_retention" in orjson.loads(line)
    assert decode_record(line) == rec


def test_old_line_without_tier_reads_as_standard() -> None:
    rec = decode_record(OLD_LINE)
    assert rec.privacy_tier == "standard"
    assert rec.request_id == "req_old" and rec.latency_ms == 12.5
    # Re-encoding writes the field, and that line decodes to the same record.
    assert decode_record(encode_record(rec)) == rec


async def test_flush_writes_each_tier_and_queries_filter_by_it(
    tmp_path: Path, engine: AsyncEngine, journal: Journal, tenant: str, make_record: Make
) -> None:
    """Runs on SQLite (multi-row INSERT) and PostgreSQL (unnest arrays)."""
    box = UsageOutbox(tmp_path / "usage.outbox")
    try:
        box.append(make_record("req_zr", created_at=300.0)._replace(
            privacy_tier="zero_retention"))
        box.append(make_record("req_conf", created_at=200.0)._replace(
            privacy_tier="confidential"))
        box.append(make_record("req_std", created_at=100.0))
        with open(box.path, "ab") as f:  # left behind by an older version
            f.write(OLD_LINE)
        await OutboxFlusher(box, engine, journal).recover()
    finally:
        box.close()
    assert box.skipped == 0

    rows = await usage_records(engine, tenant)
    assert {r["request_id"]: r["privacy_tier"] for r in rows} == {
        "req_zr": "zero_retention", "req_conf": "confidential",
        "req_std": "standard", "req_old": "standard",
    }
    only_zr = await usage_records(engine, tenant, privacy_tier="zero_retention")
    assert [r["request_id"] for r in only_zr] == ["req_zr"]
    standard = await usage_records(engine, tenant, privacy_tier="standard")
    assert {r["request_id"] for r in standard} == {"req_std", "req_old"}
    assert await usage_records(engine, tenant, privacy_tier="anonymous") == []
    assert await journal.check() == []


async def test_rows_inserted_without_a_tier_default_to_standard(
    engine: AsyncEngine, tenant: str
) -> None:
    """The server default covers writers that predate the column."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO usage (request_id, tenant_id, key_id, model, prompt_tokens, "
            "completion_tokens, reasoning_tokens, price_micros, compute_cost_micros, "
            "price_version, status, created_at, latency_ms, stream) VALUES "
            "('req_raw', 'ten_acme', 'key_1', 'm', 1, 1, 0, 0, 0, 1, 'ok', 5.0, 0.0, false)")
    [row] = await usage_records(engine, tenant)
    assert row["request_id"] == "req_raw" and row["privacy_tier"] == "standard"
