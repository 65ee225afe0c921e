"""The market page: the offer book filtered, per-SKU summary, and a SKU's price
curve with its forecast bands and glut/surge markers.

Market data is public to every key, so this page is the same for everyone.
Curves are rebuilt from the offer event log and the current book
(:func:`cambist.market.replay.replay_bars`, exact over the span read) and
signals come from the same detector as ``/v1/market/signals``, run on the
bars drawn, so a marker always sits on the curve it describes.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from cambist.api.context import ControlPlane
from cambist.domain.offer import Offer, OfferQuery
from cambist.domain.sku import family_of
from cambist.market.replay import market_key, replay_bars
from cambist.market.signals import DetectorConfig, Observation, detect_market
from cambist.web.blocks import (
    chart,
    clock,
    filter_select,
    filter_text,
    money,
    series,
    stat,
    table,
)
from cambist.web.forecast import short_forecast

__all__ = ["MAX_EVENTS", "MAX_OFFER_ROWS", "market_data"]

MAX_OFFER_ROWS = 100
MAX_EVENTS = 20_000
"""Most offer events one curve is rebuilt from (a live market logs tens a second)."""
_MAX_SPAN_S = 6 * 3600.0
_BARS = 90
_HORIZON = 15
_NICE_BARS = (2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def _parse_filters(q: Mapping[str, str]) -> tuple[OfferQuery, dict[str, str], str]:
    """The offer query named by the page's filters, the filters echoed, and a
    note for any value that had to be ignored."""
    f = {k: (q.get(k) or "").strip() for k in ("gpu", "region", "supplier", "spot",
                                              "max_price", "sku")}
    note, max_price = "", None
    if f["max_price"]:
        try:
            max_price = Decimal(f["max_price"])
            if not max_price.is_finite() or max_price < 0:
                raise InvalidOperation
        except InvalidOperation:
            note, max_price, f["max_price"] = "max $/GPU-h must be a number ≥ 0", None, ""
    spot = {"true": True, "false": False}.get(f["spot"])
    query = OfferQuery(gpu=f["gpu"] or None, region=f["region"] or None,
                       supplier=f["supplier"] or None, spot=spot,
                       max_price_per_gpu_hour=max_price)
    return query, f, note


def _options(values: set[str]) -> list[tuple[str, str]]:
    return [("", "any"), *((v, v) for v in sorted(values))]


def _filters(book: list[Offer], f: dict[str, str], skus: list[str],
             drawn: str) -> list[dict[str, Any]]:
    return [
        filter_select("gpu", "GPU", _options({family_of(o.gpu_name) for o in book}), f["gpu"]),
        filter_select("region", "Region", _options({o.region for o in book}), f["region"]),
        filter_select("supplier", "Supplier", _options({o.supplier for o in book}),
                      f["supplier"]),
        filter_select("spot", "Kind", [("", "any"), ("false", "on-demand"), ("true", "spot")],
                      f["spot"]),
        filter_text("max_price", "Max $/GPU-h", f["max_price"], "e.g. 2.5"),
        filter_select("sku", "Price curve",
                      [("", f"auto: {drawn or 'none'}"), *((s, s) for s in skus)],
                      f["sku"] if f["sku"] in skus else ""),
    ]


def _offer_rows(offers: list[Offer]) -> list[list[Any]]:
    return [[o.supplier, o.gpu_name, o.sku or "—", o.gpu_count, f"{o.vram_gib:g}", o.region,
             money(o.price_per_gpu_hour), money(o.price_per_hour),
             "spot" if o.spot else "on-demand", o.available]
            for o in offers[:MAX_OFFER_ROWS]]


def _sku_rows(book: list[Offer], open_signals: dict[str, str]) -> list[list[Any]]:
    by: dict[str, list[Offer]] = defaultdict(list)
    for o in book:
        by[market_key(o)].append(o)
    rows = []
    for sku in sorted(by):
        offers = by[sku]
        listed = [o.price_per_gpu_hour for o in offers if not o.spot]
        rows.append([sku, len(offers), money(min(o.price_per_gpu_hour for o in offers)),
                     money(statistics.median(listed)) if listed else "—",
                     sum(o.available * o.gpu_count for o in offers),
                     open_signals.get(sku, "")])
    return rows


def _bar_s(span: float) -> float:
    want = span / _BARS
    return next((b for b in _NICE_BARS if b >= want), _NICE_BARS[-1])


async def _bars(cp: ControlPlane, now: float) -> tuple[dict[str, list[Observation]], float,
                                                       float]:
    """Per-SKU bars over the last hours this exchange has data for; (series, from, bar)."""
    oldest = await cp.events.read(kind="offer.", limit=1)
    first = float(oldest[0]["ts"]) if oldest else now
    start = max(now - _MAX_SPAN_S, first)
    rows = await cp.events.read(kind="offer.", since=start, limit=MAX_EVENTS, latest=True)
    if len(rows) >= MAX_EVENTS:
        start = max(start, float(rows[0]["ts"]))
    bar_s = _bar_s(max(now - start, 1.0))
    return replay_bars(cp.book.all_offers(), rows, start=start, now=now, bar_s=bar_s), \
        start, bar_s


def _price_chart(sku: str, bars: list[Observation], bar_s: float,
                 signals: list[Any]) -> dict[str, Any]:
    xs = [b.t for b in bars]
    prices = [float(b.price) if b.price is not None else None for b in bars]
    fc = short_forecast(prices, _HORIZON)
    ahead = [xs[-1] + bar_s * (h + 1) for h in range(len(fc))] if xs else []
    pad: list[float | None] = [None] * len(xs)
    gap: list[float | None] = [None] * len(fc)

    def fseries(attr: str) -> list[float | None]:
        # The forecast starts at the last price so the curve and its forecast join.
        if not fc:
            return pad
        return [*pad[:-1], prices[-1], *(getattr(p, attr) for p in fc)]

    glut: list[float | None] = [None] * (len(xs) + len(fc))
    surge: list[float | None] = [None] * (len(xs) + len(fc))
    for s in signals:
        marks = glut if s.kind == "glut" else surge
        for i, b in enumerate(bars):
            if b.t >= s.start and (s.end is None or b.t <= s.end) and prices[i] is not None:
                marks[i] = prices[i]
    lines = [
        series("price", [*prices, *gap], color="#2563eb", unit="$/GPU-h"),
        series("forecast", fseries("price"), color="#7c3aed", unit="$/GPU-h"),
        series("95% low", fseries("lower95"), kind="band", color="#c4b5fd"),
        series("95% high", fseries("upper95"), kind="band", color="#c4b5fd"),
        series("80% low", fseries("lower80"), kind="band", color="#a78bfa"),
        series("80% high", fseries("upper80"), kind="band", color="#a78bfa"),
        series("glut", glut, kind="points", color="#16a34a"),
        series("surge", surge, kind="points", color="#dc2626"),
    ]
    note = (f"{sku}: median on-demand list price per GPU-hour, {int(bar_s)} s bars; "
            f"random-walk forecast {len(fc)} bars ahead with 80%/95% bands from the "
            "curve's own moves; green/red dots: glut/surge bars.")
    if not fc:
        note += " (forecast after a few more bars)"
    return chart(f"Price curve · {sku}", [*xs, *ahead], lines, y_label="$/GPU-h",
                 bands=[("95% low", "95% high"), ("80% low", "80% high")], note=note)


def _depth_chart(sku: str, bars: list[Observation]) -> dict[str, Any]:
    return chart(f"GPUs available · {sku}", [b.t for b in bars],
                 [series("GPUs available", [float(b.available) for b in bars],
                         color="#0891b2")], y_label="GPUs")


async def market_data(cp: ControlPlane, q: Mapping[str, str]) -> dict[str, Any]:
    """The market page's data for the filters in ``q``."""
    now = cp.clock.now()
    query, f, note = _parse_filters(q)
    book = cp.book.query(OfferQuery(), now)
    try:
        offers = sorted(cp.book.query(query, now), key=lambda o: (o.price_per_gpu_hour, o.id))
    except ValueError as exc:  # an unknown GPU name from a hand-edited URL
        offers, note = [], str(exc)
    bars, covered, bar_s = await _bars(cp, now)
    skus = sorted(bars)
    # Unless one is picked, draw the SKU with the most offers among those matching.
    pool = [market_key(o) for o in offers if market_key(o) in bars] or \
        [market_key(o) for o in book if market_key(o) in bars]
    sku = f["sku"] if f["sku"] in bars else \
        (max(sorted(set(pool)), key=pool.count) if pool else "")
    found = detect_market(bars, DetectorConfig())
    open_signals = {s.sku: f"{s.kind} since {clock(s.start)}" for s in found if s.end is None}
    shown = f"{min(len(offers), MAX_OFFER_ROWS)} of {len(offers)} matching offers"
    data: dict[str, Any] = {
        "filters": _filters(book, f, skus, sku),
        "stats": [
            stat("suppliers", "Suppliers", str(len(cp.book.suppliers()))),
            stat("offers", "Offers listed", str(len(book))),
            stat("matching", "Matching filters", str(len(offers))),
            stat("gpus", "GPUs available (matching)",
                 str(sum(o.available * o.gpu_count for o in offers))),
            stat("cheapest", "Cheapest $/GPU-h (matching)",
                 money(offers[0].price_per_gpu_hour) if offers else "—"),
            stat("signals", "Open gluts/surges", str(len(open_signals))),
        ],
        "charts": {},
        "tables": {
            "offers": table("Offers", ["supplier", "GPU", "SKU", "GPUs", "VRAM GiB", "region",
                                       "$/GPU-h", "$/h", "kind", "available"],
                            _offer_rows(offers), note or shown),
            "skus": table("SKUs", ["SKU", "offers", "best $/GPU-h", "median on-demand",
                                   "GPUs available", "signal"], _sku_rows(book, open_signals)),
            "signals": table("Gluts and surges", ["SKU", "kind", "from", "to", "strength"],
                             [[s.sku, s.kind, clock(s.start),
                               "ongoing" if s.end is None else clock(s.end),
                               f"{s.peak_strength:.1f}"] for s in found],
                             f"history from {clock(covered)} UTC, {int(bar_s)} s bars"),
        },
    }
    if sku:
        mine = [s for s in found if s.sku == sku]
        data["charts"]["price"] = _price_chart(sku, bars[sku], bar_s, mine)
        data["charts"]["depth"] = _depth_chart(sku, bars[sku])
    return data
