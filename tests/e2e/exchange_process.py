"""A real ``cambist up`` subprocess on a temporary home and a free port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ExchangeProcess", "free_port", "run_cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, overrides: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMBIST_")}
    env.update({
        "CAMBIST_HOME": str(home),
        "CAMBIST_ENGINE_TIME_SCALE": "0.05",
        "CAMBIST_PROVISION_DELAY_S": "0.2",
        "CAMBIST_MARKET_INTERVAL_S": "2",
        "CAMBIST_HEALTH_INTERVAL_S": "0.5",
        "CAMBIST_SPOT_PREEMPTION_PER_HOUR": "0",
        "CAMBIST_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides or {})
    return env


def run_cli(home: Path, *args: str, timeout: float = 120.0, key: str | None = None) \
        -> subprocess.CompletedProcess[str]:
    """Run ``cambist ARGS`` against the exchange of ``home``."""
    argv = [sys.executable, "-m", "cambist.cli", *(["--key", key] if key else []), *args]
    env = _env(home)
    env["COLUMNS"] = "200"
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


class ExchangeProcess:
    """Start, wait for, talk to and stop one exchange."""

    def __init__(self, home: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.home = home
        self.env_overrides = env or {}
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = home.parent / f"{home.name}-up.log"

    def start(self, timeout: float = 60.0) -> ExchangeProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cambist.cli", "up", "--port", str(self.port)],
            env=_env(self.home, self.env_overrides), stdout=log, stderr=subprocess.STDOUT,
            text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cambist up exited {self.proc.returncode}:\n{self.output()}")
            if (self.home / "connection.json").exists():
                try:
                    if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"cambist up not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection(self) -> dict[str, Any]:
        return json.loads((self.home / "connection.json").read_text())

    def client(self, key: str | None = None) -> httpx.Client:
        k = key or self.connection["admin_key"]
        return httpx.Client(base_url=self.base_url, timeout=30,
                            headers={"authorization": f"Bearer {k}"})

    def engine_records(self) -> list[dict[str, Any]]:
        d = self.home / "suppliers" / "engines"
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() \
            else []

    def cli(self, *args: str, key: str | None = None, timeout: float = 120.0) \
            -> subprocess.CompletedProcess[str]:
        return run_cli(self.home, *args, key=key, timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def reference_engine(served: str, *extra: str, model: str = "qwen2.5-7b",
                     sku: str = "L4-24GB", time_scale: float = 0.05) -> Iterator[str]:
    """A reference engine process on a free port serving ``model`` as ``served``;
    yields its ``/v1`` base URL and stops it at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cambist.engine", "--model", model, "--sku", sku,
         "--port", "0", "--time-scale", str(time_scale), "--served-name", served, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("CAMBIST_ENGINE_READY "), line + (
            proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
        ready = json.loads(line.split(" ", 1)[1])
        assert ready["pid"] == proc.pid
        yield f"http://127.0.0.1:{ready['port']}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
