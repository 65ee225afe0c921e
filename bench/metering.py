"""Metering throughput: usage records per second, committed, into SQLite and PostgreSQL.

For each backend, on a fresh migrated database:

1. **append**: ``N`` usage records (1% of them replays of earlier request ids)
   appended to the usage outbox, one ``os.write`` each, as ``settle`` does on
   the request path;
2. **metering**: :class:`~cambist.ledger.flusher.OutboxFlusher` moves them into
   the ``usage`` table and the journal (one balanced two-line entry per priced
   record, duplicates skipped by the unique keys) in batches, each batch one
   committed transaction with its outbox position; the clock stops when the
   last batch is committed, so every counted record is durable. On
   PostgreSQL also with ``--writers`` outboxes flushed concurrently (as that
   many gateway processes do, each with its own outbox);
3. **baseline** (same run, same database, same batches): plain ``INSERT`` of
   the same usage rows with no journal and no de-duplication, committed per
   batch: what the database takes when nothing else is asked of it.

Then it checks the books: one usage row per unique request id, one journal
entry of two lines per priced one, all lines summing to zero. (It does not
run ``Journal.check()``: its usage cross-check takes seconds per few
thousand records, which would dominate the run.) Prints records/s and the
ratio metering / baseline.

``--overhead`` measures instead what limits and metering cost one request on
the gateway: per request, ``RateLimiter.admit`` + ``reserve_tokens``, the
wallet's ``reserve`` + ``settle`` (outbox append) and the token correction,
then the flush of the same records amortized (CPU of this process), per
process (SQLite) and shared through Redis (PostgreSQL); against a baseline
measured in the same run: parsing the request body and serializing a
response, which every request pays with or without limits.

Run: ``python bench/metering.py [--records 100000] [--postgres URL] [--batch-mb 4]
[--writers 4] [--repeat 3]`` (``--repeat``: the median of that many runs per backend)
or ``python bench/metering.py --overhead [--redis redis://127.0.0.1:6379/0]``.
PostgreSQL: a database ``cambist_bench_<random>`` is created on the server of
``--postgres`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
dropped after; ``--no-postgres`` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from redis.asyncio import Redis
from sqlalchemy import func, insert, select

from cambist.domain.clock import Clock, SystemClock
from cambist.domain.usage import UsageRecord
from cambist.gateway.limits import RateLimiter
from cambist.gateway.limits_redis import SharedRateLimiter
from cambist.gateway.protocol import parse_request
from cambist.ledger.flusher import OutboxFlusher, usage_row
from cambist.ledger.journal import Journal
from cambist.ledger.keys import Keyring
from cambist.ledger.outbox import UsageOutbox
from cambist.ledger.plans import PlanBook
from cambist.ledger.shared_wallet import SharedWallet
from cambist.ledger.wallet import TenantWallet
from cambist.store.db import migrate, open_engine, sqlite_url
from cambist.store.schema import journal_entries, journal_lines, usage

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def records(n: int, replay_every: int = 100) -> Iterator[UsageRecord]:
    """``n`` records over 200 tenants; every ``replay_every``-th repeats an earlier id."""
    for i in range(n):
        rid = f"req-{i // 2 if i % replay_every == replay_every - 1 else i:09d}"
        yield UsageRecord(
            request_id=rid, tenant_id=f"ten_{i % 200:03d}", key_id=f"key_{i % 1000:04d}",
            model="llama-3.1-8b", endpoint_id="ep_bench", supplier="sim",
            prompt_tokens=120 + i % 50, completion_tokens=200 + i % 70, reasoning_tokens=0,
            price=Decimal("0.000321") + Decimal(i % 7) / 1_000_000,
            compute_cost=Decimal("0.000101"), price_version=1, status="ok",
            created_at=1_767_225_600.0 + i / 1000, latency_ms=12.5, ttft_ms=None, stream=False)


async def bench_backend(name: str, url: str, work: Path, n: int, batch_bytes: int,
                        writers: int = 1) -> dict:
    """Append, flush (metering; ``writers`` outboxes flushed concurrently, as
    that many gateway processes do) and the raw-insert baseline on one database."""
    migrate(url)
    engine = open_engine(url)
    journal = Journal(engine, SystemClock())
    try:
        run = secrets.token_hex(4)
        outboxes = [UsageOutbox(work / f"outbox-{name}-{run}-{w}.jsonl", offset_key=f"bench:{w}")
                    for w in range(writers)]
        batch = list(records(n))
        t0 = time.perf_counter()
        for i, r in enumerate(batch):
            outboxes[i % writers].append(r)
        for outbox in outboxes:
            await outbox.sync()
        append_s = time.perf_counter() - t0
        per_batch = max(1, n * batch_bytes // sum(o.size() for o in outboxes))

        flushers = [OutboxFlusher(o, engine, journal, batch_bytes=batch_bytes,
                                  rotate_bytes=1 << 40) for o in outboxes]
        t0 = time.perf_counter()
        flushed = sum(await asyncio.gather(*(f.recover() for f in flushers)))
        meter_s = time.perf_counter() - t0
        assert flushed == n, (flushed, n)

        unique = {r.request_id for r in batch}
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(usage))).scalar_one()
            entries = (await conn.execute(select(func.count()).select_from(journal_entries)
                                          .where(journal_entries.c.kind == "usage"))).scalar_one()
            lines, total = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(journal_lines.c.amount_micros), 0))
            )).one()
        assert rows == len(unique) and entries == len(unique), (rows, entries, len(unique))
        assert lines == 2 * entries and total == 0, (lines, total)  # balanced, two lines each

        # Baseline: the same rows (fresh ids), plain inserts, same batch size.
        raw = [{**usage_row(r), "request_id": f"raw-{i:09d}"} for i, r in enumerate(batch)]
        t0 = time.perf_counter()
        for i in range(0, n, per_batch):
            async with engine.begin() as conn:
                await conn.execute(insert(usage), raw[i:i + per_batch])
        base_s = time.perf_counter() - t0
        for outbox in outboxes:
            outbox.close()
        return {"backend": f"{name}/{writers}", "records": n, "unique": len(unique),
                "append_per_s": n / append_s, "meter_per_s": n / meter_s,
                "base_per_s": n / base_s, "batch_records": per_batch}
    finally:
        await engine.dispose()


@contextmanager
def pg_database(server: str) -> Iterator[str]:
    """A fresh PostgreSQL database on ``server``, dropped afterwards."""
    import psycopg

    name = f"cambist_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


_BODY = orjson.dumps({"model": "llama-3.1-8b", "max_tokens": 64, "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarize the benefits of batching in two sentences."}]})
_RESPONSE = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "ok " * 40}}],
             "usage": {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70}}


def _baseline_us(n: int) -> float:
    """CPU µs per request of parsing a body and serializing a response."""
    t0 = time.process_time()
    for _ in range(n):
        parse_request(_BODY, "chat", max_tokens_cap=131072)
        orjson.dumps(_RESPONSE)
    return (time.process_time() - t0) / n * 1e6


async def _overhead_us(n: int, limiter: RateLimiter, wallet: TenantWallet,
                       flusher: OutboxFlusher, clock: Clock) -> tuple[float, float]:
    """(request-path µs, µs including the flush and any Redis pushes) per request."""
    price = Decimal("0.000120")
    t0 = time.process_time()
    for i in range(n):
        adm = limiter.admit(f"key_{i % 50}", f"ten_{i % 10:03d}")
        adm.reserve_tokens(94)
        rsv = wallet.reserve(f"ten_{i % 10:03d}", price, f"r{i}")
        wallet.settle(rsv, UsageRecord(
            request_id=f"ovh-{i:09d}", tenant_id=f"ten_{i % 10:03d}", key_id=f"key_{i % 50}",
            model="llama-3.1-8b", endpoint_id="ep", supplier="sim", prompt_tokens=30,
            completion_tokens=40, reasoning_tokens=0, price=price,
            compute_cost=Decimal("0.00004"), price_version=1, status="ok",
            created_at=clock.now()))
        adm.settle(70)
        if i % 64 == 63:
            await asyncio.sleep(0)  # let background pushes to Redis run, as between requests
    path = time.process_time() - t0
    t1 = time.process_time()
    await flusher.recover()
    await asyncio.sleep(0)
    if isinstance(limiter, SharedRateLimiter):
        await limiter.push()
    if isinstance(wallet, SharedWallet):
        await wallet.push()
    rest = time.process_time() - t1
    return path / n * 1e6, (path + rest) / n * 1e6


async def overhead(n: int, work: Path, redis_url: str | None, pg: str | None) -> None:
    """Print what limits and metering cost a request, per process and shared."""
    base = _baseline_us(n)
    rows = []
    setups: list[tuple[str, str, str | None]] = [("per process, SQLite",
                                                  sqlite_url(work / "ovh.db"), None)]
    if redis_url and pg:
        setups.append(("shared, PostgreSQL+Redis", pg, redis_url))
    for label, url, rurl in setups:
        migrate(url)
        engine = open_engine(url)
        clock = SystemClock()
        journal = Journal(engine, clock)
        await Keyring(engine, clock, b"k" * 32).create_tenant("bench", "ten_bench")
        for t in range(10):
            await journal.post(f"seed:{t}", "topup", [("platform:cash", Decimal(1000)),
                                                      (f"tenant:ten_{t:03d}", Decimal(-1000))])
        outbox = UsageOutbox(work / f"ovh-{len(rows)}.jsonl", offset_key="ovh")
        redis = Redis.from_url(rurl) if rurl else None
        prefix = f"cambist-bench-{secrets.token_hex(4)}"
        try:
            if redis is None:
                wallet: TenantWallet = TenantWallet(journal, outbox, clock)
                limiter: RateLimiter = RateLimiter(PlanBook(), clock)
                flusher = OutboxFlusher(outbox, engine, journal)
            else:
                shared = SharedWallet(journal, outbox, clock, redis, process="bench",
                                      prefix=prefix)
                wallet, limiter = shared, SharedRateLimiter(PlanBook(), clock, redis,
                                                            prefix=prefix)
                flusher = OutboxFlusher(outbox, engine, journal, reporter=shared)
            await wallet.load()
            path, total = await _overhead_us(n, limiter, wallet, flusher, clock)
            rows.append((label, path, total))
        finally:
            outbox.close()
            if redis is not None:
                keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
                if keys:
                    await redis.delete(*keys)
                await redis.aclose()
            await engine.dispose()
    print(f"baseline (parse body + serialize response): {base:.1f} µs CPU per request")
    print(f"{'limits + metering':<26} {'request path µs':>16} {'with flush µs':>14} "
          f"{'ratio to baseline':>18}")
    for label, path, total in rows:
        print(f"{label:<26} {path:>16.1f} {total:>14.1f} {total / base:>18.2f}")


def _median(runs: list[dict]) -> dict:
    """One result whose rates are the medians of ``runs`` (the machine is noisy)."""
    out = dict(runs[0])
    for k in ("append_per_s", "meter_per_s", "base_per_s"):
        out[k] = statistics.median(r[k] for r in runs)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--batch-mb", type=float, default=4.0)
    p.add_argument("--postgres", default=PG_DEFAULT)
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--overhead", action="store_true",
                   help="measure what limits and metering cost a request instead")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    p.add_argument("--writers", type=int, default=2,
                   help="outboxes flushed concurrently into PostgreSQL (gateway processes)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per backend, each on a fresh database; prints the median "
                        "(the ratio is that of the medians)")
    a = p.parse_args()
    batch = int(a.batch_mb * (1 << 20))
    if a.overhead:
        with tempfile.TemporaryDirectory() as tmp:
            if a.no_postgres:
                asyncio.run(overhead(a.records, Path(tmp), None, None))
            else:
                with pg_database(a.postgres) as url:
                    asyncio.run(overhead(a.records, Path(tmp), a.redis, url))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not a.no_sqlite:
            runs = []
            for i in range(a.repeat):
                runs.append(asyncio.run(bench_backend(
                    "sqlite", sqlite_url(work / f"bench-{i}.db"), work, a.records, batch)))
            results.append(_median(runs))
        if not a.no_postgres:
            for writers in sorted({1, a.writers}):
                runs = []
                for _ in range(a.repeat):
                    with pg_database(a.postgres) as url:
                        runs.append(asyncio.run(bench_backend(
                            "postgresql", url, work, a.records, batch, writers)))
                results.append(_median(runs))
    print(f"{'backend/writers':<16} {'records':>8} {'append/s':>10} {'metering/s':>11} "
          f"{'baseline/s':>11} {'ratio':>6}  (batch ~{results[0]['batch_records']} records)")
    for r in results:
        print(f"{r['backend']:<16} {r['records']:>8} {r['append_per_s']:>10,.0f} "
              f"{r['meter_per_s']:>11,.0f} {r['base_per_s']:>11,.0f} "
              f"{r['meter_per_s'] / r['base_per_s']:>6.2f}")
    print("metering = usage rows + balanced journal entries + de-duplication, committed; "
          "baseline = plain usage inserts, committed, same batches")


if __name__ == "__main__":
    main()
