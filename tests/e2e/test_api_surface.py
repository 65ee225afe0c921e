"""More of the surface through the real exchange: completions, embeddings, a
reasoning model, the gateway as its own process, price versions, the event log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import openai
import pytest

from tests.e2e.exchange_process import ExchangeProcess, _env, free_port

pytestmark = pytest.mark.e2e


def _sdk(ex: ExchangeProcess, base: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=(base or ex.base_url) + "/v1",
                         api_key=ex.connection["demo_key"], max_retries=0)


def test_completions_and_embeddings(exchange: ExchangeProcess, llama8b: str) -> None:
    client = _sdk(exchange)
    c = client.completions.create(model="llama-3.1-8b", prompt="Once upon a time", max_tokens=16)
    assert c.choices[0].text and c.usage is not None and c.usage.completion_tokens <= 16
    e = client.embeddings.create(model="llama-3.1-8b", input=["alpha", "beta"])
    assert len(e.data) == 2 and len(e.data[0].embedding) > 0
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model="llama-3.1-8b", prompt="Count", max_tokens=8, stream=True) if ch.choices)
    assert streamed


def test_reasoning_model_reports_reasoning_tokens(exchange: ExchangeProcess) -> None:
    r = exchange.cli("deploy", "deepseek-r1-distill-llama-70b", "--name", "r1", "--timeout",
                     "120")
    assert r.returncode == 0, r.stdout + r.stderr
    client = _sdk(exchange)
    raw = client.chat.completions.with_raw_response.create(
        model="deepseek-r1-distill-llama-70b", max_tokens=200,
        messages=[{"role": "user", "content": "Why is the sky blue?"}])
    done = raw.parse()
    details = done.usage.completion_tokens_details  # type: ignore[union-attr]
    assert details is not None and details.reasoning_tokens and details.reasoning_tokens > 0
    assert done.choices[0].message.model_extra.get("reasoning_content")  # type: ignore[union-attr]
    rid = raw.headers["x-request-id"]
    deadline = time.monotonic() + 10
    with exchange.client(exchange.connection["demo_key"]) as c:
        while True:
            rows = {u["request_id"]: u for u in c.get("/v1/usage", params={"limit": 1000})
                    .json()["data"]}
            if rid in rows or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert rows[rid]["reasoning_tokens"] == details.reasoning_tokens
    assert exchange.cli("undeploy", "r1").returncode == 0


def test_gateway_alone_on_the_same_store(exchange: ExchangeProcess, llama8b: str) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cambist.cli", "gateway", "--port", str(port)],
                            env=_env(exchange.home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        raw = _sdk(exchange, base).chat.completions.with_raw_response.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": "via the gateway"}])
        rid = raw.headers["x-request-id"]
        assert httpx.get(base + "/v1/market/offers").status_code == 404  # gateway only
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    # Its usage reached the shared store, flushed by the gateway's own outbox.
    with exchange.client() as c:
        rows = {u["request_id"] for u in c.get("/v1/usage", params={"limit": 1000})
                .json()["data"]}
    assert rid in rows
    assert exchange.cli("ledger", "check").returncode == 0


def test_price_change_is_a_new_version(exchange: ExchangeProcess, llama8b: str) -> None:
    r = exchange.cli("prices", "set", "llama-3.1-8b", "--input", "0.10", "--output", "1.00")
    assert r.returncode == 0, r.stderr
    with exchange.client() as c:
        data = c.get("/v1/prices").json()
    assert len(data["versions"]) >= 2
    row = next(p for p in data["data"] if p["model"] == "llama-3.1-8b")
    assert Decimal(row["output_per_mtok"]) == Decimal("1.00")
    deadline = time.monotonic() + 10
    while True:  # the gateway picks the new version up within its refresh interval
        models = {m.id: m for m in _sdk(exchange).models.list().data}
        pricing = models["llama-3.1-8b"].model_extra["pricing"]  # type: ignore[index]
        if Decimal(pricing["completion"]) == Decimal("1.00") or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert Decimal(pricing["completion"]) == Decimal("1.00")
    bad = exchange.cli("prices", "set", "nope", "--input", "1", "--output", "1")
    assert bad.returncode != 0 and "catalog" in bad.stderr


def test_event_log(exchange: ExchangeProcess, llama8b: str) -> None:
    r = exchange.cli("events", "--json", "--limit", "5000")
    assert r.returncode == 0, r.stderr
    kinds = {e["kind"] for e in json.loads(r.stdout)["data"]}
    assert {"offer.added", "lease.transition", "deploy.step"} <= kinds
    with exchange.client(exchange.connection["demo_key"]) as c:
        assert c.get("/v1/events").status_code == 403


def test_prometheus_metrics(exchange: ExchangeProcess, llama8b: str) -> None:
    _sdk(exchange).chat.completions.create(model="llama-3.1-8b", max_tokens=4,
                                           messages=[{"role": "user", "content": "count me"}])
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(exchange.base_url + "/metrics", timeout=10).text
        if 'cambist_deployments{state="ready"}' in text or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name in ("cambist_offers_listed", "cambist_leases_active", "cambist_endpoint_in_flight",
                 "cambist_outbox_backlog_bytes", "cambist_usage_records_flushed_total",
                 'cambist_deployments{state="ready"}', 'cambist_endpoints{healthy="true"}',
                 'cambist_route_attempts_total{'):
        assert name in text, name
