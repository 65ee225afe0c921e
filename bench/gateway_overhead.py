"""What the gateway adds on top of an engine, measured in the same run.

Starts a real ``cambist up`` on a temporary home with reference engines whose
simulated GPU takes no time (``--engine-time-scale 0``), deploys one replica,
then sends the same requests straight to the engine (the baseline) and
through the gateway (auth, pricing, reservation, routing, proxying, metering),
sequentially for latency and with concurrency for throughput. Prints both and
their ratios. Run: ``python bench/gateway_overhead.py [--requests 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BODY = {"model": "qwen2.5-7b", "max_tokens": 16,
        "messages": [{"role": "user", "content": "benchmark the gateway"}]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CAMBIST_HOME": str(home), "CAMBIST_PROVISION_DELAY_S": "0",
           "CAMBIST_LOG_LEVEL": "warning", "CAMBIST_SPOT_PREEMPTION_PER_HOUR": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "cambist.cli", "up", "--port", str(port),
                             "--engine-time-scale", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (home / "connection.json").exists() and httpx.get(
                    f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("cambist up did not start")


async def _sequential(client: httpx.AsyncClient, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = await client.post(url, json=BODY)
        r.raise_for_status()
        out.append((time.perf_counter() - t) * 1000)
    return out


async def _concurrent(client: httpx.AsyncClient, url: str, n: int, conc: int) -> float:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            (await client.post(url, json=BODY)).raise_for_status()

    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - t)


async def _measure(engine_url: str, gw_url: str, key: str, n: int, conc: int) -> dict:
    limits = httpx.Limits(max_connections=conc * 2, max_keepalive_connections=conc * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as direct, httpx.AsyncClient(
            timeout=60, limits=limits, headers={"authorization": f"Bearer {key}"}) as gw:
        await _sequential(direct, engine_url, 20)  # warm up both paths
        await _sequential(gw, gw_url, 20)
        lat_d = await _sequential(direct, engine_url, n)
        lat_g = await _sequential(gw, gw_url, n)
        rps_d = await _concurrent(direct, engine_url, n, conc)
        rps_g = await _concurrent(gw, gw_url, n, conc)
    return {"lat_direct": lat_d, "lat_gateway": lat_g, "rps_direct": rps_d, "rps_gateway": rps_g}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, port = Path(tmp) / "home", _free_port()
        proc = _start(home, port)
        try:
            conn = json.loads((home / "connection.json").read_text())
            env = {**os.environ, "CAMBIST_HOME": str(home)}
            subprocess.run([sys.executable, "-m", "cambist.cli", "deploy", "qwen2.5-7b",
                            "--name", "bench", "--timeout", "60"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            eps = httpx.get(f"{conn['base_url']}/v1/endpoints", headers={
                "authorization": f"Bearer {conn['admin_key']}"}).json()["data"]
            engine = eps[0]["url"].rstrip("/") + "/v1/chat/completions"
            res = asyncio.run(_measure(engine, conn["base_url"] + "/v1/chat/completions",
                                       conn["demo_key"], args.requests, args.concurrency))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    p50d, p50g = statistics.median(res["lat_direct"]), statistics.median(res["lat_gateway"])
    p99d = statistics.quantiles(res["lat_direct"], n=100)[98]
    p99g = statistics.quantiles(res["lat_gateway"], n=100)[98]
    print(f"requests: {args.requests} sequential, then {args.requests} at concurrency "
          f"{args.concurrency}; engine takes no simulated GPU time")
    print(f"{'':24}{'direct engine':>16}{'via gateway':>14}{'ratio':>8}")
    print(f"{'p50 latency (ms)':24}{p50d:16.2f}{p50g:14.2f}{p50g / p50d:8.2f}")
    print(f"{'p99 latency (ms)':24}{p99d:16.2f}{p99g:14.2f}{p99g / p99d:8.2f}")
    print(f"{'added p50 (ms)':24}{'':16}{p50g - p50d:14.2f}")
    rd, rg = res["rps_direct"], res["rps_gateway"]
    print(f"{'throughput (req/s)':24}{rd:16.1f}{rg:14.1f}{rg / rd:8.2f}")


if __name__ == "__main__":
    main()
