"""Starting, pinning, watching and stopping the processes of the gateway benchmark."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Proc", "free_port", "start_cambist", "start_litellm", "start_mock",
           "start_passthrough"]

HERE = Path(__file__).resolve().parent
MODEL = "bench-model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinned(core: int | None, argv: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc/<pid>/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


@dataclass
class Proc:
    """A started process: its name, port, base URL and headers to use."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    headers: dict[str, str]
    path: str = "/v1/chat/completions"

    def cpu_s(self) -> float:
        """CPU seconds of the process and its descendants: the nanoseconds each
        thread ran (``/proc/<pid>/task/<tid>/schedstat``), else user + system
        in clock ticks (``/proc/<pid>/stat``: 10 ms steps, which over a block of
        a thousand requests is 10 µs a request)."""
        total = 0.0
        for pid in _tree(self.popen.pid):
            total += _cpu_s(pid)
        return total

    def rss_mib(self) -> float:
        """Resident memory of the process and its descendants, MiB."""
        total = 0
        for pid in _tree(self.popen.pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _wait_http(url: str, popen: subprocess.Popen[bytes], name: str, timeout_s: float,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise SystemExit(f"{name} exited with {popen.returncode} while starting\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    popen.kill()
    raise SystemExit(f"{name} did not answer {url} within {timeout_s:.0f} s")


def _cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` (every thread it has now), nanosecond-precise where
    the kernel keeps scheduler statistics (a thread that exits while it is read
    is skipped, so two readings always use the same clock)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    if tids and os.path.exists(f"/proc/{pid}/task/{tids[0]}/schedstat"):
        ns = 0
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
            except OSError:
                continue
        return ns / 1e9
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(argv: list[str], core: int | None, log: Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(_pinned(core, argv), stdout=out, stderr=subprocess.STDOUT,
                            env=env or os.environ.copy(), start_new_session=True)


def start_mock(core: int | None, workdir: Path, events: int, latency_ms: float,
               chunk_delay_ms: float) -> Proc:
    port = free_port()
    log = workdir / "mock.log"
    p = _spawn([sys.executable, str(HERE / "mock_upstream.py"), "--port", str(port),
                "--events", str(events), "--latency-ms", str(latency_ms),
                "--chunk-delay-ms", str(chunk_delay_ms)], core, log)
    _wait_http(f"http://127.0.0.1:{port}/health", p, "mock upstream", 20, log)
    return Proc("direct", p, port, {})


def start_passthrough(core: int | None, workdir: Path, upstream: str) -> Proc:
    port = free_port()
    log = workdir / "passthrough.log"
    p = _spawn([sys.executable, str(HERE / "passthrough.py"), "--port", str(port),
                "--upstream", upstream], core, log)
    _wait_http(f"http://127.0.0.1:{port}/health", p, "passthrough", 20, log)
    return Proc("passthrough", p, port, {})


_CAMBIST_CONFIG = """\
log_level = "warning"
demo_credit = "1000000"
default_plan = "bench"
spot_preemption_per_hour = 0

[[plans]]
name = "bench"
requests_per_minute = 1000000000
tokens_per_minute = 1000000000000

[[upstreams]]
name = "mock"
base_url = "{upstream}/v1"
max_concurrency = 4096
models = [{{ name = "{model}", input_price_per_mtok = 0.10, output_price_per_mtok = 0.20 }}]
"""


def start_cambist(core: int | None, workdir: Path, upstream: str,
                  variants: tuple[str, ...] = ("default",)) -> list[Proc]:
    """Bootstrap a home with ``cambist up`` (keys, credit, the mock as a
    configured upstream), stop it, then serve it with ``cambist gateway``, once
    per variant: ``default`` (as installed) or parts of ``variant_cli.py``
    (``uvloop``, ``fast``, ``uvloop+fast``) to measure what they buy."""
    home = workdir / "cambist-home"
    home.mkdir()
    (home / "config.toml").write_text(_CAMBIST_CONFIG.format(upstream=upstream, model=MODEL))
    env = {**os.environ, "CAMBIST_HOME": str(home), "CAMBIST_PROVISION_DELAY_S": "0"}
    cli = [sys.executable, "-m", "cambist.cli"]
    port = free_port()
    log = workdir / "cambist-up.log"
    up = _spawn([*cli, "up", "--port", str(port)], None, log, env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", up, "cambist up", 90, log)
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    conn = json.loads((home / "connection.json").read_text())
    procs = []
    for variant in variants:
        port = free_port()
        log = workdir / f"cambist-gateway-{variant}.log"
        argv = cli if variant == "default" else [sys.executable, str(HERE / "variant_cli.py")]
        p = _spawn([*argv, "gateway", "--port", str(port)], core, log,
                   {**env, "BENCH_VARIANT": variant})
        _wait_http(f"http://127.0.0.1:{port}/health", p, "cambist gateway", 90, log)
        name = "cambist" if variant == "default" else f"cambist-{variant}"
        procs.append(Proc(name, p, port, {"authorization": f"Bearer {conn['demo_key']}"}))
    return procs


_LITELLM_CONFIG = """\
model_list:
  - model_name: {model}
    litellm_params:
      model: openai/{model}
      api_base: {upstream}/v1
      api_key: sk-bench
litellm_settings:
  set_verbose: false
  telemetry: false
"""


def start_litellm(core: int | None, workdir: Path, upstream: str, binary: Path) -> Proc:
    """LiteLLM's proxy, one worker, no database, the mock as its only model."""
    cfg = workdir / "litellm.yaml"
    cfg.write_text(_LITELLM_CONFIG.format(upstream=upstream, model=MODEL))
    port = free_port()
    log = workdir / "litellm.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    master = "sk-" + secrets.token_hex(32)  # LiteLLM refuses to start without one
    env.update({"LITELLM_MASTER_KEY": master, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DISABLE_SCHEMA_UPDATE": "True"})
    p = _spawn([str(binary), "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1",
                "--num_workers", "1"], core, log, env)
    _wait_http(f"http://127.0.0.1:{port}/health/liveliness", p, "litellm", 180, log)
    return Proc("litellm", p, port, {"authorization": f"Bearer {master}"})
