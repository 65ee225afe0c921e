"""Per-key spend budgets through a real exchange: set with the CLI, spent
through the OpenAI SDK until the hard stop refuses (402 ``key_budget_exceeded``),
the remaining-budget header on every response, one soft-alert event, the
budget in ``GET /v1/keys``, bad input refused, another tenant refused with 404
(as for an unknown key), and the budget and its spend kept across rotation
through the API and the CLI."""

from __future__ import annotations

import json
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
        # Another tenant's key: not found either way round (its id is not revealed).
        assert own.put(f"/v1/keys/{other_key_id}/budget",
                       json={"limit": "100"}).status_code == 404
    with exchange.client(other_admin) as other:
        r3 = other.put(f"/v1/keys/{key_id}/budget", json={"limit": "100"})
        assert r3.status_code == 404, r3.text
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


def test_another_tenants_key_is_not_found(exchange: ExchangeProcess) -> None:
    suffix = uuid.uuid4().hex[:6]
    _, admin_a, key_a, _ = _tenant(exchange, f"budget-404a-{suffix}")
    _, admin_b, _, _ = _tenant(exchange, f"budget-404b-{suffix}")
    with exchange.client(admin_b) as b:
        theirs = b.put(f"/v1/keys/{key_a}/budget", json={"limit": "1"})
        unknown = b.put("/v1/keys/key_nope/budget", json={"limit": "1"})
        assert theirs.status_code == unknown.status_code == 404, theirs.text
        assert theirs.json()["error"]["type"] == unknown.json()["error"]["type"]
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"]
        # Every key route answers the same for another tenant's key.
        for action in ("revoke", "rotate"):
            assert b.post(f"/v1/keys/{key_a}/{action}").status_code == 404, action
        assert b.put(f"/v1/keys/{key_a}/privacy",
                     json={"privacy_tiers": None}).status_code == 404
    with exchange.client(admin_a) as a:  # nothing changed, and the owner still may
        assert a.put(f"/v1/keys/{key_a}/budget", json={"limit": "1"}).status_code == 200
        [row] = [k for k in a.get("/v1/keys").json()["data"] if k["id"] == key_a]
        assert row["revoked_at"] is None and Decimal(row["budget"]["limit"]) == 1


def test_rotation_keeps_the_budget_and_its_spend(exchange: ExchangeProcess,
                                                 llama8b: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    _, admin_key, key_id, secret = _tenant(exchange, f"budget-rot-{suffix}")
    raw = _sdk(exchange, secret).chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
    spent = Decimal(raw.headers["x-cambist-cost"])
    limit, alert = spent * 3, spent * 2
    with exchange.client(admin_key) as own:
        r = own.put(f"/v1/keys/{key_id}/budget",
                    json={"limit": str(limit), "alert": str(alert), "period": "day"})
        assert r.status_code == 200, r.text
        # API rotation: the new key has the budget and this period's spend.
        rotated = own.post(f"/v1/keys/{key_id}/rotate", json={"idempotency_key": suffix})
        assert rotated.status_code == 201, rotated.text
    k2 = rotated.json()
    assert k2["rotated_from"] == key_id
    b2 = k2["budget"]
    assert (Decimal(b2["limit"]), Decimal(b2["alert"]), b2["period"]) == (limit, alert, "day")
    assert Decimal(b2["spent"]) == spent and Decimal(b2["remaining"]) == limit - spent

    raw = _sdk(exchange, k2["key"]).chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
    spent += Decimal(raw.headers["x-cambist-cost"])
    assert Decimal(raw.headers[HEADER]) == limit - spent

    # CLI rotation of the rotated key: still the same budget and spend.
    cli = exchange.cli("keys", "rotate", k2["id"], "--json", key=admin_key)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    k3 = json.loads(cli.stdout)
    assert Decimal(k3["budget"]["limit"]) == limit and Decimal(k3["budget"]["spent"]) == spent
    shown = exchange.cli("keys", "rotate", k3["id"], key=admin_key)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"Budget kept: ${limit}" in shown.stdout and "per day" in shown.stdout
    k4_id = shown.stdout.split("New key ")[1].split()[0]
    k4_secret = shown.stdout.split("store it now): ")[1].split()[0]
    assert k4_id.startswith("key") and k4_secret.startswith("cb-")

    # The newest key spends what is left, then the hard stop refuses it.
    client = _sdk(exchange, k4_secret)
    for _ in range(10):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="llama-3.1-8b", messages=MESSAGES, max_tokens=8)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            assert exc.status_code == 402, exc.response.text
            assert exc.response.json()["error"]["code"] == "key_budget_exceeded"
            break
        spent += Decimal(raw.headers["x-cambist-cost"])
        assert Decimal(raw.headers[HEADER]) == max(limit - spent, Decimal(0))
    else:
        pytest.fail("the rotated key was never refused: its spend was reset")
    assert spent <= limit
