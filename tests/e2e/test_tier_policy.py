"""Privacy tier policies through a real exchange: a key limited to
``zero_retention`` gets it by default and is refused ``standard``; a tenant
policy narrows every key of the tenant; clearing it restores them."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

MODEL = "llama-3.1-8b"


def _ask(ex: ExchangeProcess, key: str, tier: str | None) -> httpx.Response:
    body: dict = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 4}
    if tier is not None:
        body["privacy"] = tier
    with ex.client(key) as c:
        return c.post("/v1/chat/completions", json=body)


def _eventually(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "policy change not applied in time"
        time.sleep(0.1)


def _usage_names_tier(ex: ExchangeProcess, rid: str, tier: str) -> None:
    """The request's usage record, once flushed, shows the tier it was served
    under, and the ``privacy_tier`` filter finds it (issue 6)."""
    with ex.client(ex.connection["demo_key"]) as c:
        def flushed() -> bool:
            got = c.get("/v1/usage", params={"limit": 10000, "privacy_tier": tier})
            assert got.status_code == 200, got.text
            return rid in {u["request_id"] for u in got.json()["data"]}

        _eventually(flushed)
        rows = {u["request_id"]: u for u in
                c.get("/v1/usage", params={"limit": 10000}).json()["data"]}
        assert rows[rid]["privacy_tier"] == tier
        bad = c.get("/v1/usage", params={"privacy_tier": "secret"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "privacy_tier"
    shown = ex.cli("usage", "--tier", tier, "--limit", "10000", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {u["privacy_tier"] for u in json.loads(shown.stdout)["data"]} == {tier}
    table = ex.cli("usage", "--limit", "1")
    assert table.returncode == 0 and "tier" in table.stdout, table.stdout + table.stderr


def test_key_and_tenant_tier_policies(exchange: ExchangeProcess, llama8b: str) -> None:
    tenant = exchange.connection["demo_tenant"]
    made = exchange.cli("keys", "create", "--tenant", tenant, "--privacy", "zero_retention",
                        "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["privacy_tiers"] == ["zero_retention"]
    secret = key["key"]

    assert _ask(exchange, secret, None).status_code == 200  # defaults to zero_retention
    served = _ask(exchange, secret, "zero_retention")
    assert served.status_code == 200
    _usage_names_tier(exchange, served.headers["x-request-id"], "zero_retention")
    refused = _ask(exchange, secret, "standard")
    assert refused.status_code == 403, refused.text
    err = refused.json()["error"]
    assert err["code"] == "privacy_tier_not_allowed" and "zero_retention" in err["message"]

    # The tenant allows only confidential: this key's policy meets it in nothing.
    r = exchange.cli("tenants", "privacy", tenant, "--tiers", "standard,confidential")
    assert r.returncode == 0 and "standard, confidential" in r.stdout, r.stdout + r.stderr
    try:
        _eventually(lambda: _ask(exchange, secret, None).status_code == 403)
        demo = exchange.connection["demo_key"]
        assert _ask(exchange, demo, "zero_retention").status_code == 403
        assert _ask(exchange, demo, None).status_code == 200  # standard is allowed
        bad = exchange.cli("tenants", "privacy", tenant, "--tiers", "secret")
        assert bad.returncode == 1 and "unknown privacy tier" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        r = exchange.cli("tenants", "privacy", tenant, "--any")
        assert r.returncode == 0 and "any tier" in r.stdout
    _eventually(lambda: _ask(exchange, secret, None).status_code == 200)
    r = exchange.cli("keys", "privacy", key["id"], "--any")
    assert r.returncode == 0
    _eventually(lambda: _ask(exchange, secret, "standard").status_code == 200)
