"""Gateway scale-out on PostgreSQL + Redis: 2 processes vs 1, and what rate
limits and metering cost, in one run.

Everything runs on loopback against the fast mock upstream
(``bench/gateway/mock_upstream.py``) with the closed-loop load generator of
``bench/gateway`` (``loadgen.py``; requests/s, p50/p99, and CPU ms per request
of the gateway's processes, supervisor and workers together, from
``/proc``: nanoseconds each thread ran, from its ``schedstat``). Setup:

- a fresh PostgreSQL database ``cambist_bench_<random>`` (dropped at the end)
  and a unique ``CAMBIST_REDIS_PREFIX`` (its keys deleted at the end);
- a home bootstrapped the way ``bench/gateway/procs.py`` does it
  (``start_cambist``: ``cambist up`` once with the mock as an ``[[upstreams]]``
  provider, then stopped), here on PostgreSQL + Redis. Its config gives the
  demo tenant $1,000,000 of credit and a default plan ``bench`` of 10^9
  requests and 10^12 tokens per minute, so nothing measured is a refusal
  (every point also counts errors);
- then three ``cambist gateway`` targets on the same store, each on its own
  port, all with ``CAMBIST_DATABASE_URL`` and ``CAMBIST_REDIS_URL`` set:

  ``1 proc``        ``cambist gateway`` (one process);
  ``2 procs``       ``cambist gateway --workers 2`` (a supervisor forking two
                    workers that accept on one socket, ``cambist.app.workers``);
  ``1 proc, off``   ``bench/gateway/variant_scale.py gateway`` with
                    ``BENCH_OFF=limits+metering`` (``--off`` to change): the
                    same process with rate limits and metering switched off.

What "off" means (no product setting exists for it, so the bench-only launcher
swaps the gateway's injected dependencies after the exchange is built; see its
docstring): **limits off**: the limiter admits every request without looking up,
refilling or taking any bucket (key and tenant, requests and tokens), no token
estimate is reserved or corrected, no ``x-ratelimit-*`` headers, nothing pushed
to Redis, and no per-key budget check; **metering off**: the wallet's
``reserve``/``settle``/``release`` do nothing: no credit hold, no Redis
exposure push, no usage record appended to the outbox, so nothing flushed to
PostgreSQL (usage rows, journal entries) or reported to Redis. Still done with
them off: auth, parsing, planning and pricing, routing, forwarding, reading the
usage and building the usage record. The background loops (outbox flusher,
wallet and limit sync, routing refresh) still run, idle.

Pinning (2 cores here): the load generator and the mock share
``--client-core`` (1); ``1 proc`` and ``off`` are pinned to ``--gateway-core``
(0); ``2 procs`` gets ``--scale-cores`` (0,1), its workers free to move
between them, so its second core is the one the client and the mock use.
PostgreSQL and Redis are not pinned. For each round (``--rounds``, default 6),
mode (non-stream, stream) and concurrency (``--concurrency``, default 32,64)
each target gets ``--requests`` (3,000) in ``--blocks`` (3) blocks, the targets
interleaved block by block (ABC CBA ABC; the first target alternates between
rounds) so that they share the same spells of the machine's other load; each
block opens its connections anew after a short warm-up. "machine busy" is
the share of all cores' time not idle during a target's blocks (``/proc/stat``:
this benchmark, PostgreSQL, Redis and everything else). The summary prints
medians over rounds (the per-round ratios beside them), the ratio 2 procs /
1 proc, and the throughput lost to limits and metering, 1 - on / off (the
issue's target: under 15%), with the gateway CPU they add per request. The
machine is shared with other work: compare within a run; CPU per request is
the steadier figure, but it leaves out what PostgreSQL and Redis spend.

Run: ``python bench/gateway_scale.py`` (``--help`` for options; about 2-3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "gateway"))
sys.path.insert(0, str(HERE))

from bench import BODY, _pct  # noqa: E402  (bench/gateway/bench.py)
from loadgen import run_point  # noqa: E402  (bench/gateway/loadgen.py)
from metering import PG_DEFAULT, pg_database  # noqa: E402  (bench/metering.py)
from procs import (  # noqa: E402  (bench/gateway/procs.py)
    Proc,
    _cpu_s,
    _spawn,
    _tree,
    _wait_http,
    free_port,
    start_cambist,
    start_mock,
)

REDIS_DEFAULT = "redis://127.0.0.1:6379/0"
NAMES = ("1 proc", "2 procs", "1 proc, off")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _taskset(cores: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cores, *argv] if cores else argv


def _wait_workers(home: Path, port: int, n: int, timeout_s: float = 90) -> list[int]:
    """The pids of the ``n`` workers of the gateway on ``port``, once each has
    finished starting (its CPU use has settled below a fifth of a core)."""
    deadline = time.monotonic() + timeout_s
    path = home / f"gateway-{port}.workers.json"
    pids: list[int] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pids = [int(p) for p in json.loads(path.read_text())["workers"].values()]
        if len(pids) == n:
            before = [_cpu_s(p) for p in pids]
            time.sleep(0.5)
            busy = [_cpu_s(p) - b for p, b in zip(pids, before, strict=True)]
            if max(busy) < 0.1:
                return pids
        else:
            time.sleep(0.2)
    raise SystemExit(f"the {n} workers of the gateway on port {port} did not settle in "
                     f"{timeout_s:.0f} s")


def _start_gateway(name: str, argv: list[str], cores: str, work: Path, env: dict[str, str],
                   headers: dict[str, str]) -> Proc:
    port = free_port()
    log = work / f"gateway-{name.replace(' ', '-').replace(',', '')}.log"
    p = _spawn(_taskset(cores, [*argv, "--port", str(port)]), None, log, env)
    _wait_http(f"http://127.0.0.1:{port}/health", p, name, 90, log)
    return Proc(name, p, port, headers)


def _stop(procs: list[Proc]) -> None:
    """Stop ``procs`` (SIGTERM, then SIGKILL of anything of theirs still alive)."""
    for p in reversed(procs):
        pids = _tree(p.popen.pid)
        with contextlib.suppress(Exception):
            p.stop()
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _redis_prefix(url: str) -> Iterator[str]:
    """A unique Redis key prefix; its keys are deleted afterwards."""
    from redis import Redis

    prefix = f"cambist_bench_{secrets.token_hex(4)}"
    try:
        yield prefix
    finally:
        client = Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])
        finally:
            client.close()


async def _block(t: Proc, workers: list[int], stream: bool, conc: int, n: int, warmup: int,
                 acc: dict[str, Any]) -> None:
    """Send one block of ``n`` requests (after ``warmup``) to ``t``; add what it saw to ``acc``."""
    body = json.dumps({**BODY, "stream": stream}, separators=(",", ":")).encode()
    cpu0, w0, m0 = t.cpu_s(), [_cpu_s(w) for w in workers], _machine_ticks()
    point = await run_point("127.0.0.1", t.port, t.path, body, t.headers, concurrency=conc,
                            requests=n, warmup=warmup, stream=stream)
    acc["cpu_s"] += t.cpu_s() - cpu0
    m1 = _machine_ticks()
    acc["machine_busy"] += m1[0] - m0[0]
    acc["machine_total"] += m1[1] - m0[1]
    acc["served"] += len(point.latencies_ms) + point.errors + warmup
    acc["latencies"] += point.latencies_ms
    acc["elapsed_s"] += point.elapsed_s
    acc["errors"] += point.errors
    acc["first_error"] = acc["first_error"] or point.first_error
    for i, (w, before) in enumerate(zip(workers, w0, strict=True)):
        acc["workers_cpu_s"][i] += _cpu_s(w) - before


async def _point(targets: list[Proc], workers: dict[str, list[int]], stream: bool, conc: int,
                 args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One point: ``--blocks`` blocks per target, interleaved (ABC CBA ABC ...) so
    that every target sees the same mix of the machine's other load."""
    per_block = max(1, args.requests // args.blocks)
    warm = min(args.warmup, per_block // 10)
    accs = {t.name: {"cpu_s": 0.0, "served": 0, "latencies": [], "elapsed_s": 0.0, "errors": 0,
                     "first_error": "", "machine_busy": 0, "machine_total": 0,
                     "workers_cpu_s": [0.0] * len(workers.get(t.name, []))}
            for t in targets}
    for b in range(args.blocks):
        for t in targets if b % 2 == 0 else targets[::-1]:
            await _block(t, workers.get(t.name, []), stream, conc, per_block, warm, accs[t.name])
    row = {}
    for name, a in accs.items():
        lat = a["latencies"]
        row[name] = {"rps": len(lat) / a["elapsed_s"] if a["elapsed_s"] else 0.0,
                     "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99), "errors": a["errors"],
                     "first_error": a["first_error"],
                     "cpu_ms_per_req": a["cpu_s"] * 1000 / max(a["served"], 1),
                     "machine_busy": a["machine_busy"] / max(a["machine_total"], 1)}
        if a["workers_cpu_s"]:
            row[name]["busiest_worker_share"] = (max(a["workers_cpu_s"])
                                                 / max(sum(a["workers_cpu_s"]), 1e-9))
    return row


async def _run(args: argparse.Namespace, targets: list[Proc], workers: dict[str, list[int]]
               ) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = []
    for rnd in range(1, args.rounds + 1):
        print(f"\n===== round {rnd} (load average {os.getloadavg()[0]:.1f}) =====", flush=True)
        order = targets if rnd % 2 else targets[::-1]
        for stream in (False, True):
            mode = "stream" if stream else "non-stream"
            for conc in args.concurrency:
                row = await _point(order, workers, stream, conc, args)
                print(f"{mode} c={conc}:")
                for name in NAMES:
                    r = row[name]
                    share = (f"  busiest worker {r['busiest_worker_share']:.0%} of CPU"
                             if "busiest_worker_share" in r else "")
                    print(f"  {name:12} {r['rps']:7.0f} req/s  p50 {r['p50']:7.2f} ms  "
                          f"p99 {r['p99']:7.2f} ms  cpu {r['cpu_ms_per_req']:.3f} ms/req  "
                          f"machine busy {r['machine_busy']:.0%}  errors {r['errors']}{share}",
                          flush=True)
                    if r["errors"]:
                        print(f"    first error: {r['first_error']}")
                points.append({"round": rnd, "mode": mode, "conc": conc, "row": row})
    return points


def _summary(points: list[dict[str, Any]], args: argparse.Namespace) -> None:
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in points:
        by.setdefault((p["mode"], p["conc"]), []).append(p["row"])

    def med(rows: list[dict[str, Any]], name: str, key: str) -> float:
        vals = [r[name][key] for r in rows if key in r[name]]
        return statistics.median(vals) if vals else float("nan")

    def each(rows: list[dict[str, Any]], f: Any, fmt: str) -> str:
        """``f(row)`` of every round, for the spread behind a median."""
        return ", ".join(format(f(r), fmt) for r in rows)

    print(f"\n===== medians of {args.rounds} rounds, {args.requests} requests per point "
          f"(machine shared with other work: compare within this run) =====")
    print("\n2 processes vs 1 (`cambist gateway --workers 2` vs `cambist gateway`), "
          "PostgreSQL + Redis, limits and metering on:\n")
    print("| mode | c | 1 proc req/s | 2 procs req/s | 2 / 1 (each round) | p50 ms 1 / 2 | "
          "p99 ms 1 / 2 | CPU ms/req 1 / 2 | busiest worker's CPU share | machine busy 1 / 2 |")
    print("|---|---:|---:|---:|---:|---|---|---|---:|---|")
    for (mode, conc), rows in by.items():
        one, two = med(rows, "1 proc", "rps"), med(rows, "2 procs", "rps")
        rounds = each(rows, lambda r: r["2 procs"]["rps"] / r["1 proc"]["rps"], ".2f")
        print(f"| {mode} | {conc} | {one:,.0f} | {two:,.0f} | {two / one:.2f} ({rounds}) | "
              f"{med(rows, '1 proc', 'p50'):.1f} / {med(rows, '2 procs', 'p50'):.1f} | "
              f"{med(rows, '1 proc', 'p99'):.1f} / {med(rows, '2 procs', 'p99'):.1f} | "
              f"{med(rows, '1 proc', 'cpu_ms_per_req'):.2f} / "
              f"{med(rows, '2 procs', 'cpu_ms_per_req'):.2f} | "
              f"{med(rows, '2 procs', 'busiest_worker_share'):.0%} | "
              f"{med(rows, '1 proc', 'machine_busy'):.0%} / "
              f"{med(rows, '2 procs', 'machine_busy'):.0%} |")
    print(f"\nRate limits + metering on vs off ({args.off}), one process:\n")
    print("| mode | c | on req/s | off req/s | throughput loss (each round, %) | p50 ms on / off | "
          "CPU ms/req on / off | CPU added per request |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for (mode, conc), rows in by.items():
        on, off = med(rows, "1 proc", "rps"), med(rows, "1 proc, off", "rps")
        cpu_on = med(rows, "1 proc", "cpu_ms_per_req")
        cpu_off = med(rows, "1 proc, off", "cpu_ms_per_req")
        rounds = each(rows, lambda r: (1 - r["1 proc"]["rps"] / r["1 proc, off"]["rps"]) * 100,
                      ".0f")
        print(f"| {mode} | {conc} | {on:,.0f} | {off:,.0f} | {(1 - on / off) * 100:.1f}% "
              f"({rounds}) | "
              f"{med(rows, '1 proc', 'p50'):.1f} / {med(rows, '1 proc, off', 'p50'):.1f} | "
              f"{cpu_on:.3f} / {cpu_off:.3f} | {(cpu_on - cpu_off) * 1000:+.0f} µs "
              f"({(cpu_on / cpu_off - 1) * 100:+.0f}%) |")
    errors = sum(r["errors"] for p in points for r in p["row"].values())
    print(f"\nerrors (non-200 or stream without [DONE]) over all points: {errors}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000, help="per point, after warm-up")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                    default=[32, 64])
    ap.add_argument("--rounds", type=int, default=6,
                    help="rounds per point; the summary takes medians over them (single "
                         "rounds on this shared host scatter by several points)")
    ap.add_argument("--blocks", type=int, default=3,
                    help="each point's requests are sent in this many blocks per target, "
                         "the targets interleaved block by block")
    ap.add_argument("--events", type=int, default=24, help="SSE events per streamed answer")
    ap.add_argument("--gateway-core", default="0", help="cores of the 1-process gateways")
    ap.add_argument("--scale-cores", default="0,1", help="cores of the 2-process gateway")
    ap.add_argument("--client-core", type=int, default=1,
                    help="core of the load generator and the mock")
    ap.add_argument("--off", default="limits+metering",
                    help="what the 'off' target switches off (BENCH_OFF of variant_scale.py)")
    ap.add_argument("--postgres", default=PG_DEFAULT,
                    help="server (any database on it) where the bench database is created")
    ap.add_argument("--redis", default=REDIS_DEFAULT)
    ap.add_argument("--json", type=Path, help="also write every point here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on SIGTERM too
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        print("uvloop not installed: the load generator runs on asyncio's loop")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_core})
    started = time.monotonic()
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="cambist-scale-") as tmp, \
            pg_database(args.postgres) as db_url, _redis_prefix(args.redis) as prefix:
        work = Path(tmp)
        db = urlsplit(db_url)._replace(scheme="postgresql+asyncpg").geturl()
        os.environ.update({"CAMBIST_DATABASE_URL": db, "CAMBIST_REDIS_URL": args.redis,
                           "CAMBIST_REDIS_PREFIX": prefix})
        try:
            mock = start_mock(args.client_core, work, args.events, 0.0, 0.0)
            procs.append(mock)
            start_cambist(None, work, f"http://127.0.0.1:{mock.port}", variants=())
            home = work / "cambist-home"
            conn = json.loads((home / "connection.json").read_text())
            headers = {"authorization": f"Bearer {conn['demo_key']}"}
            env = {**os.environ, "CAMBIST_HOME": str(home), "CAMBIST_PROVISION_DELAY_S": "0"}
            cli = [sys.executable, "-m", "cambist.cli", "gateway"]
            one = _start_gateway("1 proc", cli, args.gateway_core, work, env, headers)
            procs.append(one)
            two = _start_gateway("2 procs", [*cli, "--workers", "2"], args.scale_cores, work,
                                 env, headers)
            procs.append(two)
            workers = _wait_workers(home, two.port, 2)
            off = _start_gateway("1 proc, off",
                                 [sys.executable, str(HERE / "gateway" / "variant_scale.py"),
                                  "gateway"], args.gateway_core, work,
                                 {**env, "BENCH_OFF": args.off}, headers)
            procs.append(off)
            print(f"PostgreSQL database {urlsplit(db_url).path[1:]}, Redis prefix {prefix}; "
                  f"pinning: 1 proc and off on core {args.gateway_core}, 2 procs on cores "
                  f"{args.scale_cores} (workers float), load generator + mock on core "
                  f"{args.client_core}, PostgreSQL and Redis unpinned; {os.cpu_count()} cores; "
                  f"{args.requests} requests per point and target in {args.blocks} blocks, each "
                  f"after {min(args.warmup, args.requests // args.blocks // 10)} warm-up; "
                  f"{args.events} SSE events per stream. The machine is shared with other "
                  f"work, so absolute figures are noisy: compare within this run.", flush=True)
            points = asyncio.run(_run(args, [one, two, off], {"2 procs": workers}))
        finally:
            _stop(procs)
    _summary(points, args)
    print(f"\n(total {time.monotonic() - started:.0f} s; load average now "
          f"{os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps(points, indent=1))


if __name__ == "__main__":
    main()
