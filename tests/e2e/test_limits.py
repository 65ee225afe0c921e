"""Plans on a real ``cambist up``: every inference response carries the rate headers
(the shared exchange's limits are read, never exhausted)."""

from __future__ import annotations

import re

import httpx
import pytest

from cambist.ledger.plans import DEFAULT_PLAN, PlanBook
from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

DURATION = re.compile(r"(\d+h)?(\d+m)?\d+(\.\d+)?(ms|s)|0s")


def _check_headers(headers: httpx.Headers) -> None:
    plan = PlanBook().plan_of("anyone")
    assert plan.name == DEFAULT_PLAN
    for kind in ("requests", "tokens"):
        limit = int(headers[f"x-ratelimit-limit-{kind}"])
        assert 0 <= int(headers[f"x-ratelimit-remaining-{kind}"]) <= limit
        assert DURATION.fullmatch(headers[f"x-ratelimit-reset-{kind}"])
    # the demo tenant is on the default plan: the tighter of key and tenant limits
    assert int(headers["x-ratelimit-limit-requests"]) in (
        plan.requests_per_minute, plan.tenant_requests_per_minute)


def test_rate_headers_on_success_stream_and_error(exchange: ExchangeProcess,
                                                  llama8b: str) -> None:
    key = exchange.connection["demo_key"]
    auth = {"authorization": f"Bearer {key}"}
    body = {"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8}
    with httpx.Client(base_url=exchange.base_url, headers=auth, timeout=60) as c:
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        _check_headers(r.headers)
        with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            assert s.status_code == 200
            _check_headers(s.headers)
            s.read()
        r = c.post("/v1/chat/completions", json={**body, "model": "no-such-model"})
        assert r.status_code == 404
        _check_headers(r.headers)
