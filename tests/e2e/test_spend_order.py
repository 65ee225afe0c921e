"""Spend order through a real exchange: a tenant with no prepaid credit, on a
plan with a daily allowance, makes requests through the OpenAI SDK until the
allowance is spent, then gets 402; its usage records, ``GET /v1/balance``,
``cambist balance`` and ``cambist ledger check`` show the split."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

ALLOWANCE = Decimal("0.0002")  # a handful of small llama-3.1-8b requests
CONFIG = f"""
default_plan = "trial"

[[plans]]
name = "trial"
requests_per_minute = 1000
tokens_per_minute = 1000000
daily_allowance = "{ALLOWANCE}"
"""
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def granted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExchangeProcess]:
    home: Path = tmp_path_factory.mktemp("spend") / "home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(CONFIG)
    ex = ExchangeProcess(home).start()
    try:
        r = ex.cli("deploy", "llama-3.1-8b", "--name", "spend-8b", "--timeout", "120")
        assert r.returncode == 0, r.stdout + r.stderr
        yield ex
    finally:
        assert ex.stop() == 0, ex.output()


def test_allowance_then_402(granted: ExchangeProcess) -> None:
    with granted.client() as admin:
        t = admin.post("/v1/tenants", json={"name": "trial-tenant"}).json()
    tenant = t["id"]
    with granted.client(t["key"]) as own:
        bal = own.get("/v1/balance").json()["data"][0]
        assert bal["plan"] == "trial"
        assert Decimal(bal["prepaid"]) == 0 and Decimal(bal["pool_left"]) == 0
        assert Decimal(bal["allowance_left"]) == ALLOWANCE
        k = own.post("/v1/keys", json={"scope": "inference", "name": "agent"})
        assert k.status_code == 201, k.text
    client = openai.OpenAI(base_url=f"{granted.base_url}/v1", api_key=k.json()["key"],
                           max_retries=0, timeout=30)

    costs: list[Decimal] = []
    refused: openai.APIStatusError | None = None
    for _ in range(60):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="llama-3.1-8b", messages=MESSAGES, max_tokens=64)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            refused = exc
            break
        costs.append(Decimal(raw.headers["x-cambist-cost"]))
    assert refused is not None, f"never refused after {len(costs)} requests"
    assert refused.status_code == 402
    message = refused.response.json()["error"]["message"]
    assert "daily allowance" in message and "cambist credits add" in message
    assert len(costs) >= 2 and all(c > 0 for c in costs)
    spent = sum(costs, Decimal(0))
    assert spent <= ALLOWANCE

    # The flusher moves the records into the table within a moment.
    with granted.client(t["key"]) as own:
        deadline = time.monotonic() + 20
        while True:
            records = own.get("/v1/usage", params={"limit": 1000}).json()["data"]
            if len(records) == len(costs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(records) == len(costs)
        assert all(r["paid_allowance"] == r["price"] for r in records), records
        assert all(Decimal(r["paid_pool"]) == Decimal(r["paid_prepaid"]) == 0 for r in records)
        assert sum(Decimal(r["price"]) for r in records) == spent
        bal = own.get("/v1/balance").json()["data"][0]
    assert Decimal(bal["prepaid"]) == 0 and Decimal(bal["journal_balance"]) == 0
    assert Decimal(bal["allowance_left"]) == ALLOWANCE - spent

    shown = granted.cli("balance", "--tenant", tenant)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "trial" in shown.stdout and "allowance left" in shown.stdout
    check = granted.cli("ledger", "check")
    assert check.returncode == 0, check.stdout + check.stderr

    # Prepaid credit takes over once the allowance is spent.
    with granted.client() as admin:
        r = admin.post("/v1/credits", json={"tenant": tenant, "amount": "1",
                                            "idempotency_key": "spend-topup"})
        assert r.status_code == 201, r.text
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=MESSAGES, max_tokens=64)  # type: ignore[arg-type]
    assert Decimal(raw.headers["x-cambist-cost"]) > 0
