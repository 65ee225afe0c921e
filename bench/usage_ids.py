"""Flushing usage records keyed by random vs time-ordered request ids.

A request's id keys its ``usage`` row (primary key) and its journal entry
(``usage:{id}``, a unique index). The gateway used to draw them at random
(``new_id``); it now makes them ordered by time (:func:`cambist.domain.ids.ordered_id`).
This measures what that changes for the outbox flusher on a database that
already holds ``--pre`` records, in the gateway's batch size (``--batch``: a
flush interval's records at about 1,200 requests/s):

- CPU per record of this process, every thread (the SQLite driver writes from
  its own thread), from each thread's ``schedstat``;
- on PostgreSQL also the server's CPU per record (every ``postgres`` process
  of this machine) and the wall time.

Both kinds of id run on fresh databases in the same run, alternating, so
``ordered / random`` compares like with like on a noisy machine.

Run: ``python bench/usage_ids.py [--pre 100000] [--batch 240] [--batches 40]
[--repeat 2] [--no-postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metering import PG_DEFAULT, pg_database  # noqa: E402  (bench/metering.py)

from cambist.domain.clock import SystemClock  # noqa: E402
from cambist.domain.ids import new_id, ordered_id  # noqa: E402
from cambist.domain.usage import UsageRecord  # noqa: E402
from cambist.ledger.flusher import OutboxFlusher  # noqa: E402
from cambist.ledger.journal import Journal  # noqa: E402
from cambist.ledger.outbox import UsageOutbox  # noqa: E402
from cambist.store.db import migrate, open_engine, sqlite_url  # noqa: E402

KINDS: dict[str, Callable[[float], str]] = {
    "random": lambda _at: new_id("req", 12),
    "ordered": lambda at: ordered_id("req", at),
}


def _record(rid: str, i: int, at: float) -> UsageRecord:
    return UsageRecord(
        request_id=rid, tenant_id=f"ten_{i % 3:03d}", key_id="key_0001", model="llama-3.1-8b",
        endpoint_id="ep_bench", supplier="sim", prompt_tokens=120 + i % 50,
        completion_tokens=200 + i % 70, reasoning_tokens=0, price=Decimal("0.000321"),
        compute_cost=Decimal("0.000101"), price_version=1, status="ok", created_at=at,
        latency_ms=12.5, ttft_ms=None, stream=False)


def _cpu_s(pids: list[int]) -> float:
    """Seconds every thread of ``pids`` has run (schedstat, nanoseconds)."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "postgres":
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


async def _run(kind: str, url: str, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Fill a fresh database with ``--pre`` records, then time ``--batches`` flushes."""
    migrate(url)
    engine = open_engine(url)
    make = KINDS[kind]
    outbox = UsageOutbox(work / f"outbox-{kind}-{time.monotonic_ns()}.jsonl",
                         offset_key=f"bench:{kind}")
    flusher = OutboxFlusher(outbox, engine, Journal(engine, SystemClock()),
                            rotate_bytes=1 << 40)
    at, i = 1_767_225_600.0, 0
    try:
        for _ in range(max(args.pre // 2000, 0)):
            for _ in range(2000):
                outbox.append(_record(make(at), i, at))
                i, at = i + 1, at + 0.001
            await flusher.recover()
        pg = _postgres_pids() if url.startswith("postgresql") else []
        me = [os.getpid()]
        cpu = server = wall = 0.0
        for _ in range(args.batches):
            for _ in range(args.batch):
                outbox.append(_record(make(at), i, at))
                i, at = i + 1, at + 0.001
            c0, s0, w0 = _cpu_s(me), _cpu_s(pg), time.perf_counter()
            await flusher.recover()
            cpu += _cpu_s(me) - c0
            server += _cpu_s(pg) - s0
            wall += time.perf_counter() - w0
        n = args.batch * args.batches
        return {"cpu_us": cpu * 1e6 / n, "server_us": server * 1e6 / n, "wall_us": wall * 1e6 / n}
    finally:
        outbox.close()
        await engine.dispose()


def _print(backend: str, results: dict[str, list[dict[str, float]]]) -> None:
    fields = ["cpu_us", "wall_us"] + (["server_us"] if backend == "postgresql" else [])
    med = {k: {f: statistics.median(r[f] for r in runs) for f in fields}
           for k, runs in results.items()}
    for k in KINDS:
        print(f"  {backend:10} {k:8} " + "  ".join(f"{f} {med[k][f]:7.1f}" for f in fields))
    print(f"  {backend:10} ordered / random: " + "  ".join(
        f"{f} {med['ordered'][f] / med['random'][f]:.2f}" for f in fields), flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pre", type=int, default=100_000, help="records already in the database")
    ap.add_argument("--batch", type=int, default=240, help="records per flush")
    ap.add_argument("--batches", type=int, default=40, help="flushes timed")
    ap.add_argument("--repeat", type=int, default=2, help="runs per kind (medians printed)")
    ap.add_argument("--postgres", default=PG_DEFAULT)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    print(f"{args.pre} records already stored, {args.batches} flushes of {args.batch} timed; "
          f"per record (µs), medians of {args.repeat} runs; machine shared: compare within "
          "this run", flush=True)
    with tempfile.TemporaryDirectory(prefix="cambist-ids-") as tmp:
        work = Path(tmp)
        sqlite: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
        for rep in range(args.repeat):
            for kind in KINDS if rep % 2 == 0 else list(KINDS)[::-1]:
                url = sqlite_url(work / f"{kind}-{rep}.db")
                sqlite[kind].append(await _run(kind, url, work, args))
        _print("sqlite", sqlite)
        if not args.no_postgres:
            pg: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
            for rep in range(args.repeat):
                for kind in KINDS if rep % 2 == 0 else list(KINDS)[::-1]:
                    with pg_database(args.postgres) as url:
                        pg[kind].append(await _run(kind, url, work, args))
            _print("postgresql", pg)


if __name__ == "__main__":
    asyncio.run(main())
