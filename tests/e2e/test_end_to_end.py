"""The foundation, end to end: a real ``cambist up``, the CLI, the openai SDK."""

from __future__ import annotations

import json
import time
from decimal import ROUND_HALF_UP, Decimal

import httpx
import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

MICRO = Decimal("0.000001")


def _charge(pricing: dict, prompt: int, completion: int) -> Decimal:
    exact = (Decimal(pricing["prompt"]) * prompt
             + Decimal(pricing["completion"]) * completion) / Decimal(1_000_000)
    return exact.quantize(MICRO, rounding=ROUND_HALF_UP)


def _balance(ex: ExchangeProcess, key: str) -> Decimal:
    with ex.client(key) as c:
        return Decimal(c.get("/v1/balance").json()["data"][0]["balance"])


def _wait_flushed(ex: ExchangeProcess, key: str, request_ids: set[str],
                  timeout: float = 10) -> dict:
    """Usage once every request in ``request_ids`` has been flushed to the store."""
    deadline = time.monotonic() + timeout
    with ex.client(key) as c:
        while True:
            data = c.get("/v1/usage", params={"limit": 10000}).json()
            seen = {u["request_id"] for u in data["data"]}
            if request_ids <= seen or time.monotonic() > deadline:
                return data
            time.sleep(0.2)


def test_connection_file_is_private(exchange: ExchangeProcess) -> None:
    path = exchange.home / "connection.json"
    assert path.stat().st_mode & 0o777 == 0o600
    conn = exchange.connection
    assert conn["base_url"] == exchange.base_url
    assert conn["admin_key"] != conn["demo_key"]


def test_offers_span_many_suppliers(exchange: ExchangeProcess) -> None:
    r = exchange.cli("offers", "--json", "--limit", "5000")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    suppliers = {o["supplier"] for o in data["data"]}
    assert len(suppliers) >= 7 and "local" in suppliers
    assert {"H100-80GB-SXM", "A100-80GB", "L40S-48GB"} <= {o["sku"] for o in data["data"]}


def test_offers_ranked_per_token(exchange: ExchangeProcess) -> None:
    r = exchange.cli("offers", "--model", "llama-3.1-8b", "--sort", "price-per-token",
                     "--json", "--limit", "5000")
    assert r.returncode == 0, r.stderr
    quoted = [Decimal(o["cost_per_mtok"]) for o in json.loads(r.stdout)["data"]
              if o["cost_per_mtok"]]
    assert quoted and quoted == sorted(quoted)
    table = exchange.cli("offers", "--gpu", "H100", "--model", "llama-3.1-8b")
    assert table.returncode == 0 and "$/Mtok" in table.stdout


def test_cli_errors_name_the_fix(exchange: ExchangeProcess) -> None:
    r = exchange.cli("offers", "--gpu", "H900")
    assert r.returncode != 0
    assert "known SKUs" in r.stderr and "H100-80GB-SXM" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    r = exchange.cli("deploy", "no-such-model", "--no-wait")
    assert r.returncode != 0 and "llama-3.1-8b" in r.stderr
    r = exchange.cli("release", "lease_nope")
    assert r.returncode != 0 and "cambist leases" in r.stderr


def test_catalog(exchange: ExchangeProcess) -> None:
    r = exchange.cli("models", "--catalog", "--json")
    assert r.returncode == 0, r.stderr
    ids = {m["id"] for m in json.loads(r.stdout)["data"]}
    assert {"llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b",
            "deepseek-r1-distill-llama-70b"} <= ids


def test_deploy_call_and_pay(exchange: ExchangeProcess, llama8b: str) -> None:
    r = exchange.cli("deployments", "--json")
    assert llama8b in r.stdout
    key = exchange.connection["demo_key"]
    client = openai.OpenAI(base_url=exchange.base_url + "/v1", api_key=key, max_retries=0)
    models = {m.id: m for m in client.models.list().data}
    assert "llama-3.1-8b" in models
    pricing = models["llama-3.1-8b"].model_extra["pricing"]  # type: ignore[index]
    before = _balance(exchange, key)

    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "Say hello to Cambist"}],
        max_tokens=64)
    done = raw.parse()
    assert done.choices[0].message.content
    u1 = done.usage
    assert u1 is not None and u1.completion_tokens > 0
    cost1 = Decimal(raw.headers["x-cambist-cost"])
    assert cost1 == _charge(pricing, u1.prompt_tokens, u1.completion_tokens)

    text, usage = [], None
    raw_stream = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "Stream please"}],
        stream=True, stream_options={"include_usage": True})
    ids = {raw.headers["x-request-id"], raw_stream.headers["x-request-id"]}
    for chunk in raw_stream.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert text and usage is not None and usage.completion_tokens > 0
    cost2 = _charge(pricing, usage.prompt_tokens, usage.completion_tokens)

    data = _wait_flushed(exchange, key, ids)
    rows = {u["request_id"]: u for u in data["data"]}
    assert rows[raw.headers["x-request-id"]]["prompt_tokens"] == u1.prompt_tokens
    assert rows[raw_stream.headers["x-request-id"]]["completion_tokens"] == usage.completion_tokens
    after = _balance(exchange, key)
    assert before - after == cost1 + cost2
    r = exchange.cli("usage", key=key)
    assert r.returncode == 0 and "llama-3.1-8b" in r.stdout
    assert exchange.cli("ledger", "check").returncode == 0


