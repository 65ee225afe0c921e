"""Per-key spend budgets through a real exchange: set with the CLI, spent
through the OpenAI SDK until the hard stop refuses (402 ``key_budget_exceeded``),
the remaining-budget header on every response, one soft-alert event, the
budget in ``GET /v1/keys``, bad input refused, and another tenant refused."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

HEADER = "x-cambist-key-budget-remaining"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def _tenant(ex: ExchangeProcess, name: str) -> tuple[str, str, str, str]:
    """A new tenant with credit: (tenant id, its admin key, inference key id, secret)."""
    with ex.client() as admin:
        t = admin.post("/v1/tenants", json={"name": name}).json()
        r = admin.post("/v1/credits", json={"tenant": t["id"], "amount": "5",
                                            "idempotency_key": f"budget-{name}"})
        assert r.status_code == 201, r.text
    with ex.client(t["key"]) as own:
        k = own.post("/v1/keys", json={"scope": "inference", "name": "budgeted"})
        assert k.status_code == 201, k.text
    return t["id"], t["key"], k.json()["id"], k.json()["key"]


def _sdk(ex: ExchangeProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ex.base_url}/v1", api_key=key, max_retries=0, timeout=30)


def test_key_budget_end_to_end(exchange: ExchangeProcess, llama8b: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    tenant, admin_key, key_id, secret = _tenant(exchange, f"budget-a-{suffix}")
    _, other_admin, other_key_id, _ = _tenant(exchange, f"budget-b-{suffix}")
    client = _sdk(exchange, secret)

    # One request without a budget: no header; its cost sizes the budget.
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
    assert HEADER not in raw.headers
    cost = Decimal(raw.headers["x-cambist-cost"])
    assert cost > 0
    limit, alert = cost * 4, cost * 2

    r = exchange.cli("keys", "budget", key_id, "--limit", str(limit), "--alert", str(alert),
                     "--period", "day")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "per day" in r.stdout

    # Spend until refused; the header only ever goes down.
    remaining: list[Decimal] = []
    refused: openai.APIStatusError | None = None
    for _ in range(40):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            refused = exc
            break
        remaining.append(Decimal(raw.headers[HEADER]))
    assert refused is not None, f"never refused; remaining went {remaining}"
    assert refused.status_code == 402
    body = refused.response.json()["error"]
    assert body["code"] == "key_budget_exceeded"
    assert "per day" in body["message"] and "resets at" in body["message"]
    assert len(remaining) >= 1 and remaining == sorted(remaining, reverse=True)
    assert Decimal(refused.response.headers[HEADER]) == remaining[-1]
    assert min(remaining) < limit

    # Streams are refused the same way, before anything is forwarded.
    with pytest.raises(openai.APIStatusError) as streamed:
        client.chat.completions.create(model="llama-3.1-8b", messages=MESSAGES,  # type: ignore[arg-type]
                                       max_tokens=8, stream=True)
    assert streamed.value.status_code == 402

    # GET /v1/keys shows the budget and what was spent.
    with exchange.client(admin_key) as own:
        [row] = [k for k in own.get("/v1/keys").json()["data"] if k["id"] == key_id]
        assert Decimal(row["budget"]["limit"]) == limit and row["budget"]["period"] == "day"
        assert Decimal(row["budget"]["spent"]) > alert
        # Bad input: 400, OpenAI-shaped, the budget unchanged.
        for bad in ({"limit": "-1"}, {"limit": "1", "alert": "2"},
                    {"limit": "1", "period": "week"}):
            r2 = own.put(f"/v1/keys/{key_id}/budget", json=bad)
            assert r2.status_code == 400, r2.text
            assert r2.json()["error"]["type"] == "invalid_request_error"
        # Another tenant's key: refused either way round.
        assert own.put(f"/v1/keys/{other_key_id}/budget",
                       json={"limit": "100"}).status_code in (403, 404)
    with exchange.client(other_admin) as other:
        r3 = other.put(f"/v1/keys/{key_id}/budget", json={"limit": "100"})
        assert r3.status_code in (403, 404), r3.text
    cli = exchange.cli("keys", "budget", key_id, "--limit", "100", key=other_admin)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr

    # Exactly one soft-alert event for the key (flushed within a few seconds).
    deadline = time.monotonic() + 10
    alerts: list[dict] = []
    with exchange.client() as admin:
        while time.monotonic() < deadline:
            data = admin.get("/v1/events", params={"kind": "key.budget_alert"}).json()["data"]
            alerts = [e for e in data if e["subject"] == key_id]
            if alerts:
                break
            time.sleep(0.3)
    assert len(alerts) == 1, alerts
    assert alerts[0]["data"]["tenant_id"] == tenant

    # Clearing the budget serves the key again.
    r = exchange.cli("keys", "budget", key_id, "--clear")
    assert r.returncode == 0 and "no budget" in r.stdout, r.stdout + r.stderr
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
    assert HEADER not in raw.headers
    listed = exchange.cli("keys", "list", "--tenant", tenant)
    assert listed.returncode == 0 and key_id in listed.stdout
