"""The dashboard's pure parts: session tokens, HTML escaping, page blocks, the
short-horizon forecast and the sign-in redirect guard."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from cambist.domain.billing import Principal
from cambist.market.signals import Observation, Signal
from cambist.web.blocks import chart, percentile, series, table, window_seconds
from cambist.web.data_market import _parse_filters, _price_chart
from cambist.web.data_traffic import _tables
from cambist.web.forecast import MIN_POINTS, short_forecast
from cambist.web.pages import _safe_next
from cambist.web.queries import Request
from cambist.web.session import SessionSigner
from cambist.web.templates import page_html, script_json

SECRET = b"s" * 32


def test_session_token_round_trip_and_tamper() -> None:
    signer = SessionSigner(SECRET)
    token = signer.issue("key_abc", now=1000.0, ttl_s=60)
    session = signer.verify(token, now=1030.0)
    assert session is not None and session.key_id == "key_abc" and session.expires_at == 1060
    assert signer.verify(token, now=1060.0) is None  # expired
    assert SessionSigner(b"t" * 32).verify(token, now=1030.0) is None  # another secret
    parts = token.split(".")
    assert signer.verify(".".join([parts[0], "key_admin", *parts[2:]]), 1030.0) is None
    assert signer.verify(".".join([*parts[:2], "99999999999", *parts[3:]]), 1030.0) is None
    assert signer.verify("garbage", 1030.0) is None
    assert signer.issue("key_abc", 1000.0) != signer.issue("key_abc", 1000.0)  # nonces
    with pytest.raises(ValueError):
        signer.issue("key.with.dots", 1000.0)


def test_safe_next_refuses_other_sites() -> None:
    assert _safe_next("/ui/money?window=1h") == "/ui/money?window=1h"
    for bad in ("https://evil.example/ui", "//evil.example/ui", "/docs", "/ui\\@evil", "",
                None, "javascript:alert(1)"):
        assert _safe_next(bad) == "/ui"


def test_page_html_escapes_everything() -> None:
    evil = "<script>alert(1)</script>"
    data = {"filters": [{"name": "gpu", "label": "GPU", "kind": "select",
                         "options": [[evil, evil]], "value": evil}],
            "stats": [{"id": "x", "label": evil, "value": evil}],
            "charts": {"c": chart(evil, [1.0], [series(evil, [1.0])])},
            "tables": {"t": table(evil, [evil], [[evil]], note=evil)},
            "as_of_text": evil}
    html = page_html("market", evil, Principal("key_1", evil, "inference"), data, 5000)
    assert "<script>alert" not in html
    assert html.count("<script") == 3  # the JSON island, uPlot and dashboard.js
    island = html.split('id="page-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(island)["stats"][0]["value"] == evil


def test_script_json_cannot_close_its_element() -> None:
    text = script_json({"a": "</script><!--", "b": "&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!--", "b": "&"}


def test_blocks() -> None:
    assert window_seconds("6h") == ("6h", 21600.0)
    assert window_seconds("forever") == ("1h", 3600.0)
    assert percentile([], 0.5) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0
    assert table("t", ["a", "b"], [[None, 1]])["rows"] == [["—", "1"]]
    assert series("s", [1.0, None, math.nan])["values"] == [1.0, None, None]
    with pytest.raises(ValueError, match="has 1 values for 2 times"):
        chart("c", [1.0, 2.0], [series("s", [1.0])])


def test_short_forecast_bands() -> None:
    assert short_forecast([2.0] * (MIN_POINTS - 1), 5) == []
    assert short_forecast([None, 2.0, None, 2.1, 2.0, 1.9], 5)  # gaps skipped, 4 prices
    prices = [2.0, 2.1, 1.9, 2.05, 2.2, 2.0, 1.95, 2.1]
    fc = short_forecast(prices, 10)
    assert len(fc) == 10 and all(p.price == prices[-1] for p in fc)
    for p in fc:
        assert p.lower95 <= p.lower80 <= p.price <= p.upper80 <= p.upper95
    widths = [p.upper95 - p.lower95 for p in fc]
    assert widths == sorted(widths) and widths[-1] > widths[0]  # wider further out
    flat = short_forecast([3.0] * 6, 3)
    assert all(p.lower95 == p.upper95 == 3.0 for p in flat)  # no moves, no band
    with pytest.raises(ValueError):
        short_forecast(prices, 0)


def _req(rid: str, status: str = "ok", latency: float = 100.0) -> Request:
    return Request(rid, "ten_a", "m", "ep_1", "sup", 10, 20, 5, 1, status, 1000.0, latency,
                   latency / 2)


def test_traffic_tables_count_errors_by_cause_and_routes() -> None:
    reqs = [_req("r1"), _req("r2", latency=300.0), _req("r3", status="partial")]
    events = [{"subject": "r1", "data": {"model": "m", "endpoint": "ep_0", "supplier": "x",
                                         "outcome": "connect_error"}},
              {"subject": "r1", "data": {"model": "m", "endpoint": "ep_1", "supplier": "sup",
                                         "outcome": "ok"}}]
    errors, routes, failed = _tables(reqs, events, "")
    assert failed == 1
    assert sorted(errors["rows"]) == [["stream ended early (partial)", "1"],
                                      ["upstream: connect_error", "1"]]
    first = routes["rows"][0]
    # ok attempts: one per request served (first-try successes are not logged)
    assert first[:7] == ["m", "ep_1", "sup", "3", "100.0%", "3", "0"]
    assert first[7] == "100 ms"  # median latency of 100, 300 and 100
    assert routes["rows"][1][:7] == ["m", "ep_0", "x", "0", "0.0%", "0", "1"]


def test_market_filters_parse_and_refuse_bad_numbers() -> None:
    query, echo, note = _parse_filters({"gpu": "H100", "spot": "true", "max_price": "2.5"})
    assert (query.gpu, query.spot, str(query.max_price_per_gpu_hour)) == ("H100", True, "2.5")
    assert note == "" and echo["gpu"] == "H100"
    query, echo, note = _parse_filters({"max_price": "cheap", "spot": "maybe"})
    assert query.max_price_per_gpu_hour is None and query.spot is None
    assert "number" in note and echo["max_price"] == ""


def test_price_chart_marks_signals_and_joins_the_forecast() -> None:
    bars = [Observation(t=100.0 * i, price=Decimal("2.0") + Decimal(i % 3) / 10,
                        available=200) for i in range(10)]
    glut = Signal("H100", "glut", start=300.0, end=500.0, strength=4.0, peak_strength=5.0,
                  detected_at=400.0)
    surge = Signal("H100", "surge", start=800.0, end=None, strength=4.0, peak_strength=4.0,
                   detected_at=900.0)
    c = _price_chart("H100", bars, 100.0, [glut, surge])
    by = {s["label"]: s["values"] for s in c["series"]}
    assert len(c["x"]) == 10 + 15 and c["x"][10] == 1000.0  # 15 bars of forecast ahead
    assert [i for i, v in enumerate(by["glut"]) if v is not None] == [3, 4, 5]
    assert [i for i, v in enumerate(by["surge"]) if v is not None] == [8, 9]
    assert by["glut"][3] == by["price"][3]  # a marker sits on the curve
    assert by["forecast"][9] == by["price"][9] and by["forecast"][8] is None  # joined
    assert all(v is not None for v in by["95% high"][9:])
    assert c["bands"] == [["95% low", "95% high"], ["80% low", "80% high"]]