BAD_INPUTS = [
    ("malformed json", b"{not json", 400),
    ("missing model", json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400),
    ("unknown model", json.dumps({"model": "nope", "messages": [
        {"role": "user", "content": "x"}]}).encode(), 404),
    ("max_tokens zero", json.dumps({"model": "llama-3.1-8b", "max_tokens": 0, "messages": [
        {"role": "user", "content": "x"}]}).encode(), 400),
    ("max_tokens absurd", json.dumps({"model": "llama-3.1-8b", "max_tokens": 10**12,
                                      "messages": [{"role": "user", "content": "x"}]}).encode(),
     400),
    ("messages not a list", json.dumps({"model": "llama-3.1-8b", "messages": "hi"}).encode(),
     400),
    ("temperature string", json.dumps({"model": "llama-3.1-8b", "temperature": "hot",
                                       "messages": [{"role": "user", "content": "x"}]}).encode(),
     400),
    ("oversized body", b'{"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "'
     + b"x" * (5 * 1024 * 1024) + b'"}]}', 413),
]


@pytest.mark.parametrize(("name", "body", "status"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_openai_error(exchange: ExchangeProcess, llama8b: str, name: str,
                                     body: bytes, status: int) -> None:
    key = exchange.connection["demo_key"]
    r = httpx.post(exchange.base_url + "/v1/chat/completions", content=body, timeout=30,
                   headers={"authorization": f"Bearer {key}",
                            "content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]


@pytest.mark.parametrize("header", [None, "Bearer cb-not-a-key", "Basic abc"])
def test_bad_key_is_401(exchange: ExchangeProcess, header: str | None) -> None:
    headers = {"authorization": header} if header else {}
    r = httpx.post(exchange.base_url + "/v1/chat/completions", headers=headers, timeout=10,
                   json={"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_insufficient_credit_is_402(exchange: ExchangeProcess, llama8b: str) -> None:
    with exchange.client() as admin:
        t = admin.post("/v1/tenants", json={"name": "broke"}).json()
    client = openai.OpenAI(base_url=exchange.base_url + "/v1", api_key=t["key"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="llama-3.1-8b",
                                       messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 402
    assert info.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    r = exchange.cli("rent", "--gpu", "L4", "--tenant", t["id"])
    assert r.returncode != 0 and "credits add" in r.stderr


def test_rent_release_charges_tenant(exchange: ExchangeProcess) -> None:
    conn = exchange.connection
    before = _balance(exchange, conn["demo_key"])
    r = exchange.cli("rent", "--gpu", "L4", "--json", key=conn["demo_key"])
    assert r.returncode == 0, r.stderr
    lease = json.loads(r.stdout)
    assert lease["owner"] == conn["demo_tenant"]
    r = exchange.cli("leases", "--json", key=conn["demo_key"])
    ids = {x["id"]: x for x in json.loads(r.stdout)["data"]}
    assert lease["id"] in ids
    with exchange.client(conn["demo_key"]) as c:
        deadline = time.monotonic() + 15
        while c.get(f"/v1/leases/{lease['id']}").json()["state"] != "running":
            assert time.monotonic() < deadline, "lease never ran"
            time.sleep(0.2)
    r = exchange.cli("release", lease["id"], key=conn["demo_key"])
    assert r.returncode == 0, r.stderr
    with exchange.client(conn["demo_key"]) as c:
        final = c.get(f"/v1/leases/{lease['id']}").json()
    assert final["state"] == "released"
    cost = Decimal(final["cost_so_far"])
    fee = Decimal(final["platform_fee_rate"])
    assert cost > 0
    after = _balance(exchange, conn["demo_key"])
    assert before - after == (cost * (1 + fee)).quantize(MICRO, rounding=ROUND_HALF_UP)
    # the admin sees it; another tenant's key does not
    with exchange.client() as admin:
        other = admin.post("/v1/tenants", json={"name": "other"}).json()
    with exchange.client(other["key"]) as c:
        assert c.get(f"/v1/leases/{lease['id']}").status_code == 403


def test_openapi_and_dashboard(exchange: ExchangeProcess) -> None:
    spec = httpx.get(exchange.base_url + "/openapi.json").json()
    assert "/v1/market/offers" in spec["paths"] and "/v1/deployments" in spec["paths"]
    page = httpx.get(exchange.base_url + "/")
    assert page.status_code == 200 and "Cambist" in page.text
