"""The analytics queries against a migrated SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.analytics import Window, margins, summary, utilization
from cambist.store.db import migrate, open_engine, sqlite_url
from cambist.store.schema import endpoints, leases, usage

T0 = 1_767_225_600.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = sqlite_url(tmp_path / "a.db")
    migrate(url)
    eng = open_engine(url)
    async with eng.begin() as conn:
        await conn.execute(insert(leases), [dict(
            id="l1", supplier="sim", supplier_lease_id="s1", offer_id="o", sku="H100",
            gpu_name="H100", gpu_count=1, region="r", price_per_hour_micros=3_600_000,
            spot=False, owner=None, state="running", created_at=T0, started_at=T0)])
        await conn.execute(insert(endpoints), [dict(
            id="ep1", model="m", url="http://x", supplier="sim", owner=None, healthy=True,
            deployment="d1", lease_id="l1", sku="H100", region="r",
            cost_per_hour_micros=3_600_000, capacity_tok_s=10.0, max_concurrency=8,
            context_length=8192, created_at=T0, kind="deployment")])
        await conn.execute(insert(usage), [dict(
            request_id=f"r{i}", tenant_id=tenant, key_id="k", model="m", endpoint_id="ep1",
            supplier="sim", prompt_tokens=10, completion_tokens=1000, reasoning_tokens=0,
            price_micros=50_000, compute_cost_micros=100_000, price_version=1, status="ok",
            created_at=T0 + 10 * i) for i, tenant in enumerate(["a", "a", "b"])])
    yield eng
    await eng.dispose()


async def test_summary_from_store(engine: AsyncEngine) -> None:
    w = Window(T0, T0 + 1000)
    s = await summary(engine, w)
    assert s["platform"]["utilization"] == pytest.approx(3000 / 10_000)
    assert s["platform"]["lease_cost"] == 1  # 1000 s at $3.60/h
    assert s["total"]["revenue"] * 1000 == 150
    assert s["total"]["effective_cost"] == 1
    mine = await summary(engine, w, tenant="b")
    assert "platform" not in mine and mine["total"]["requests"] == 1
    m = await margins(engine, w, "tenant")
    assert {r["key"] for r in m["data"]} == {"a", "b"}
    u = await utilization(engine, w, "deployment")
    assert u["data"][0]["key"] == "d1"
    assert (await utilization(engine, w, "deployment", tenant="b"))["data"] == []
