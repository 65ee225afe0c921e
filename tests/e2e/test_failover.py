"""Engines die, exchanges restart: nothing fails before its first byte, cut
streams end cleanly and are charged for what was delivered, replicas come back."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from cambist.domain.tokens import count_text_tokens
from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening_ports(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN}


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _deployment(ex: ExchangeProcess, name: str) -> dict:
    with ex.client() as c:
        return c.get(f"/v1/deployments/{name}").json()


def _stream(ex: ExchangeProcess, key: str, prompt: str, out: list, started: threading.Event) \
        -> None:
    """One streaming request read as raw SSE; appends a result dict to ``out``."""
    res: dict = {"content": "", "error": None, "done": False, "status": None}
    try:
        with httpx.stream("POST", ex.base_url + "/v1/chat/completions", timeout=60,
                          headers={"authorization": f"Bearer {key}"},
                          json={"model": "qwen2.5-7b", "stream": True, "max_tokens": 400,
                                "messages": [{"role": "user", "content": prompt}]}) as r:
            res["status"] = r.status_code
            res["request_id"] = r.headers.get("x-request-id")
            res["endpoint"] = r.headers.get("x-cambist-endpoint")
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    res["done"] = True
                    break
                obj = json.loads(payload)
                if "error" in obj:
                    res["error"] = obj["error"]
                    continue
                for ch in obj.get("choices", []):
                    res["content"] += (ch.get("delta") or {}).get("content") or ""
                started.set()
    except httpx.HTTPError as exc:
        res["error"] = {"transport": repr(exc)}
    out.append(res)


@pytest.fixture
def slow_exchange(tmp_path: Path):  # type: ignore[no-untyped-def]
    # Real-time engines, so streams are long enough to be cut mid-way.
    ex = ExchangeProcess(tmp_path / "home", env={"CAMBIST_ENGINE_TIME_SCALE": "1.0"})
    ex.start()
    yield ex
    if ex.proc is not None and ex.proc.poll() is None:
        assert ex.stop() == 0, ex.output()


def test_engine_killed_under_load(slow_exchange: ExchangeProcess) -> None:
    ex = slow_exchange
    r = ex.cli("deploy", "qwen2.5-7b", "--replicas", "2", "--name", "fo", "--timeout", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    key = ex.connection["demo_key"]
    with ex.client() as c:
        eps = {e["id"]: e for e in c.get("/v1/endpoints").json()["data"]}
    results: list[dict] = []
    started = threading.Event()
    threads = [threading.Thread(target=_stream, args=(ex, key, f"tell story {i}", results,
                                                      started)) for i in range(8)]
    for t in threads:
        t.start()
    assert started.wait(30)
    time.sleep(0.3)
    # Kill the engine behind the first stream's endpoint.
    records = {rec["url"]: rec for rec in ex.engine_records()}
    victim_ep = next(iter(eps.values()))
    victim = records[victim_ep["url"]]
    os.kill(victim["pid"], signal.SIGKILL)
    # Non-streaming requests keep working: failures before the first byte are retried.
    ok = 0
    with httpx.Client(base_url=ex.base_url, timeout=60,
                      headers={"authorization": f"Bearer {key}"}) as c:
        for i in range(10):
            resp = c.post("/v1/chat/completions", json={
                "model": "qwen2.5-7b", "max_tokens": 8,
                "messages": [{"role": "user", "content": f"quick {i}"}]})
            assert resp.status_code == 200, resp.text
            ok += 1
    for t in threads:
        t.join(60)
    assert ok == 10
    assert all(x["status"] == 200 for x in results), results
    cut = [x for x in results if x["error"] is not None]
    assert cut, "the killed engine was serving streams; some must have been cut"
    assert all(x["done"] for x in results)  # cut streams still end with [DONE]
    # Cut streams are charged only for what they delivered.
    time.sleep(1.0)
    with ex.client(key) as c:
        usage = {u["request_id"]: u for u in c.get("/v1/usage", params={"limit": 1000})
                 .json()["data"]}
    for x in cut:
        u = usage[x["request_id"]]
        assert u["status"] == "partial"
        assert u["completion_tokens"] == count_text_tokens(x["content"])
    # A replacement replica comes up.
    d = _wait(lambda: (lambda d: d if d["state"] == "ready" and any(
        r["state"] == "failed" for r in d["replica_details"]) else None)(_deployment(ex, "fo")),
        90, "a replacement replica")
    assert d["healthy_replicas"] == 2
    assert not _alive(victim["pid"])
    assert ex.cli("ledger", "check").returncode == 0

    # Undeploy drains: a stream in flight finishes before its engine stops.
    late: list[dict] = []
    started = threading.Event()
    t = threading.Thread(target=_stream, args=(ex, key, "one last story", late, started))
    t.start()
    assert started.wait(30)
    assert ex.cli("undeploy", "fo").returncode == 0
    t.join(60)
    assert late[0]["done"] and late[0]["error"] is None, late
    _wait(lambda: _deployment(ex, "fo")["state"] == "stopped", 60, "the drained deployment")
    with ex.client() as c:
        assert c.get("/v1/leases", params={"active": True}).json()["data"] == []


def test_stop_and_restart_reuses_everything(tmp_path: Path) -> None:
    ex = ExchangeProcess(tmp_path / "home").start()
    conn = ex.connection
    r = ex.cli("deploy", "qwen2.5-7b", "--name", "keep", "--timeout", "120")
    assert r.returncode == 0, r.stdout + r.stderr
    pids = [rec["pid"] for rec in ex.engine_records()]
    assert pids and all(_alive(p) for p in pids)
    assert ex.stop(signal.SIGINT) == 0, ex.output()
    _wait(lambda: not any(_alive(p) for p in pids), 10, "engines to stop with the exchange")
    ex2 = ExchangeProcess(tmp_path / "home", port=ex.port).start()
    try:
        assert ex2.connection["admin_key"] == conn["admin_key"]
        assert ex2.connection["demo_key"] == conn["demo_key"]
        _wait(lambda: _deployment(ex2, "keep")["state"] == "ready", 60, "relaunch after restart")
        with httpx.Client(base_url=ex2.base_url, timeout=30,
                          headers={"authorization": f"Bearer {conn['demo_key']}"}) as c:
            # The gateway picks new endpoints up within its routing refresh interval.
            _wait(lambda: any(m["id"] == "qwen2.5-7b" for m in c.get("/v1/models").json()["data"]),
                  10, "the relaunched endpoint in the routing table")
            resp = c.post("/v1/chat/completions", json={
                "model": "qwen2.5-7b", "messages": [{"role": "user", "content": "back?"}]})
            assert resp.status_code == 200, resp.text
    finally:
        assert ex2.stop() == 0, ex2.output()


def test_kill9_during_deploy_is_reconciled(tmp_path: Path) -> None:
    ex = ExchangeProcess(tmp_path / "home").start()
    r = ex.cli("deploy", "qwen2.5-7b", "--replicas", "2", "--name", "crash", "--no-wait")
    assert r.returncode == 0, r.stderr
    _wait(lambda: any(rep["state"] in ("launching", "healthy")
                      for rep in _deployment(ex, "crash")["replica_details"]), 30,
          "a replica to reach its lease")
    for rec in ex.engine_records():  # engines outlive a crash: they must not hold our port
        assert ex.port not in _listening_ports(rec["pid"]), f"engine {rec['pid']} holds it"
    ex.kill9()
    ex2 = ExchangeProcess(tmp_path / "home", port=ex.port).start()
    seen: list[dict] = []

    def ready() -> dict | None:
        seen.append(_deployment(ex2, "crash"))
        return seen[-1] if seen[-1]["state"] == "ready" else None

    try:
        try:
            d = _wait(ready, 60, "the deployment after a crash")
        except AssertionError as e:  # say where it stood
            raise AssertionError(f"{e}; last seen: {seen[-1:]}\n{ex2.output()[-4000:]}") from None
        with ex2.client() as c:
            leases = c.get("/v1/leases", params={"active": True}).json()["data"]
        live_leases = {r["lease_id"] for r in d["replica_details"] if r["state"] == "healthy"}
        assert {x["id"] for x in leases} == live_leases  # nothing orphaned, nothing leaked
        records = ex2.engine_records()
        assert {rec["lease_id"] for rec in records} == live_leases
        assert all(_alive(rec["pid"]) for rec in records)
    finally:
        assert ex2.stop() == 0, ex2.output()
