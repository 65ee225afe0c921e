"""The price history through a real ``cambist up``: bars, summary, trades, the CLI."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

SKU = "H100-80GB-SXM"


def _poll(fn: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def test_summary_lists_every_sku_with_prices_now(exchange: ExchangeProcess) -> None:
    with exchange.client(exchange.connection["demo_key"]) as c:  # any key reads market data
        body = _poll(lambda: (r := c.get("/v1/market/summary").json())["as_of"] and r)
    assert body and body["object"] == "list"
    skus = {s["sku"]: s for s in body["data"]}
    assert SKU in skus and len(skus) >= 5
    h100 = skus[SKU]
    assert float(h100["best_price"]) > 0 and float(h100["median_price"]) >= float(
        h100["best_price"])
    assert h100["available_gpus"] > 0 and len(h100["hourly_closes"]) == 24
    assert h100["hourly_closes"][-1]["close"] is not None
    assert h100["change_24h_pct"] is None  # the exchange is younger than a day


def test_current_minute_bar_exists(exchange: ExchangeProcess) -> None:
    def current() -> dict | None:
        with exchange.client() as c:
            r = c.get("/v1/market/prices", params={"gpu": SKU, "interval": "1m"})
        assert r.status_code == 200, r.text
        minute = int(time.time() // 60) * 60
        return next((b for b in r.json()["data"] if b["start"] == minute), None)

    bar = _poll(current)
    assert bar is not None, "no bar for the current minute"
    assert bar["sku"] == SKU and bar["region"] is None and bar["supplier"] is None
    assert float(bar["low"]) <= min(float(bar["open"]), float(bar["close"]))
    assert float(bar["high"]) >= max(float(bar["open"]), float(bar["close"]))
    assert bar["end"] - bar["start"] == 60 and bar["observations"] >= 1
    with exchange.client() as c:
        offers = c.get("/v1/market/offers", params={"gpu": SKU, "spot": "false"}).json()
        supplier = offers["data"][0]["supplier"]
        per_key = c.get("/v1/market/prices", params={"gpu": SKU, "interval": "1h",
                                                     "supplier": supplier}).json()
    assert per_key["data"] and {b["supplier"] for b in per_key["data"]} == {supplier}
    assert all(b["region"] for b in per_key["data"])


def test_bad_queries_get_clear_errors(exchange: ExchangeProcess) -> None:
    with exchange.client() as c:
        r = c.get("/v1/market/prices", params={"gpu": SKU, "interval": "5m"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "interval"
        r = c.get("/v1/market/prices", params={"gpu": "H100"})
        assert r.status_code == 400 and SKU in r.json()["error"]["message"]
        r = c.get("/v1/market/prices", params={"gpu": "Z999"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "gpu"
        r = c.get("/v1/market/prices", params={"gpu": SKU, "interval": "1m", "since": 0})
        assert r.status_code == 400 and "coarser" in r.json()["error"]["message"]
    with exchange.client("not-a-key") as c:
        assert c.get("/v1/market/summary").status_code == 401


def test_trades_hide_tenants_from_non_admins(exchange: ExchangeProcess) -> None:
    with exchange.client() as admin:
        lease = admin.post("/v1/leases", json={"gpu": "L4", "client_token": "e2e-trade"})
        assert lease.status_code in (200, 201), lease.text
        lease_id = lease.json()["id"]
        try:
            def traded() -> list[dict]:
                rows = admin.get("/v1/market/trades", params={"gpu": "L4"}).json()["data"]
                return [t for t in rows if t.get("lease_id") == lease_id]

            (mine,) = _poll(traded)
        finally:
            admin.post(f"/v1/leases/{lease_id}/release")
    assert mine["sku"].startswith("L4") and mine["owner"] is None
    assert mine["gpu_count"] >= 1 and float(mine["price_per_hour"]) > 0
    assert mine["duration_s"] >= 0 and mine["start"] > 0
    with exchange.client(exchange.connection["demo_key"]) as c:
        rows = c.get("/v1/market/trades", params={"limit": 50}).json()["data"]
    assert rows and all("owner" not in t and "lease_id" not in t for t in rows)


def test_cli_market_summary_and_history(exchange: ExchangeProcess) -> None:
    r = exchange.cli("market")
    assert r.returncode == 0, r.stderr
    assert SKU in r.stdout and any(ch in r.stdout for ch in "▁▂▃▄▅▆▇█")
    r = exchange.cli("market", "--gpu", SKU, "--history", "90m", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["interval"] == "1m" and data["gpu"] == SKU and data["data"]
    r = exchange.cli("market", "--gpu", SKU, "--history", "7d", "--interval", "1h")
    assert r.returncode == 0, r.stderr
    assert "1h bars" in r.stdout and "overall" in r.stdout


def test_cli_rejects_a_bad_history(exchange: ExchangeProcess) -> None:
    r = exchange.cli("market", "--gpu", SKU, "--history", "7x")
    assert r.returncode == 1
    assert "--history takes a duration such as 90m, 24h, 7d or 30d" in r.stderr
    r = exchange.cli("market", "--gpu", "H100", "--history", "24h")
    assert r.returncode == 1 and "name one SKU" in r.stderr
