"""``cambist report`` and ``/v1/analytics/*`` on a real exchange."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import openai

from tests.e2e.exchange_process import ExchangeProcess


def _wait_flushed(ex: ExchangeProcess, key: str, ids: set[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    with ex.client(key) as c:
        while time.monotonic() < deadline:
            data = c.get("/v1/usage", params={"limit": 10000}).json()
            if ids <= {u["request_id"] for u in data["data"]}:
                return
            time.sleep(0.2)
    raise AssertionError(f"usage of {ids} not flushed in {timeout}s")


def test_report_after_traffic(exchange: ExchangeProcess, llama8b: str) -> None:
    key = exchange.connection["demo_key"]
    client = openai.OpenAI(base_url=exchange.base_url + "/v1", api_key=key, max_retries=0)
    ids = set()
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": f"Report {i}"}],
            max_tokens=32)
        ids.add(raw.headers["x-request-id"])
    _wait_flushed(exchange, key, ids)

    r = exchange.cli("report", "--since", "1h", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert Decimal(data["summary"]["total"]["revenue"]) > 0
    deployments = {d["key"]: d for d in data["utilization"]["data"]}
    util = deployments[llama8b]["utilization"]
    assert util is not None and 0 < util <= 1
    assert 0 <= data["summary"]["platform"]["utilization"] <= 1

    table = exchange.cli("report", "--since", "90m", "--by", "tenant")
    assert table.returncode == 0, table.stdout + table.stderr
    assert "Margins by tenant" in table.stdout and "Utilization by deployment" in table.stdout

    tenant = exchange.cli("report", "--by", "tenant", "--json", key=key)
    assert tenant.returncode == 0, tenant.stdout + tenant.stderr
    mine = json.loads(tenant.stdout)
    own = mine["summary"]["tenant"]
    assert own and "platform" not in mine["summary"]
    assert [row["key"] for row in mine["margins"]["data"]] == [own]
    assert {t["tenant_id"] for t in mine["summary"]["tenants"]} == {own}
    with exchange.client(key) as c:
        assert c.get("/v1/analytics/margins", params={"tenant": "someone-else"}).status_code \
            == 403

    bad = exchange.cli("report", "--since", "yesterday")
    assert bad.returncode == 1 and "--since takes a duration" in bad.stderr
    with exchange.client() as c:
        assert c.get("/v1/analytics/utilization", params={"by": "colour"}).status_code == 400
