"""Gateway speed: Cambist against direct, a bare passthrough and LiteLLM, in one run.

Starts the mock upstream (``mock_upstream.py``) and this load generator on the
client core, and each gateway as one process pinned to the gateway core:
the bare aiohttp passthrough (``passthrough.py``), ``cambist gateway`` (auth,
rate limits, credit reservation, routing, metering all on; the mock is a
configured upstream) and LiteLLM's proxy (one worker, no database). For each
round, mode (non-stream, stream) and concurrency it measures every target in
turn and prints requests/s, p50/p99 latency, what each gateway adds over
direct at p50 and p99, stream TTFB, CPU ms per request (user+sys of the
gateway process ÷ requests) and the ratios the issue sets targets on; then
each gateway's RSS after start and after ``--soak`` more requests.

Run: ``bench/gateway/run.sh`` (or ``python bench/gateway/bench.py --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Point, run_point
from procs import (
    MODEL,
    Proc,
    start_cambist,
    start_litellm,
    start_mock,
    start_passthrough,
)

BODY = {"model": MODEL, "max_tokens": 32,
        "messages": [{"role": "user", "content": "benchmark the gateway, please"}]}
_FILLER = ("Summarize the following notes on routing inference requests by price and "
           "latency, keeping every figure exact. ")
PROMPT_BYTES = 0
"""``--prompt-bytes``: the user message padded with English to about this size."""


def request_body(stream: bool) -> bytes:
    """The benchmark's chat request (its message padded to ``PROMPT_BYTES``)."""
    body: dict[str, Any] = {**BODY, "stream": stream}
    if len(BODY["messages"][0]["content"]) < PROMPT_BYTES:
        text = (_FILLER * (PROMPT_BYTES // len(_FILLER) + 1))[:PROMPT_BYTES]
        body["messages"] = [{"role": "user", "content": text}]
    return json.dumps(body, separators=(",", ":")).encode()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _measure(proc: Proc, stream: bool, conc: int, n: int, warmup: int) -> dict[str, Any]:
    body = request_body(stream)
    cpu0 = proc.cpu_s()
    point: Point = await run_point("127.0.0.1", proc.port, proc.path, body, proc.headers,
                                   concurrency=conc, requests=n, warmup=warmup, stream=stream)
    cpu = proc.cpu_s() - cpu0
    served = len(point.latencies_ms) + point.errors + warmup
    lat = point.latencies_ms
    return {"rps": point.rps, "p50": _pct(lat, 0.5), "p99": _pct(lat, 0.99),
            "ttfb50": _pct(point.ttfb_ms, 0.5), "ok": len(lat), "errors": point.errors,
            "first_error": point.first_error, "cpu_ms_per_req": cpu * 1000 / max(served, 1)}


def _fmt(v: float, w: int = 8, d: int = 2) -> str:
    return f"{v:{w}.{d}f}" if v == v else f"{'-':>{w}}"


def _print_point(mode: str, conc: int, row: dict[str, dict[str, Any]]) -> None:
    d = row.get("direct", {})
    print(f"\n{mode} c={conc}")
    print(f"  {'target':12}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'+p50':>8}{'+p99':>8}"
          f"{'ttfb50':>8}{'+ttfb':>8}{'cpu ms/r':>9}{'err':>5}")
    for name, r in row.items():
        add50 = r["p50"] - d.get("p50", float("nan"))
        add99 = r["p99"] - d.get("p99", float("nan"))
        addt = r["ttfb50"] - d.get("ttfb50", float("nan"))
        print(f"  {name:12}{_fmt(r['rps'], 9, 0)}{_fmt(r['p50'], 9)}{_fmt(r['p99'], 9)}"
              f"{_fmt(add50)}{_fmt(add99)}{_fmt(r['ttfb50'])}{_fmt(addt)}"
              f"{_fmt(r['cpu_ms_per_req'], 9, 3)}{r['errors']:5d}")
        if r["errors"]:
            print(f"    first error: {r['first_error']}")
    c, p, lite = row.get("cambist"), row.get("passthrough"), row.get("litellm")
    ratios = []
    if c and p:
        ratios.append(f"cambist/passthrough rps {c['rps'] / p['rps']:.2f}")
        ratios.append(f"cpu/req {c['cpu_ms_per_req'] / p['cpu_ms_per_req']:.2f}x")
    if c and lite and lite["rps"]:
        ratios.append(f"cambist/litellm rps {c['rps'] / lite['rps']:.1f}x")
    if ratios:
        print("  " + "; ".join(ratios))


async def _soak(proc: Proc, total: int, conc: int) -> list[tuple[int, float]]:
    """RSS after 10,000 non-stream requests and after ``total``."""
    body = request_body(False)
    marks, done = [], 0
    for target in (10_000, total):
        if target <= done:
            continue
        await run_point("127.0.0.1", proc.port, proc.path, body, proc.headers,
                        concurrency=conc, requests=target - done, warmup=0, stream=False)
        done = target
        marks.append((done, proc.rss_mib()))
    return marks


async def _run(args: argparse.Namespace, targets: list[Proc]) -> dict[str, Any]:
    results: dict[str, Any] = {"points": [], "rss_start": {}, "soak": {}}
    for t in targets:
        results["rss_start"][t.name] = t.rss_mib()
    for rnd in range(1, args.rounds + 1):
        print(f"\n===== round {rnd} =====")
        for stream in (False, True):
            mode = "stream" if stream else "non-stream"
            for conc in args.concurrency:
                row: dict[str, dict[str, Any]] = {}
                for t in targets:
                    n = args.litellm_requests if t.name == "litellm" else args.requests
                    warm = min(args.warmup, n // 10)
                    row[t.name] = await _measure(t, stream, conc, n, warm)
                _print_point(mode, conc, row)
                results["points"].append({"round": rnd, "mode": mode, "conc": conc, "row": row})
    for t in targets:
        if t.name in ("passthrough", "cambist") and args.soak:
            results["soak"][t.name] = await _soak(t, args.soak, 32)
    return results


def _summary(results: dict[str, Any]) -> None:
    print("\n===== memory (RSS MiB) =====")
    for name, rss in results["rss_start"].items():
        soak = " ".join(f"after {n:,}: {m:.0f}" for n, m in results["soak"].get(name, []))
        print(f"  {name:12} after start: {rss:.0f}  {soak}")
    print("\n===== medians over rounds =====")
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in results["points"]:
        by.setdefault((p["mode"], p["conc"]), []).append(p["row"])
    for (mode, conc), rows in by.items():
        def med(name: str, key: str, rows: list[dict[str, Any]] = rows) -> float:
            vals = [r[name][key] for r in rows if name in r]
            return statistics.median(vals) if vals else float("nan")
        parts = [f"{n} {med(n, 'rps'):.0f} ({med(n, 'cpu_ms_per_req'):.3f})" for n in rows[0]]
        line = f"  {mode:10} c={conc:<3} req/s (cpu ms/req): " + ", ".join(parts)
        if "cambist" in rows[0] and "passthrough" in rows[0]:
            line += f" | cambist/pass {med('cambist', 'rps') / med('passthrough', 'rps'):.2f}"
            cpu = med("cambist", "cpu_ms_per_req") / med("passthrough", "cpu_ms_per_req")
            line += f", cpu/req x{cpu:.2f}"
        if "cambist" in rows[0] and "litellm" in rows[0]:
            line += f", cambist/litellm {med('cambist', 'rps') / med('litellm', 'rps'):.1f}x"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="per point, after warm-up")
    ap.add_argument("--litellm-requests", type=int, default=300,
                    help="per point for LiteLLM (it serves ~100 req/s)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                    default=[1, 8, 32, 64])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--events", type=int, default=24, help="SSE events per streamed answer")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="mock's fixed latency")
    ap.add_argument("--soak", type=int, default=100_000,
                    help="requests before the last RSS reading (0: skip)")
    ap.add_argument("--gateway-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--only", default="direct,passthrough,cambist,litellm",
                    help="comma-separated targets")
    ap.add_argument("--litellm", type=Path, default=Path("/tmp/litellm-venv/bin/litellm"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--prompt-bytes", type=int, default=0,
                    help="pad the chat message with English to this many bytes (an 8 KB "
                         "prompt is about 2,000 tokens)")
    ap.add_argument("--cambist-variants", type=lambda s: [v for v in s.split(",") if v],
                    default=[], help="also measure these Cambist variants (uvloop)")
    args = ap.parse_args()
    global PROMPT_BYTES
    PROMPT_BYTES = args.prompt_bytes
    only = set(args.only.split(","))
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        print("uvloop not installed: the load generator runs on asyncio's loop")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_core})
    with tempfile.TemporaryDirectory(prefix="cambist-bench-") as tmp:
        work = Path(tmp)
        mock = start_mock(args.client_core, work, args.events, args.latency_ms, 0.0)
        upstream = f"http://127.0.0.1:{mock.port}"
        procs: list[Proc] = [mock]
        try:
            if "passthrough" in only:
                procs.append(start_passthrough(args.gateway_core, work, upstream))
            if "cambist" in only:
                variants = ("default", *args.cambist_variants)
                procs += start_cambist(args.gateway_core, work, upstream, variants)
                only |= {f"cambist-{v}" for v in args.cambist_variants}
            if "litellm" in only:
                if args.litellm.exists():
                    procs.append(start_litellm(args.gateway_core, work, upstream, args.litellm))
                else:
                    print(f"LiteLLM not found at {args.litellm}: skipped (run.sh installs it)")
            targets = [p for p in procs if p.name in only]
            print(f"gateway core {args.gateway_core}, client+mock core {args.client_core}; "
                  f"{args.requests} requests per point ({args.litellm_requests} for LiteLLM) "
                  f"after {args.warmup} warm-up; {args.events} SSE events per stream; "
                  f"mock latency {args.latency_ms} ms; "
                  f"request body {len(request_body(False))} bytes")
            results = asyncio.run(_run(args, targets))
        finally:
            for p in reversed(procs):
                p.stop()
    _summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
