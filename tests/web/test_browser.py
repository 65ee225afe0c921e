"""The dashboard in a real headless Chromium against a real exchange: sign-in
and sign-out, every page's charts drawn, filters, live refresh, tenant
isolation, and no JavaScript errors anywhere."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.exchange_process import ExchangeProcess
from tests.web.conftest import Session, Traffic, chat, wait_flushed

pytestmark = pytest.mark.e2e

Tab = Callable[[str | None], Session]

_CHART = """key => {
  const u = window.cambist && window.cambist.charts[key];
  if (!u) return null;
  const c = u.ctx.canvas, d = u.ctx.getImageData(0, 0, c.width, c.height).data;
  let painted = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) painted++;
  return {labels: u.series.slice(1).map(s => s.label), width: c.width, height: c.height,
          painted, points: u.data[0].length,
          filled: u.data.slice(1).map(a => a.filter(v => v !== null && v !== undefined).length)};
}"""

EXPECTED = {
    "/ui": {"rps": ["requests"], "money": ["revenue", "compute cost", "spread"]},
    "/ui/market": {"price": ["price", "forecast", "95% low", "95% high", "80% low",
                             "80% high", "glut", "surge"], "depth": ["GPUs available"]},
    "/ui/deployments": {"tokens": None},
    "/ui/traffic": {"rps": ["completed", "broken streams"],
                    "ttft": ["TTFT p50", "TTFT p95", "TTFT p99"],
                    "latency": ["latency p50", "latency p95", "latency p99"]},
    "/ui/money": {"money": ["revenue", "compute cost", "spread"]},
}


def chart(page: Any, key: str) -> dict[str, Any]:
    info = page.evaluate(_CHART, key)
    assert info is not None, f"chart {key} was not drawn"
    return info


def rows(page: Any, table: str) -> list[list[str]]:
    return page.evaluate("""t => Array.from(document.querySelectorAll(
        `#table-${t} tbody tr:not(.empty)`))
        .map(r => Array.from(r.cells).map(c => c.textContent))""", table)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def stat(page: Any, key: str) -> str:
    return str(page.inner_text(f'[data-stat="{key}"]'))


def test_login_logout_and_cookie_flags(tab: Tab, traffic: Traffic) -> None:
    s = tab(None)
    page = s.open("/ui/money?window=1h")
    assert "/ui/login" in page.url and "next=%2Fui%2Fmoney" in page.url
    page.fill("#key", "cb-not-a-key")
    with page.expect_navigation():
        page.click("#sign-in")
    assert "unknown or revoked" in page.inner_text("#login-error")
    s.errors.clear()  # the browser logs the 401 of the failed sign-in itself
    page.fill("#key", traffic.admin_key)
    with page.expect_navigation():
        page.click("#sign-in")
    assert page.url.endswith("/ui/money?window=1h")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "cambist_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert traffic.admin_key not in cookie["value"]
    assert "cambist_session" not in page.evaluate("document.cookie")  # HttpOnly
    with page.expect_navigation():
        page.click("#logout")
    assert "/ui/login" in page.url
    assert not [c for c in page.context.cookies() if c["name"] == "cambist_session"]
    # the old cookie, replayed, no longer opens the dashboard
    page.context.add_cookies([cookie])
    s.open("/ui")
    assert "/ui/login" in page.url
    s.assert_no_errors()


def test_every_page_draws_its_charts(tab: Tab, traffic: Traffic, llama8b: str) -> None:
    s = tab(traffic.admin_key)
    for path, charts in EXPECTED.items():
        page = s.open(path)
        for key, labels in charts.items():
            info = chart(page, key)
            assert info["width"] > 0 and info["height"] > 0 and info["painted"] > 1000, info
            if labels is not None:
                assert info["labels"] == labels, (path, info)
            assert info["points"] > 0 and max(info["filled"]) > 0, (path, key, info)
        s.shot("admin" + path.replace("/", "-"))
    page = s.open("/ui/deployments")
    assert llama8b in chart(page, "tokens")["labels"]
    assert any(r[0] == llama8b and r[3] == "healthy" for r in rows(page, "replicas"))
    assert rows(page, "moves")
    page = s.open("/ui/traffic")
    assert int(stat(page, "requests").replace(",", "")) >= \
        traffic.demo_requests + traffic.other_requests
    assert any(r[0] == "llama-3.1-8b" for r in rows(page, "routes"))
    page = s.open("/ui/money")
    tenants = {r[0] for r in rows(page, "tenants")}
    assert {traffic.demo_tenant, traffic.other_tenant} <= tenants
    s.assert_no_errors()


def test_market_curve_forecast_and_filters(tab: Tab, traffic: Traffic) -> None:
    s = tab(traffic.demo_key)  # market data is for every key
    deadline = time.monotonic() + 20
    while True:  # a young exchange needs a few bars before a forecast is drawn
        page = s.open("/ui/market")
        info = chart(page, "price")
        if info["filled"][1] > 1 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert info["filled"][0] > 0 and info["filled"][1] > 1, info  # price, forecast
    assert info["filled"][2] == info["filled"][1], info  # a band wherever a forecast
    s.shot("market")
    everything = int(stat(page, "matching"))
    assert len(rows(page, "offers")) == min(everything, 100)
    gpus = page.eval_on_selector_all("#f-gpu option", "os => os.map(o => o.value)")[1:]
    counts = {}
    for gpu in gpus[:3]:
        with page.expect_navigation():
            page.select_option("#f-gpu", gpu)
        assert f"gpu={gpu}" in page.url
        counts[gpu] = int(stat(page, "matching"))
        shown = rows(page, "offers")
        assert len(shown) == min(counts[gpu], 100)
        assert all(_norm(gpu) in _norm(r[1] + r[2]) for r in shown), (gpu, shown[:3])
    assert all(n < everything for n in counts.values()), (everything, counts)
    page.fill("#f-max_price", "0.5")
    with page.expect_navigation():
        page.click("#apply")
    cheap = rows(page, "offers")
    assert all(float(r[6].lstrip("$").replace(",", "")) <= 0.5 for r in cheap)
    s.shot("market-filtered")
    s.assert_no_errors()


def test_tenant_sees_only_its_own_data(tab: Tab, traffic: Traffic, llama8b: str) -> None:
    s = tab(traffic.other_key)
    for path in EXPECTED:
        page = s.open(path)
        html = page.content()
        assert traffic.demo_tenant not in html, path
        if path != "/ui/market":
            assert llama8b not in html, path  # the platform's deployment is not its own
    page = s.open("/ui/money")
    balance = rows(page, "balances")
    assert [r[0] for r in balance] == [traffic.other_tenant]
    # plan, allowance left, pool left, prepaid, spendable (the default plan grants nothing)
    assert balance[0][2:5] == ["payg", "$0.0000", "$0.00"] and balance[0][5].startswith("$")
    assert "compute cost" not in page.content()
    assert chart(page, "money")["labels"] == ["spend"]
    assert int(stat(page, "requests")) == traffic.other_requests
    s.shot("tenant-money")
    page = s.open("/ui/traffic")
    assert int(stat(page, "requests")) == traffic.other_requests
    # asking for another tenant in the URL changes nothing: the key decides
    data = page.evaluate("t => fetch('/ui/data/money?tenant=' + encodeURIComponent(t))"
                         ".then(r => r.json())", traffic.demo_tenant)
    assert data["scope"] == {"admin": False, "tenant": traffic.other_tenant}
    assert traffic.demo_tenant not in str(data)
    s.assert_no_errors()


def test_live_refresh_without_reload(tab: Tab, traffic: Traffic,
                                     exchange: ExchangeProcess) -> None:
    s = tab(traffic.other_key)
    page = s.open("/ui/traffic")
    page.evaluate("window.__notReloaded = true")
    before = int(stat(page, "requests"))
    ids = chat(exchange, traffic.other_key, 1)
    wait_flushed(exchange, traffic.other_key, ids)
    page.wait_for_function(
        f"""() => Number(document.querySelector('[data-stat="requests"]').textContent
                          .replace(/,/g, '')) > {before}""", timeout=15000)
    assert page.evaluate("window.__notReloaded === true && window.cambist.refreshes >= 1")
    assert page.evaluate("window.cambist.lastError") is None
    s.assert_no_errors()
