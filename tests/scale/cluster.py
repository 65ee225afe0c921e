"""A real cluster for the scale tests: ``cambist up`` (control plane, leader)
and ``cambist gateway --workers 4`` on one PostgreSQL database and one Redis,
in front of the mock upstream of ``tests/scale/upstream.py``; plus a load
generator that records every response."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.e2e.exchange_process import ExchangeProcess, _env, free_port

__all__ = ["Cluster", "Load", "Upstream", "hammer"]

HERE = Path(__file__).resolve().parent
MODEL = "scale-model"
BODY = {"model": MODEL, "max_tokens": 24, "messages": [{"role": "user", "content": "hi"}]}


class Upstream:
    """The mock upstream process."""

    def __init__(self, latency_ms: float = 20.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py"), "--port", "0",
             "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"mock upstream did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def config_toml(upstream_port: int, tenant_plans: dict[str, str]) -> str:
    """The exchange's config: the mock upstream, a tight plan, who is on it."""
    plans = ", ".join(f'{t} = "{p}"' for t, p in tenant_plans.items())
    return f"""
tenant_plans = {{ {plans} }}

[[upstreams]]
name = "mock"
base_url = "http://127.0.0.1:{upstream_port}/v1"
models = ["{MODEL}"]
input_price_per_mtok = 1000
output_price_per_mtok = 2000

[[plans]]
name = "tight"
requests_per_minute = 30
tokens_per_minute = 1000000
"""


@dataclass
class Cluster:
    """``up`` plus a 4-worker gateway on shared PostgreSQL and Redis."""

    home: Path
    env: dict[str, str]
    upstream: Upstream
    db_url: str
    up: ExchangeProcess | None = None
    gateway: subprocess.Popen[str] | None = None
    gateway_port: int = 0
    workers: int = 4

    def start_up(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(config_toml(self.upstream.port, {}))
        self.up = ExchangeProcess(self.home, env=self.env).start(timeout=90)

    def cli(self, *args: str) -> str:
        assert self.up is not None
        r = self.up.cli(*args)
        if r.returncode != 0:
            raise AssertionError(f"cambist {' '.join(args)}: {r.stdout}{r.stderr}")
        return r.stdout

    def tenant(self, name: str, credit: str) -> dict[str, Any]:
        t: dict[str, Any] = json.loads(self.cli("tenants", "create", name, "--json"))
        self.cli("credits", "add", t["id"], credit)
        return t

    def start_gateway(self, tenant_plans: dict[str, str], timeout: float = 90.0) -> None:
        (self.home / "config.toml").write_text(config_toml(self.upstream.port, tenant_plans))
        self.gateway_port = free_port()
        self._log = open(self.home.parent / "gateway.log", "a")  # noqa: SIM115 - closed in stop
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "cambist.cli", "gateway", "--port", str(self.gateway_port),
             "--workers", str(self.workers)],
            env=_env(self.home, self.env), stdout=self._log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway.poll() is not None:
                raise RuntimeError(f"gateway exited {self.gateway.returncode}:\n{self.log()}")
            if self._workers_ready() == self.workers:
                return
            time.sleep(0.3)
        raise RuntimeError(f"gateway workers not ready in {timeout}s:\n{self.log()}")

    def _workers_ready(self) -> int:
        # A worker commits its outbox position during startup recovery, then serves.
        rows = self.sql("SELECT count(*) FROM settings WHERE key LIKE %s",
                        (f"outbox_offset:gateway-{self.gateway_port}-w%",))
        ready = int(rows[0][0])
        if ready == self.workers:
            try:
                httpx.get(f"{self.base_url}/health", timeout=2).raise_for_status()
            except httpx.HTTPError:
                return 0
        return ready

    def log(self) -> str:
        path = self.home.parent / "gateway.log"
        return path.read_text()[-5000:] if path.exists() else ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def worker_pids(self) -> dict[int, int]:
        data = json.loads((self.home / f"gateway-{self.gateway_port}.workers.json").read_text())
        return {int(i): int(p) for i, p in data["workers"].items()}

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def usage_ids(self, tenant_id: str) -> list[str]:
        return [r[0] for r in self.sql("SELECT request_id FROM usage WHERE tenant_id = %s",
                                       (tenant_id,))]

    def charged(self, tenant_id: str) -> Decimal:
        rows = self.sql("SELECT coalesce(sum(price_micros), 0) FROM usage WHERE tenant_id = %s",
                        (tenant_id,))
        return Decimal(int(rows[0][0])) / 1_000_000

    def wait_flushed(self, tenant_id: str, request_ids: set[str], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request_ids <= set(self.usage_ids(tenant_id)):
                return
            time.sleep(0.3)

    def stop(self) -> None:
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            try:
                self.gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait()
        if self.gateway is not None:
            self._log.close()
        if self.up is not None:
            self.up.stop()
        self.upstream.stop()


@dataclass
class Load:
    """What a load run got back."""

    statuses: dict[int, int] = field(default_factory=dict)
    ok_ids: set[str] = field(default_factory=set)
    costs: list[Decimal] = field(default_factory=list)
    errors: int = 0  # transport errors (a killed worker)
    credit_pending: int = 0  # 429s for credit not yet confirmed by Redis
    first: float = 0.0
    last_ok: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)


async def hammer(base_url: str, key: str, seconds: float, concurrency: int, *,
                 until: Callable[[Load], bool] | None = None, max_seconds: float = 30.0) -> Load:
    """Send chat requests with ``concurrency`` clients for ``seconds``; a new
    connection per request, so the kernel spreads them over the workers. With
    ``until``, go on past ``seconds`` (up to ``max_seconds``) until it holds: on
    a loaded machine 4 s may not be enough requests to reach a limit."""
    load = Load(first=time.monotonic())
    stop = load.first + seconds
    hard_stop = load.first + max_seconds
    headers = {"authorization": f"Bearer {key}"}

    def going() -> bool:
        now = time.monotonic()
        return now < stop or (until is not None and not until(load) and now < hard_stop)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers,
                                     limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while going():
                try:
                    r = await c.post("/v1/chat/completions", json=BODY)
                    body = r.json() if r.status_code == 200 else None
                except (httpx.HTTPError, ValueError):
                    load.errors += 1
                    await asyncio.sleep(0.05)
                    continue
                load.statuses[r.status_code] = load.statuses.get(r.status_code, 0) + 1
                if body is not None and body.get("choices"):  # a full response
                    load.ok_ids.add(r.headers["x-request-id"])
                    load.costs.append(Decimal(r.headers["x-cambist-cost"]))
                    load.last_ok = time.monotonic()
                elif r.status_code in (402, 429):
                    if b"credit_pending" in r.content:
                        load.credit_pending += 1
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return load
