"""Price-history queries on a month of minute data, with baselines from the same run.

Fills a fresh SQLite database (migrated with ``cambist.store.db.migrate``) with
``--days`` of 1-minute bars for ``--skus`` SKUs (each with ``--keys`` supplier
and region markets plus the SKU overall), building the 1-hour and 1-day bars
with the history's own bar arithmetic (in worker processes) and writing all of
them through ``BarStore.insert_rows``. Then it times, through the functions the REST API
calls:

(a) 1-hour bars of one SKU over the whole period (``price_bars``), against the
    baseline of reading that SKU's 1-minute bars and rolling them up in Python
    (what a query would cost without the rollup tables);
(b) the latest price and 24 h change of every SKU (``market_summary``), against
    the baseline of one query per SKU over its last 25 hours of minute bars.

Run: ``python bench/market_history.py [--skus 50 --days 30 --keys 1 --repeat 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.market.bars import ALL, DAY, HOUR, MINUTE, Bar, aggregate, rollup
from cambist.market.history_queries import market_summary, price_bars
from cambist.market.history_store import BarStore, bar_row
from cambist.store.db import migrate, open_engine, sqlite_url
from cambist.store.schema import market_bars

T_END = 1_767_225_600.0  # the filled period ends here (2026-01-01 00:00 UTC)
TICK = Decimal("0.0001")


def _walk(rng: random.Random, base: float, n: int) -> list[Decimal]:
    """A mean-reverting log price, one value per minute, rounded to 0.0001."""
    x, out = 0.0, []
    for _ in range(n):
        x += -0.002 * x + rng.gauss(0, 0.004)
        out.append(Decimal(str(round(base * math.exp(x), 4))))
    return out


def _series_rows(key: tuple[str, str, str], obs: list[tuple[float, Decimal, int]]) -> list[dict]:
    minutes = aggregate(obs, MINUTE)
    hours = rollup(minutes, HOUR)
    days = rollup(hours, DAY)
    return [bar_row((b.interval_s, *key, b.start), b) for b in (*minutes, *hours, *days)]


def build_rows(s: int, days: int, keys: int, seed: int) -> list[dict]:
    """All bar rows of SKU number ``s`` (its markets and overall), one observation a minute."""
    rng = random.Random(seed * 1000 + s)
    n = days * DAY // MINUTE
    times = [T_END - days * DAY + i * MINUTE + 7.0 for i in range(n)]
    sku = f"SKU{s:02d}-80GB"
    base = rng.uniform(0.3, 8.0)
    markets = [(_walk(rng, base * rng.uniform(0.9, 1.3), n),
                [rng.randint(1, 64) for _ in range(n)]) for _ in range(keys)]
    rows: list[dict] = []
    for k, (prices, avail) in enumerate(markets):
        obs = list(zip(times, prices, avail, strict=True))
        rows += _series_rows((sku, f"region-{k}", f"supplier-{k}"), obs)
    overall = [(t, min(m[0][i] for m in markets), sum(m[1][i] for m in markets))
               for i, t in enumerate(times)]
    return rows + _series_rows((sku, ALL, ALL), overall)


async def fill(db: AsyncEngine, skus: int, days: int, keys: int, seed: int,
               workers: int) -> int:
    """Build each SKU's rows in worker processes and write them here, a few SKUs in
    flight at a time; returns the number of rows."""
    loop, store, total = asyncio.get_running_loop(), BarStore(db), 0
    pending: deque[asyncio.Future[list[dict]]] = deque()

    async def write_one() -> int:
        batch = await pending.popleft()
        for i in range(0, len(batch), 20_000):
            await store.insert_rows(batch[i:i + 20_000])
        return len(batch)

    with ProcessPoolExecutor(workers) as pool:
        for s in range(skus):
            pending.append(loop.run_in_executor(pool, build_rows, s, days, keys, seed))
            if len(pending) > workers:
                total += await write_one()
        while pending:
            total += await write_one()
    return total


async def _timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, Any]:
    """Median and worst milliseconds of ``repeat`` runs (after one warm-up), and a result."""
    result = await fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = await fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples), result


async def _baseline_hourly(db: AsyncEngine, sku: str, since: float, until: float) -> list[Bar]:
    minutes = await price_bars(db, sku, MINUTE, since, until)
    return rollup((b for _, b in minutes), HOUR)


async def _baseline_summary(db: AsyncEngine, skus: list[str], now: float) -> dict:
    out = {}
    b = market_bars.c
    async with db.connect() as conn:
        for sku in skus:
            q = select(b.start, b.close_micros).where(
                b.interval_s == MINUTE, b.sku == sku, b.region == ALL, b.supplier == ALL,
                b.start > now - DAY - HOUR, b.start <= now).order_by(b.start)
            rows = (await conn.execute(q)).all()
            ref = [r.close_micros for r in rows if r.start <= now - DAY]
            out[sku] = (rows[-1].close_micros, ref[-1] if ref else None)
    return out


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp) / "history.db")
        migrate(url)
        db = open_engine(url)
        try:
            t = time.perf_counter()
            rows = await fill(db, args.skus, args.days, args.keys, args.seed, args.workers)
            fill_s = time.perf_counter() - t
            size_mb = (Path(tmp) / "history.db").stat().st_size / 2**20
            print(f"filled {rows:,} bars ({args.skus} SKUs x {args.keys + 1} series, "
                  f"{args.days} days of 1m + 1h + 1d) in {fill_s:.1f} s; "
                  f"{size_mb:.0f} MiB on disk")
            await report(db, args)
        finally:
            await db.dispose()


async def report(db: AsyncEngine, args: argparse.Namespace) -> None:
    now, since = T_END - 1, T_END - args.days * DAY
    skus = [f"SKU{s:02d}-80GB" for s in range(args.skus)]
    sku = skus[len(skus) // 2]
    a_med, a_max, hourly = await _timed(lambda: price_bars(db, sku, HOUR, since, now),
                                        args.repeat)
    b_med, b_max, base = await _timed(lambda: _baseline_hourly(db, sku, since, now),
                                      args.repeat)
    assert [(b.start, b.open, b.close) for _, b in hourly] == [(b.start, b.open, b.close)
                                                               for b in base]
    c_med, c_max, summary = await _timed(lambda: market_summary(db, now), args.repeat)
    d_med, d_max, naive = await _timed(lambda: _baseline_summary(db, skus, now), args.repeat)
    assert len(summary.skus) == args.skus and all(s.change_24h_pct is not None
                                                  for s in summary.skus)
    assert len(naive) == args.skus
    print(f"\n{'query':<52} {'median ms':>10} {'max ms':>8} {'vs baseline':>12}")
    label = f"(a) 1h bars, one SKU, {args.days} days ({len(hourly)} bars)"
    print(f"{label:<52} {a_med:>10.2f} {a_max:>8.2f} {a_med / b_med:>11.3f}x")
    print(f"{'    baseline: 1m bars rolled up in Python':<52} {b_med:>10.2f} {b_max:>8.2f}")
    print(f"{'(b) summary: latest + 24h change, ' + str(args.skus) + ' SKUs':<52}"
          f" {c_med:>10.2f} {c_max:>8.2f} {c_med / d_med:>11.3f}x")
    print(f"{'    baseline: one 25 h minute-bar query per SKU':<52} {d_med:>10.2f} {d_max:>8.2f}")
    print(f"\ntarget < 100 ms each: (a) {'met' if a_max < 100 else 'MISSED'}, "
          f"(b) {'met' if c_max < 100 else 'MISSED'} (worst of {args.repeat})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--skus", type=int, default=50)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--keys", type=int, default=1, help="supplier/region markets per SKU")
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes building bars for the fill")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
