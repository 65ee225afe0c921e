"""Privacy tiers: selection by body or header, tiers endpoints offer, prices by
tier, identity stripped in ``anonymous``, the upstream header allow-list and
content-free logs."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import orjson
import pytest

from cambist.domain.endpoint import Endpoint
from cambist.domain.errors import InvalidRequest
from cambist.gateway.errors import log_unexpected
from cambist.gateway.privacy import (
    UPSTREAM_HEADERS,
    InvalidPrivacyTier,
    PrivacyConflict,
    parse_privacy,
)

from .conftest import MODEL, TENANT, Harness, chat_body
from .upstream_app import FakeUpstream

CANARY = "canary-7f3d9e1b-do-not-keep"
END_USER = "end-user-4242"
CLIENT_IP = "203.0.113.77"
IDENTIFYING_HEADERS = {
    "x-forwarded-for": CLIENT_IP, "x-forwarded-host": "client.example",
    "x-real-ip": CLIENT_IP, "forwarded": f"for={CLIENT_IP}", "x-my-user": "my-user-9000",
}


async def post(gw: Harness, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    return await gw.client.post("/v1/chat/completions", json=chat_body(**extra),
                                headers=headers)


def error_of(r: Any) -> dict[str, Any]:
    err: dict[str, Any] = r.json()["error"]
    return err


async def own_and_externals(gw: Harness) -> None:
    """own (deployment), ext (external, no zdr, cheapest) and zdr (external, zdr)."""
    await gw.upstream("own", cost_per_hour="9.00", capacity_tok_s=10.0)
    await gw.upstream("ext", kind="external", prices=("0.01", "0.01"), api_key="sk-shared")
    await gw.upstream("zdr", kind="external", prices=("0.02", "0.02"), zdr=True)


# -- choosing a tier -------------------------------------------------------------

@pytest.mark.parametrize(("body", "header", "tier"), [
    (None, None, "standard"),
    ("zero_retention", None, "zero_retention"),
    (None, "anonymous", "anonymous"),
    (None, " zero_retention ", "zero_retention"),
    ("anonymous", "anonymous", "anonymous"),
    ("confidential", None, "confidential"),
])
def test_parse_privacy(body: Any, header: str | None, tier: str) -> None:
    assert parse_privacy(body, header) == tier


@pytest.mark.parametrize(("body", "header"), [
    ("zdr", None), (None, "Zero_Retention"), (1, None), ("", None), (None, ""),
])
def test_unknown_tier_is_refused(body: Any, header: str | None) -> None:
    with pytest.raises(InvalidPrivacyTier) as info:
        parse_privacy(body, header)
    assert info.value.status == 400 and info.value.param == "privacy"
    assert "standard, zero_retention, anonymous, confidential" in info.value.message


def test_body_and_header_must_agree() -> None:
    with pytest.raises(PrivacyConflict) as info:
        parse_privacy("standard", "zero_retention")
    assert isinstance(info.value, InvalidRequest) and info.value.code == "privacy_conflict"
    assert "standard" in info.value.message and "zero_retention" in info.value.message


def test_endpoint_tiers() -> None:
    base: dict[str, Any] = {"id": "e", "model": MODEL, "url": "http://x", "supplier": "s",
                            "owner": None, "healthy": True}
    assert Endpoint(**base).privacy_tiers == {"standard", "zero_retention"}
    assert Endpoint(**base, kind="local").privacy_tiers == {"standard", "zero_retention"}
    assert Endpoint(**base, kind="external").privacy_tiers == {"standard", "anonymous"}
    assert Endpoint(**base, kind="external", zdr=True).privacy_tiers == {
        "standard", "anonymous", "zero_retention"}


async def test_tier_by_body_and_by_header_routes_to_endpoints_offering_it(
        gw: Harness) -> None:
    await own_and_externals(gw)
    assert (await post(gw)).headers["x-cambist-endpoint"] == "ep_own"  # idle: nearly free
    r = await post(gw, privacy="zero_retention", provider={"ignore": ["ep_own"]})
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_zdr"
    r = await post(gw, headers={"x-cambist-privacy": "zero_retention"})
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_own"
    r = await post(gw, headers={"x-cambist-privacy": "anonymous"})
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_ext"
    r = await post(gw, privacy="anonymous", provider={"ignore": ["ep_ext"]})
    assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_zdr"


async def test_unknown_tier_and_conflict_over_http(gw: Harness) -> None:
    await gw.upstream("own")
    r = await post(gw, privacy="secret")
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_privacy_tier"
    assert "standard, zero_retention, anonymous, confidential" in error_of(r)["message"]
    r = await post(gw, headers={"x-cambist-privacy": "nope"})
    assert r.status_code == 400 and error_of(r)["param"] == "privacy"
    r = await post(gw, privacy="standard", headers={"x-cambist-privacy": "zero_retention"})
    assert r.status_code == 400 and error_of(r)["code"] == "privacy_conflict"
    assert not gw.wallet.records and not gw.wallet.holds


# -- a tier nothing offers -------------------------------------------------------

@pytest.mark.parametrize("tier", ["anonymous", "confidential"])
async def test_tier_unavailable_names_tier_and_model(gw: Harness, tier: str) -> None:
    own = await gw.upstream("own")
    r = await post(gw, privacy=tier, models=[MODEL])
    assert r.status_code == 400
    assert error_of(r) == {
        "message": f"no healthy endpoint of {MODEL} offers the {tier} tier",
        "type": "invalid_request_error", "param": "privacy", "code": "privacy_tier_unavailable"}
    assert not own.received and not gw.wallet.records and not gw.wallet.holds


async def test_zero_retention_never_falls_back_to_a_retaining_endpoint(gw: Harness) -> None:
    ext = await gw.upstream("ext", kind="external", prices=("0.01", "0.01"))
    r = await post(gw, privacy="zero_retention")
    assert r.status_code == 400 and error_of(r)["message"] == (
        f"no healthy endpoint of {MODEL} offers the zero_retention tier")
    assert not ext.received
    zdr = await gw.upstream("zdr", kind="external", prices=("0.05", "0.05"), zdr=True)
    zdr.fail_status = 500  # the retaining endpoint is never tried instead
    r = await post(gw, privacy="zero_retention")
    assert r.status_code == 502 and not ext.received and len(zdr.received) == 1


async def test_fallback_models_keep_the_tier(gw: Harness) -> None:
    await gw.upstream("own")
    other = await gw.upstream("other", model="qwen2.5-7b", kind="external",
                              prices=("0.01", "0.01"))
    r = await post(gw, privacy="anonymous", models=["qwen2.5-7b"])
    assert r.status_code == 200 and r.headers["x-cambist-model"] == "qwen2.5-7b"
    assert len(other.received) == 1


# -- prices ----------------------------------------------------------------------

async def test_price_by_tier_with_fallback_to_standard(gw: Harness) -> None:
    await gw.upstream("own")
    await gw.upstream("ext", kind="external", prices=("0.01", "0.01"))
    zr = gw.prices.set(MODEL, "0.40", "1.60", tier="zero_retention")
    assert (await post(gw, privacy="zero_retention")).status_code == 200
    assert (await post(gw, privacy="anonymous")).status_code == 200
    assert (await post(gw)).status_code == 200
    zr_rec, anon_rec, std_rec = gw.wallet.records
    # Each record names the tier it was served under (issue 6).
    assert [r.privacy_tier for r in gw.wallet.records] == [
        "zero_retention", "anonymous", "standard"]
    assert zr_rec.price_version == zr.version
    assert anon_rec.price_version == std_rec.price_version == gw.price.version
    assert zr_rec.price == zr.charge(zr_rec.prompt_tokens, zr_rec.completion_tokens)
    assert anon_rec.price == gw.price.charge(anon_rec.prompt_tokens, anon_rec.completion_tokens)
    assert zr_rec.price > std_rec.price > 0


# -- /v1/models ------------------------------------------------------------------

async def test_models_lists_tiers_with_endpoint_counts(gw: Harness) -> None:
    await own_and_externals(gw)
    await gw.upstream("sick", healthy=False)
    data = (await gw.client.get("/v1/models")).json()["data"]
    assert data[0]["endpoints"] == 3
    assert data[0]["tiers"] == {"standard": 3, "zero_retention": 2, "anonymous": 2}


# -- what an upstream receives ----------------------------------------------------

def received_text(fake: FakeUpstream) -> str:
    parts = [raw.decode() for raw in fake.received_raw]
    parts += [f"{k}: {v}" for headers in fake.received_headers for k, v in headers]
    return "\n".join(parts).lower()


async def test_anonymous_strips_identity(gw: Harness) -> None:
    dead = await gw.upstream("dead", kind="external", prices=("0.001", "0.001"),
                             api_key="sk-shared")
    dead.fail_status = 503
    ext = await gw.upstream("ext", kind="external", prices=("0.01", "0.01"),
                            api_key="sk-shared")
    headers = {"x-cambist-privacy": "anonymous", **IDENTIFYING_HEADERS,
               "x-request-id": "client-chosen-id", "user-agent": "acme-app/1.0"}
    ids = []
    for stream in (False, True):
        r = await post(gw, headers=headers, stream=stream, user=END_USER,
                       metadata={"tenant": TENANT}, safety_identifier=END_USER)
        assert r.status_code == 200 and r.headers["x-cambist-endpoint"] == "ep_ext"
        ids.append(r.headers["x-request-id"])
    seen = received_text(ext) + received_text(dead)
    forbidden = [TENANT, gw.principal.key_id, gw.secret, END_USER, CLIENT_IP, "my-user-9000",
                 "client.example", "client-chosen-id", "acme-app", *ids]
    assert [s for s in forbidden if s.lower() in seen] == []
    for fake in (ext, dead):
        for sent in fake.received:
            assert not {"user", "metadata", "safety_identifier", "privacy"} & set(sent)
        for hdrs in fake.received_headers:
            assert {k for k, _ in hdrs} <= UPSTREAM_HEADERS
            assert dict(hdrs)["authorization"] == "Bearer sk-shared"
    upstream_ids = [dict(h)["x-request-id"] for f in (dead, ext) for h in f.received_headers]
    # dead's circuit opened on its first failure: three upstream requests, three ids
    assert len(upstream_ids) == 3 and len(set(upstream_ids)) == 3


async def test_standard_tier_forwards_only_allow_listed_headers(gw: Harness) -> None:
    own = await gw.upstream("own")
    r = await post(gw, headers=IDENTIFYING_HEADERS, user=END_USER)
    assert r.status_code == 200
    (hdrs,) = own.received_headers
    assert {k for k, _ in hdrs} <= UPSTREAM_HEADERS
    assert dict(hdrs)["x-request-id"] == r.headers["x-request-id"]
    assert CLIENT_IP not in received_text(own) and "my-user-9000" not in received_text(own)
    assert own.received[0]["user"] == END_USER  # standard passes the body on as sent


# -- content-free logs -------------------------------------------------------------

def test_unexpected_errors_are_logged_without_their_message(
        caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError(f"could not handle {CANARY}")
    except ValueError as exc:
        with caplog.at_level(logging.DEBUG):
            log_unexpected(logging.getLogger("cambist.gateway"), exc, "serving x")
    assert "ValueError" in caplog.text and "test_privacy.py" in caplog.text
    assert CANARY not in caplog.text


async def test_zero_retention_leaves_no_content_behind(
        gw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    own = await gw.upstream("own")
    messages = [{"role": "user", "content": f"remember {CANARY}"}]
    zr = {"x-cambist-privacy": "zero_retention"}
    bodies: list[dict[str, Any]] = [
        {"messages": messages}, {"messages": messages, "stream": True},
        {"messages": messages, "max_tokens": -1},
        {"messages": messages, "max_tokens": 10**9},
        {"messages": messages, CANARY: 1, "provider": {CANARY: 1}},
        {"messages": [{"role": 7, "content": CANARY}]},
    ]
    with caplog.at_level(logging.DEBUG):
        for body in bodies:
            r = await gw.client.post("/v1/chat/completions", headers=zr,
                                     json={"model": MODEL, **body})
            assert CANARY not in r.text
        own.fail_status = 500
        r = await gw.client.post("/v1/chat/completions", headers=zr,
                                 json={"model": MODEL, "messages": messages})
        assert r.status_code == 502 and CANARY not in r.text
        bad = await gw.client.post("/v1/chat/completions", headers=zr,
                                   content=b'{"model": "' + CANARY.encode() + b'", ')
        assert bad.status_code == 400 and CANARY not in bad.text
    kept = caplog.text + orjson.dumps(gw.events).decode() + repr(gw.wallet.records)
    assert CANARY not in kept
    assert len(gw.wallet.records) == 3 and Decimal(0) < gw.wallet.charged(TENANT)
    assert {r.privacy_tier for r in gw.wallet.records} == {"zero_retention"}
