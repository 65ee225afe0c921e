"""The dashboard's HTTP surface without a browser: redirects, Bearer keys,
the login form's cookie, origin checks, JSON scope and static files."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.exchange_process import ExchangeProcess
from tests.web.conftest import Traffic

pytestmark = pytest.mark.e2e

PAGES = ("/ui", "/ui/market", "/ui/deployments", "/ui/traffic", "/ui/money")


def test_landing_page_links_to_dashboard(exchange: ExchangeProcess) -> None:
    r = httpx.get(exchange.base_url + "/")
    assert r.status_code == 200 and "Cambist" in r.text and 'href="/ui"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_signed_out_pages_redirect_and_data_is_401(exchange: ExchangeProcess) -> None:
    for path in PAGES:
        r = httpx.get(exchange.base_url + path + "?window=6h")
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/ui/login?next=%2Fui")
    assert httpx.get(exchange.base_url + "/ui/data/money").status_code == 401
    bad = {"authorization": "Bearer cb-nope"}
    assert httpx.get(exchange.base_url + "/ui/data/money", headers=bad).status_code == 401


def test_bearer_key_opens_pages_and_data(exchange: ExchangeProcess, traffic: Traffic) -> None:
    with exchange.client(traffic.admin_key) as c:
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 200, path
            assert "text/html" in r.headers["content-type"]
            assert 'id="page-data"' in r.text and "/ui/static/dashboard.js" in r.text
        data = c.get("/ui/data/money", params={"window": "1h"}).json()
        assert data["scope"] == {"admin": True, "tenant": None}
        assert [f["value"] for f in data["filters"] if f["name"] == "window"] == ["1h"]
    with exchange.client(traffic.demo_key) as c:
        data = c.get("/ui/data/traffic").json()
        assert data["scope"] == {"admin": False, "tenant": traffic.demo_tenant}
        assert traffic.other_tenant not in str(data)
        assert c.get("/ui/data/nothing").status_code == 404


def test_login_sets_a_signed_httponly_strict_cookie(exchange: ExchangeProcess,
                                                    traffic: Traffic) -> None:
    url = exchange.base_url
    r = httpx.post(url + "/ui/login", data={"key": traffic.demo_key,
                                            "next": "https://evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/ui"  # no open redirect
    header = r.headers["set-cookie"]
    flags = {part.strip().lower() for part in header.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= flags, header
    assert traffic.demo_key not in header
    token = header.split(";")[0].split("=", 1)[1]
    ok = httpx.get(url + "/ui/data/overview", cookies={"cambist_session": token})
    assert ok.status_code == 200 and ok.json()["scope"]["tenant"] == traffic.demo_tenant
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert httpx.get(url + "/ui/data/overview",
                     cookies={"cambist_session": forged}).status_code == 401
    bad = httpx.post(url + "/ui/login", data={"key": "cb-wrong"})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text
    cross = httpx.post(url + "/ui/login", data={"key": traffic.demo_key},
                       headers={"origin": "https://evil.example"})
    assert cross.status_code == 403 and "set-cookie" not in cross.headers


def test_revoked_key_ends_its_sessions(exchange: ExchangeProcess, traffic: Traffic) -> None:
    with exchange.client(traffic.other_key) as c:
        made = c.post("/v1/keys", json={"scope": "inference", "name": "web-revoke"})
        assert made.status_code == 201, made.text
        key = made.json()
    r = httpx.post(exchange.base_url + "/ui/login", data={"key": key["key"]})
    cookies = {"cambist_session": r.cookies["cambist_session"]}
    assert httpx.get(exchange.base_url + "/ui/data/overview", cookies=cookies).status_code \
        == 200
    with exchange.client(traffic.other_key) as c:
        assert c.post(f"/v1/keys/{key['id']}/revoke").status_code == 200
    assert httpx.get(exchange.base_url + "/ui/data/overview", cookies=cookies).status_code \
        == 401


def test_vendored_chart_library_is_served(exchange: ExchangeProcess) -> None:
    r = httpx.get(exchange.base_url + "/ui/static/vendor/uplot/uPlot.iife.min.js")
    assert r.status_code == 200 and "uPlot" in r.text[:2000]
    assert httpx.get(exchange.base_url + "/ui/static/dashboard.js").status_code == 200
    assert httpx.get(exchange.base_url + "/ui/static/../pages.py").status_code == 404


def test_login_refuses_oversized_forms(exchange: ExchangeProcess) -> None:
    r = httpx.post(exchange.base_url + "/ui/login", data={"key": "x" * 10_000})
    assert r.status_code == 413 and "set-cookie" not in r.headers


def test_admin_can_view_one_tenant_and_tenants_cannot(exchange: ExchangeProcess,
                                                      traffic: Traffic) -> None:
    with exchange.client(traffic.admin_key) as c:
        one = c.get("/ui/data/traffic", params={"tenant": traffic.other_tenant}).json()
        assert one["scope"] == {"admin": True, "tenant": traffic.other_tenant}
        assert traffic.demo_tenant not in str({**one, "filters": None})
        (picker,) = [f for f in one["filters"] if f["name"] == "tenant"]
        assert picker["value"] == traffic.other_tenant
        assert {traffic.demo_tenant, traffic.other_tenant} <= {v for v, _ in picker["options"]}
        unknown = c.get("/ui/data/money", params={"tenant": "ten_nobody"}).json()
        assert unknown["scope"] == {"admin": True, "tenant": None}
        market = c.get("/ui/data/market").json()
        assert not [f for f in market["filters"] if f["name"] == "tenant"]
    with exchange.client(traffic.other_key) as c:
        mine = c.get("/ui/data/money", params={"tenant": traffic.demo_tenant}).json()
        assert mine["scope"]["tenant"] == traffic.other_tenant
        assert not [f for f in mine["filters"] if f["name"] == "tenant"]


def test_sign_out_holds_across_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A signed-out cookie is refused by the next process on the same store too
    (the nonce is recorded in the store, not only in the process that saw it)."""
    ex = ExchangeProcess(tmp_path / "home").start()
    try:
        key = ex.connection["demo_key"]
        r = httpx.post(ex.base_url + "/ui/login", data={"key": key})
        cookies = {"cambist_session": r.cookies["cambist_session"]}
        kept = httpx.post(ex.base_url + "/ui/login", data={"key": key})
        other = {"cambist_session": kept.cookies["cambist_session"]}
        assert httpx.get(ex.base_url + "/ui/data/overview", cookies=cookies).status_code == 200
        out = httpx.post(ex.base_url + "/ui/logout", cookies=cookies)
        assert out.status_code == 303
        assert httpx.post(ex.base_url + "/ui/logout", cookies=cookies).status_code == 303
        assert httpx.get(ex.base_url + "/ui/data/overview", cookies=cookies).status_code == 401
    finally:
        assert ex.stop() == 0, ex.output()
    again = ExchangeProcess(tmp_path / "home").start()
    try:
        url = again.base_url + "/ui/data/overview"
        assert httpx.get(url, cookies=cookies).status_code == 401
        assert httpx.get(url, cookies=other).status_code == 200  # only that session ended
    finally:
        assert again.stop() == 0, again.output()
