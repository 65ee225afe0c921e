"""``/v1/market/signals`` and ``/v1/market/forecast`` over a simulated market
whose history lives in the event log and in the OHLC rollups, the exactness
of the replay, and the rollups taking over when the event read is capped."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.api import routes_signals
from cambist.api.errors import install_error_handlers
from cambist.domain.clock import ManualClock
from cambist.market import OfferBook
from cambist.market.bar_series import sku_observations, source_interval
from cambist.market.history import PriceHistory
from cambist.market.replay import Row, aggregate, replay_bars
from cambist.market.signals import Observation
from cambist.providers.sim import SimSupplier
from cambist.store.db import migrate, open_engine, sqlite_url
from cambist.store.events import EventLog
from cambist.testing.fakes import FakeAuthenticator

T0 = 1_767_225_600.0
HOUR = 3600.0


@dataclass
class _Plane:
    db: AsyncEngine
    clock: ManualClock
    book: OfferBook
    events: EventLog
    auth: FakeAuthenticator


@dataclass
class Market:
    client: httpx.AsyncClient
    key: str
    snapshots: dict[float, dict[str, Observation]]
    plane: _Plane


@pytest.fixture
async def market(tmp_path: Path) -> AsyncIterator[Market]:
    url = sqlite_url(tmp_path / "cambist.db")
    migrate(url)
    engine = open_engine(url)
    log, clock, auth = EventLog(engine), ManualClock(T0), FakeAuthenticator()
    book = OfferBook(log)
    history = PriceHistory(engine, book)
    sims = [SimSupplier(n, tmp_path / n, seed=31, episode_rate=2.0) for n in ("aws", "gcp")]
    snapshots: dict[float, dict[str, Observation]] = {}
    for k in range(4 * 24 + 1):
        now = T0 + k * HOUR + 7.0  # feed steps fall between bar boundaries
        clock.advance(now - clock.now())
        for sim in sims:
            await sim.step(now)
            await book.update(sim.name, await sim.list_offers(now), now)
        await history.step(now)
        rows = [Row.of(o) for o in book.all_offers()]
        snapshots[T0 + (k + 1) * HOUR] = aggregate(rows, T0 + (k + 1) * HOUR)
    clock.advance(HOUR - 7.0 - 1.0)  # just before the next boundary
    plane = _Plane(engine, clock, book, log, auth)
    app = FastAPI()
    install_error_handlers(app)
    app.state.control_plane = plane
    app.include_router(routes_signals.router)
    key, _ = auth.issue("tenant-1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        yield Market(client, key, snapshots, plane)
    await engine.dispose()


async def test_replay_is_exact_at_every_boundary(market: Market) -> None:
    p = market.plane
    rows = await p.events.read(kind="offer.", limit=1_000_000)
    now = p.clock.now()
    series = replay_bars(p.book.all_offers(), rows, start=T0 + HOUR, now=now, bar_s=HOUR)
    for key, points in series.items():
        for obs in points:
            assert market.snapshots[obs.t].get(key) == obs, (key, obs.t)
    assert len(next(iter(series.values()))) == 4 * 24


async def test_signals_route(market: Market) -> None:
    auth = {"Authorization": f"Bearer {market.key}"}
    r = await market.client.get("/v1/market/signals", headers=auth,
                                params={"bar_s": 3600, "since": T0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"], "episodes at two a day per SKU over four days"
    for s in body["data"]:
        assert s["kind"] in ("glut", "surge") and s["peak_strength"] >= s["strength"] >= 0
        assert s["start"] <= s["detected_at"] and (s["end"] is None or s["end"] > s["start"])
    one = await market.client.get("/v1/market/signals", headers=auth,
                                  params={"bar_s": 3600, "since": T0, "gpu": "H100"})
    assert all(s["sku"].startswith("H100") for s in one.json()["data"])
    assert (await market.client.get("/v1/market/signals")).status_code == 401
    bad = await market.client.get("/v1/market/signals", headers=auth,
                                  params={"since": market.plane.clock.now() + 60})
    assert bad.status_code == 400


async def test_forecast_route(market: Market) -> None:
    auth = {"Authorization": f"Bearer {market.key}"}
    r = await market.client.get("/v1/market/forecast", headers=auth,
                                params={"gpu": "H100-80GB-SXM", "horizon": "24h"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sku"] == "H100-80GB-SXM" and len(body["data"]) == 24
    for p in body["data"]:
        lo95, lo80, mid, hi80, hi95 = (Decimal(p[k]) for k in
                                       ("lower95", "lower80", "price", "upper80", "upper95"))
        assert Decimal(0) < lo95 <= lo80 <= mid <= hi80 <= hi95
    week = await market.client.get("/v1/market/forecast", headers=auth,
                                   params={"gpu": "H100-80GB-SXM", "horizon": "7d"})
    assert week.status_code == 200 and len(week.json()["data"]) == 168
    vague = await market.client.get("/v1/market/forecast", headers=auth, params={"gpu": "A100"})
    assert vague.status_code == 400 and "several" in vague.text
    unknown = await market.client.get("/v1/market/forecast", headers=auth,
                                      params={"gpu": "Z999"})
    assert unknown.status_code == 400
    bad = await market.client.get("/v1/market/forecast", headers=auth,
                                  params={"gpu": "H100-80GB-SXM", "horizon": "3d"})
    assert bad.status_code == 400


async def test_rollups_take_over_when_the_event_read_is_capped(
        market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = {"Authorization": f"Bearer {market.key}"}
    uncapped = await market.client.get("/v1/market/forecast", headers=auth,
                                       params={"gpu": "H100-80GB-SXM"})
    assert uncapped.json()["history_source"] == "events"
    monkeypatch.setattr(routes_signals, "MAX_EVENTS", 50)  # a live market's hour
    r = await market.client.get("/v1/market/forecast", headers=auth,
                                params={"gpu": "H100-80GB-SXM"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["history_source"] == "bars" and body["history_hours"] >= 72
    assert body["history_from"] <= T0 + HOUR
    signals = await market.client.get("/v1/market/signals", headers=auth,
                                      params={"bar_s": 3600, "since": T0})
    assert signals.json()["history_source"] == "bars" and signals.json()["data"]


async def test_bar_series_levels_and_gaps(market: Market) -> None:
    p = market.plane
    series, since = await sku_observations(p.db, HOUR, T0, p.clock.now())
    assert since is not None and since <= T0 + HOUR
    h100 = series["H100-80GB-SXM"]
    times = [o.t for o in h100]
    closed = times[:-1]  # the open bucket is stamped at ``until``
    assert all(b - a == HOUR for a, b in itertools.pairwise(closed)) and times[-1] > closed[-1]
    prices = [o.price for o in h100 if o.price is not None]
    assert len(prices) >= 4 * 24 - 1 and all(Decimal("0.5") < x < Decimal(20) for x in prices)
    # The level (median of the markets' best prices) tracks the replay's median
    # list price of the same boundary, and sees the same GPUs available.
    compared = 0
    for obs in h100:
        snap = market.snapshots.get(obs.t, {}).get("H100-80GB-SXM")
        if obs.price is None or snap is None or snap.price is None:
            continue
        assert Decimal("0.5") < obs.price / snap.price <= Decimal("1.0001"), obs.t
        assert obs.available > 0
        compared += 1
    assert compared >= 4 * 24 - 2
    assert source_interval(300) == 60 and source_interval(7200) == 3600
    assert source_interval(30) is None and source_interval(90) is None
