"""``cambist quote`` and ``GET /v1/market/quote`` through a real exchange."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e


def test_quote_sizes_replicas_for_the_demand(exchange: ExchangeProcess) -> None:
    with exchange.client(exchange.connection["demo_key"]) as c:
        r = c.get("/v1/market/quote", params={"model": "llama-3.1-8b",
                                              "tokens_per_second": 5000, "region": "us"})
        assert r.status_code == 200, r.text
        body = r.json()
        rows = body["data"]
        assert rows and body["total"] >= len(rows)
        costs = [Decimal(q["cost_per_hour"]) for q in rows]
        assert costs == sorted(costs)
        for q in rows:
            assert q["region"].startswith("us") and q["replicas"] <= q["available"]
            assert q["replicas"] == max(1, math.ceil(5000 / q["tokens_per_s_per_replica"]
                                                     - 1e-6))
            assert q["headroom"] >= -1e-3
            assert Decimal(q["cost_per_hour"]) == Decimal(q["price_per_hour"]) * q["replicas"]
        tight = c.get("/v1/market/quote", params={"model": "llama-3.1-8b", "ttft_ms": 300})
        assert all(q["ttft_ms"] <= 300 for q in tight.json()["data"])
        bad = c.get("/v1/market/quote", params={"model": "gpt-9"})
        assert bad.status_code == 400
        assert "llama-3.1-8b" in bad.json()["error"]["message"]


def test_quote_command(exchange: ExchangeProcess) -> None:
    r = exchange.cli("quote", "llama-3.1-70b", "--tokens-per-second", "2000", "--limit", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "llama-3.1-70b" in r.stdout and "$/Mtok" in r.stdout
    j = exchange.cli("quote", "qwen2.5-7b", "--json", "--limit", "3")
    assert j.returncode == 0 and len(json.loads(j.stdout)["data"]) <= 3
    bad = exchange.cli("quote", "gpt-9")
    assert bad.returncode == 1 and "catalog" in (bad.stdout + bad.stderr)
