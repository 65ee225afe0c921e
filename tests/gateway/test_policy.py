"""The routing policy: the provider object, the models fallback list, suffixes,
max_price, Retry-After and the retry budget, and the declared-price fallback."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest

from cambist.domain.tokens import count_chat_tokens, count_text_tokens
from cambist.gateway import GatewaySettings

from .conftest import MODEL, Harness, chat_body
from .upstream_app import PIECES


async def post(gw: Harness, **extra: Any) -> Any:
    return await gw.client.post("/v1/chat/completions", json=chat_body(**extra))


async def three(gw: Harness) -> None:
    """a is the cheapest, c the dearest (all idle: ties go to the cheaper)."""
    for name, cost in (("a", "1.00"), ("b", "2.00"), ("c", "3.00")):
        await gw.upstream(name, cost_per_hour=cost)


async def test_order_only_ignore(gw: Harness) -> None:
    await three(gw)
    assert (await post(gw)).headers["x-cambist-endpoint"] == "ep_a"
    r = await post(gw, provider={"order": ["sup_c", "sup_b"]})
    assert r.headers["x-cambist-endpoint"] == "ep_c"
    r = await post(gw, provider={"order": ["EP_B", "sup_c"]})  # ids too, any case
    assert r.headers["x-cambist-endpoint"] == "ep_b"
    r = await post(gw, provider={"only": ["sup_b", "sup_c"]})
    assert r.headers["x-cambist-endpoint"] == "ep_b"
    r = await post(gw, provider={"ignore": ["sup_a"]})
    assert r.headers["x-cambist-endpoint"] == "ep_b"
    r = await post(gw, provider={"only": ["nobody"]})
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == (
        "no_endpoint_matches_policy", "provider")


async def test_allow_fallbacks(gw: Harness) -> None:
    await gw.upstream("a", cost_per_hour="1.00")
    await gw.upstream("b", cost_per_hour="2.00")
    c = await gw.upstream("c", cost_per_hour="3.00")
    c.fail_status = 500
    r = await post(gw, provider={"order": ["sup_c", "sup_b"]})
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_b"
    assert r.headers["x-cambist-attempts"] == "2"
    gw.table.stats("ep_c").circuit_open_until = 0.0
    r = await post(gw, provider={"order": ["sup_c", "sup_b"], "allow_fallbacks": False})
    assert r.status_code == 502 and r.headers["x-cambist-attempts"] == "1"
    # with its circuit open, the first choice of the order is the next one named
    r = await post(gw, provider={"order": ["sup_c", "sup_b"], "allow_fallbacks": False})
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_b"


async def test_sort_and_suffixes(gw: Harness) -> None:
    await gw.upstream("cheap", cost_per_hour="1.00", capacity_tok_s=500.0)
    await gw.upstream("fast", cost_per_hour="16.00", capacity_tok_s=4000.0)
    gw.table.stats("ep_cheap").in_flight = 4  # busy: the idle one costs less at the margin
    assert (await post(gw)).headers["x-cambist-endpoint"] == "ep_fast"
    r = await post(gw, provider={"sort": "price"})
    assert r.headers["x-cambist-endpoint"] == "ep_cheap"
    r = await post(gw, model=f"{MODEL}:floor")
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_cheap"
    gw.table.stats("ep_cheap").in_flight = 0
    r = await post(gw, model=f"{MODEL}:nitro")
    assert r.headers["x-cambist-endpoint"] == "ep_fast"
    r = await post(gw, model=f"{MODEL}:nitro", provider={"sort": "price"})  # explicit wins
    assert r.headers["x-cambist-endpoint"] == "ep_cheap"
    gw.table.stats("ep_cheap").ewma_ttft_ms = 300.0
    gw.table.stats("ep_fast").ewma_ttft_ms = 30.0
    r = await post(gw, provider={"sort": "latency"})
    assert r.headers["x-cambist-endpoint"] == "ep_fast"
    assert {rec.model for rec in gw.wallet.records} == {MODEL}


async def test_suffix_is_not_sent_upstream(gw: Harness) -> None:
    up = await gw.upstream("a")
    assert (await post(gw, model=f"{MODEL}:floor")).status_code == 200
    assert up.received[0]["model"] == MODEL


async def test_max_price_against_the_callers_price(gw: Harness) -> None:
    await gw.upstream("a", cost_per_hour="0.01")  # cheap to serve; the caller pays 0.20/0.80
    r = await post(gw, provider={"max_price": {"prompt": 0.1}})
    assert r.status_code == 400
    err = r.json()["error"]
    assert (err["code"], err["param"]) == ("max_price_exceeded", "provider.max_price.prompt")
    r = await post(gw, provider={"max_price": {"prompt": "0.5", "completion": 0.5}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "provider.max_price.completion"
    r = await post(gw, provider={"max_price": {"prompt": 0.2, "completion": 1}})
    assert r.status_code == 200


async def test_zdr_data_collection_quantizations(gw: Harness) -> None:
    await gw.upstream("own", cost_per_hour="50.00")
    own = "ep_own"
    gw.table.stats(own).in_flight = 4  # make the external the default choice
    await gw.upstream("ext", kind="external", prices=("0.01", "0.01"), quantization="fp8",
                      data_collection="allow")
    assert (await post(gw)).headers["x-cambist-endpoint"] == "ep_ext"
    assert (await post(gw, provider={"zdr": True})).headers["x-cambist-endpoint"] == own
    r = await post(gw, provider={"data_collection": "deny"})
    assert r.headers["x-cambist-endpoint"] == own
    r = await post(gw, provider={"quantizations": ["bf16"]})  # the catalog precision
    assert r.headers["x-cambist-endpoint"] == own
    r = await post(gw, provider={"quantizations": ["FP8"]})
    assert r.headers["x-cambist-endpoint"] == "ep_ext"
    r = await post(gw, provider={"quantizations": ["int4"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_endpoint_matches_policy"


async def test_require_parameters(gw: Harness) -> None:
    await gw.upstream("own", cost_per_hour="50.00")
    gw.table.stats("ep_own").in_flight = 4
    await gw.upstream("ext", kind="external", prices=("0.01", "0.01"), zdr=True,
                      supported_parameters=frozenset({"temperature", "max_tokens"}))
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    r = await post(gw, tools=tools, temperature=0.5)
    assert r.headers["x-cambist-endpoint"] == "ep_ext"  # not required: cheapest
    r = await post(gw, tools=tools, provider={"require_parameters": True})
    assert r.headers["x-cambist-endpoint"] == "ep_own"
    r = await post(gw, temperature=0.5, provider={"require_parameters": True, "zdr": True})
    assert r.headers["x-cambist-endpoint"] == "ep_ext"


async def test_models_fallback_list(gw: Harness) -> None:
    gw.prices.set("qwen2.5-7b", "0.05", "0.10")
    primary = await gw.upstream("a")
    backup = await gw.upstream("q", model="qwen2.5-7b")
    r = await post(gw, models=["qwen2.5-7b"])
    assert r.headers["x-cambist-endpoint"] == "ep_a"
    primary.fail_status = 503
    body = chat_body(models=["no-such-model", "qwen2.5-7b"])
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert (r.headers["x-cambist-model"], r.headers["x-cambist-attempts"]) == ("qwen2.5-7b", "2")
    assert backup.received[0]["model"] == "qwen2.5-7b" and "models" not in backup.received[0]
    rec = gw.wallet.records[-1]
    prompt, completion = count_chat_tokens(body["messages"]), count_text_tokens("".join(PIECES))
    assert rec.model == "qwen2.5-7b"
    assert rec.price == (Decimal("0.05") * prompt + Decimal("0.10") * completion) / 10**6
    # a model list alone works; an unknown primary falls through to the next one
    r = await gw.client.post("/v1/chat/completions", json={
        "models": ["nope", "qwen2.5-7b"], "messages": body["messages"]})
    assert r.status_code == 200 and r.headers["x-cambist-model"] == "qwen2.5-7b"
    # nothing can serve: the primary model's error
    r = await post(gw, model="nope", models=["also-nope"])
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


async def test_unknown_provider_fields_logged_by_name(
    gw: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await gw.upstream("a")
    with caplog.at_level(logging.DEBUG, logger="cambist"):
        r = await post(gw, provider={"weird_field_xyz": "secret-value-abc", "order": []})
    assert r.status_code == 200
    assert "weird_field_xyz" in caplog.text and "secret-value-abc" not in caplog.text


@pytest.mark.parametrize(("extra", "param"), [
    ({"provider": "x"}, "provider"),
    ({"provider": {"order": "a"}}, "provider.order"),
    ({"provider": {"only": [1]}}, "provider.only"),
    ({"provider": {"ignore": [""]}}, "provider.ignore"),
    ({"provider": {"allow_fallbacks": "no"}}, "provider.allow_fallbacks"),
    ({"provider": {"sort": "fast"}}, "provider.sort"),
    ({"provider": {"max_price": 3}}, "provider.max_price"),
    ({"provider": {"max_price": {"prompt": "abc"}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"completion": -1}}}, "provider.max_price.completion"),
    ({"provider": {"data_collection": "maybe"}}, "provider.data_collection"),
    ({"provider": {"zdr": 1}}, "provider.zdr"),
    ({"provider": {"require_parameters": "yes"}}, "provider.require_parameters"),
    ({"provider": {"quantizations": "fp8"}}, "provider.quantizations"),
    ({"models": "m"}, "models"),
    ({"models": [MODEL, 3]}, "models[1]"),
])
async def test_wrong_types_are_400_with_param(gw_local: Harness, extra: dict[str, Any],
                                              param: str) -> None:
    r = await gw_local.client.post("/v1/chat/completions", json=chat_body(**extra))
    assert r.status_code == 400, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("invalid_request", param)


async def test_retry_after_keeps_an_endpoint_out_until_then(gw: Harness) -> None:
    a = await gw.upstream("a", cost_per_hour="1.00")
    await gw.upstream("b", cost_per_hour="2.00")
    a.fail_status, a.retry_after = 429, "60"
    r = await post(gw)
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_b"
    assert gw.table.stats("ep_a").retry_after_until == gw.clock.now() + 60
    a.fail_status = None
    for _ in range(2):  # skipped, not probed, while it asked us to wait
        assert (await post(gw)).headers["x-cambist-endpoint"] == "ep_b"
    gw.clock.advance(61)
    assert (await post(gw)).headers["x-cambist-endpoint"] == "ep_a"


@pytest.mark.parametrize("settings", [GatewaySettings(retry_budget_s=10.0)])
async def test_retry_budget_bounds_total_retry_time(gw: Harness) -> None:
    a = await gw.upstream("a", cost_per_hour="1.00")
    b = await gw.upstream("b", cost_per_hour="2.00")
    a.fail_status = 503
    a.on_request = lambda: gw.clock.advance(11)  # the attempt took longer than the budget
    r = await post(gw)
    assert r.status_code == 502 and r.headers["x-cambist-attempts"] == "1"
    assert b.received == []


async def test_declared_price_fallback_for_unpriced_models(gw: Harness) -> None:
    await gw.upstream("ext", model="ext-only", kind="external", prices=("0.10", "0.40"),
                      api_key="sk-test-key-1")
    await gw.upstream("loc", model="ext-only", kind="local", prices=("0.20", "0.30"))
    models = (await gw.client.get("/v1/models")).json()["data"]
    [entry] = [m for m in models if m["id"] == "ext-only"]
    # the dearest declared price of each side x (1 + 0.30)
    pricing = {k: Decimal(v) for k, v in entry["pricing"].items()}
    assert pricing == {"prompt": Decimal("0.26"), "completion": Decimal("0.52")}
    body = chat_body(model="ext-only")
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    [rec] = gw.wallet.records
    prompt, completion = count_chat_tokens(body["messages"]), count_text_tokens("".join(PIECES))
    assert rec.price == (Decimal("0.26") * prompt + Decimal("0.52") * completion) / 10**6
    assert rec.price_version == 0
    gw.prices.set("ext-only", "1", "2")  # a price-list entry wins over the fallback
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert gw.wallet.records[-1].price_version == gw.prices.version
