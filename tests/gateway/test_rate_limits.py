"""Plans enforced by the gateway: 429s, Retry-After and the x-ratelimit headers."""

from __future__ import annotations

import pytest

from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.ledger.plans import DEFAULT_PLANS, Plan, PlanBook

from .conftest import TENANT, Harness, chat_body
from .upstream_app import PIECES

TINY = Plan("tiny", requests_per_minute=3, tokens_per_minute=5_000,
            tenant_requests_per_minute=4, tenant_tokens_per_minute=8_000)
tiny = pytest.mark.parametrize("plans", [PlanBook([*DEFAULT_PLANS, TINY], {TENANT: "tiny"})])

HEADERS = [f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset")
           for kind in ("requests", "tokens")]


@pytest.fixture(params=["gw_local", "gw"])
def gw_either(request: pytest.FixtureRequest, plans: PlanBook) -> Harness:
    """The gateway in process (ASGI) and on Cambist's own server over loopback,
    on ``plans``."""
    harness: Harness = request.getfixturevalue(request.param)
    return harness


def assert_rate_headers(headers: object) -> None:
    assert all(h in headers for h in HEADERS), headers  # type: ignore[operator]


@tiny
async def test_429_after_the_plans_requests_per_minute(gw_either: Harness) -> None:
    await gw_either.upstream("a")
    for remaining in ("2", "1", "0"):
        r = await gw_either.client.post("/v1/chat/completions", json=chat_body(max_tokens=10))
        assert r.status_code == 200, r.text
        assert_rate_headers(r.headers)
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == remaining
    r = await gw_either.client.post("/v1/chat/completions", json=chat_body(max_tokens=10))
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    assert "Limit 3" in err["message"]
    assert r.headers["retry-after"] == "20"
    assert r.headers["retry-after-ms"] == "20000"
    assert r.headers["x-request-id"].startswith("req_")
    assert_rate_headers(r.headers)
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert len(gw_either.wallet.records) == 3 and gw_either.wallet.holds == {}
    gw_either.clock.advance(20)
    r = await gw_either.client.post("/v1/chat/completions", json=chat_body(max_tokens=10))
    assert r.status_code == 200, r.text


@tiny
async def test_tenant_limit_shared_by_two_keys(gw_local: Harness) -> None:
    await gw_local.upstream("a")
    other, _ = gw_local.auth.issue(TENANT)
    async with gw_local.http_client(headers={"authorization": f"Bearer {other}"}) as second:
        for client in (gw_local.client, gw_local.client, second, second):
            r = await client.post("/v1/chat/completions", json=chat_body(max_tokens=10))
            assert r.status_code == 200, r.text
        # each key used 2 of its 3; the tenant all 4 of its 4
        assert r.headers["x-ratelimit-limit-requests"] == "4"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        r = await second.post("/v1/chat/completions", json=chat_body(max_tokens=10))
    assert r.status_code == 429 and "organization" in r.json()["error"]["message"]
    assert "retry-after" in r.headers


@tiny
async def test_tokens_per_minute_reserved_then_corrected(gw_either: Harness) -> None:
    await gw_either.upstream("a")
    body = chat_body(max_tokens=4_000)
    prompt = count_chat_tokens(body["messages"])
    r = await gw_either.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    # counted at reservation: prompt + max_tokens
    assert r.headers["x-ratelimit-remaining-tokens"] == str(5_000 - prompt - 4_000)
    r = await gw_either.client.post("/v1/chat/completions", json=chat_body(max_tokens=10))
    used = prompt + count_text_tokens("".join(PIECES))
    # ... and corrected to the usage at settle
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == 5_000 - used - prompt - 10
    r = await gw_either.client.post("/v1/chat/completions", json=chat_body(max_tokens=6_000))
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "tokens" and "too large" in r.json()["error"]["message"]


@tiny
async def test_tokens_held_by_a_stream_in_flight_429_with_retry_after(gw: Harness) -> None:
    up = await gw.upstream("a")
    up.chunk_delay_s = 0.05
    async with gw.client.stream("POST", "/v1/chat/completions",
                                json=chat_body(stream=True, max_tokens=4_500)) as s:
        assert s.status_code == 200
        assert_rate_headers(s.headers)
        r = await gw.client.post("/v1/chat/completions", json=chat_body(max_tokens=4_500))
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "tokens"
        assert int(r.headers["retry-after"]) >= 1
        assert_rate_headers(r.headers)
        await s.aread()
    r = await gw.client.post("/v1/chat/completions", json=chat_body(max_tokens=4_500))
    assert r.status_code == 200, r.text  # the stream settled: its unused tokens came back


async def test_headers_on_stream_and_on_errors(gw_either: Harness) -> None:
    await gw_either.upstream("a")
    async with gw_either.client.stream("POST", "/v1/chat/completions",
                                      json=chat_body(stream=True)) as r:
        assert r.status_code == 200
        assert_rate_headers(r.headers)
        assert r.headers["x-ratelimit-limit-requests"] == "3000"  # the default plan, pro
        assert r.headers["content-type"].startswith("text/event-stream")
        await r.aread()
    r = await gw_either.client.post("/v1/chat/completions", json=chat_body(model="nope"))
    assert r.status_code == 404
    assert_rate_headers(r.headers)
    assert r.headers["x-ratelimit-remaining-requests"] == "2998"
    r = await gw_either.client.post("/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert_rate_headers(r.headers)
    r = await gw_either.client.post("/v1/chat/completions", json=chat_body(),
                                   headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and "x-ratelimit-limit-requests" not in r.headers


SHORT = Plan("short", requests_per_minute=100, tokens_per_minute=100_000,
             tenant_requests_per_minute=100, tenant_tokens_per_minute=100_000, max_tokens=64)


@pytest.mark.parametrize("plans", [PlanBook([*DEFAULT_PLANS, SHORT], {TENANT: "short"})])
async def test_a_plan_caps_max_tokens_below_the_gateway(gw_local: Harness) -> None:
    await gw_local.upstream("a")
    ok = await gw_local.client.post("/v1/chat/completions", json=chat_body(max_tokens=64))
    assert ok.status_code == 200, ok.text
    for field in ("max_tokens", "max_completion_tokens"):
        r = await gw_local.client.post("/v1/chat/completions", json={
            **chat_body(), field: 65})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == field and "the most plan short allows is 64" in err["message"]


def test_plan_tables_take_max_tokens() -> None:
    from cambist.ledger.plans import plan_from_table

    p = plan_from_table({"name": "p", "requests_per_minute": 1, "tokens_per_minute": 1,
                         "max_tokens": 512})
    assert p.max_tokens == 512
    with pytest.raises(ValueError, match="max_tokens must be a positive integer"):
        plan_from_table({"name": "p", "requests_per_minute": 1, "tokens_per_minute": 1,
                         "max_tokens": 0})
