from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.usage import UsageRecord
from cambist.ledger.flusher import OutboxFlusher
from cambist.ledger.journal import Journal
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.queries import usage_records, usage_summary

D = Decimal


async def test_usage_queries(
    tmp_path: Path,
    engine: AsyncEngine,
    journal: Journal,
    tenant: str,
    make_record: Callable[..., UsageRecord],
) -> None:
    box = UsageOutbox(tmp_path / "usage.outbox")
    try:
        box.append(make_record("a", price="0.1", created_at=100.0, model="m1"))
        box.append(make_record("b", price="0.2", created_at=200.0, model="m1"))
        box.append(make_record("c", price="0.05", created_at=300.0, model="m2"))
        box.append(make_record("d", tenant_id="ten_other", price="9", created_at=400.0))
        await OutboxFlusher(box, engine, journal).recover()
    finally:
        box.close()

    rows = await usage_records(engine, tenant)
    assert [r["request_id"] for r in rows] == ["c", "b", "a"]
    assert rows[0]["price"] == D("0.05") and rows[0]["compute_cost"] == D("0.0002")
    assert rows[0]["stream"] is False and "price_micros" not in rows[0]
    assert [r["request_id"] for r in await usage_records(engine, tenant, since=200.0)] == ["c", "b"]
    assert len(await usage_records(engine, None, limit=2)) == 2

    summary = await usage_summary(engine, tenant)
    assert summary == [
        {
            "model": "m1",
            "requests": 2,
            "prompt_tokens": 200,
            "completion_tokens": 100,
            "price": D("0.3"),
            "compute_cost": D("0.0004"),
        },
        {
            "model": "m2",
            "requests": 1,
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "price": D("0.05"),
            "compute_cost": D("0.0002"),
        },
    ]
    everyone = await usage_summary(engine, None)
    assert everyone[0]["model"] == "llama-3-8b" and everyone[0]["price"] == D("9")
    assert await usage_summary(engine, "ten_nobody") == []
