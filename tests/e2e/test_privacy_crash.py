"""Zero retention survives a crash, on SQLite and on PostgreSQL.

A mixed ``zero_retention`` workload (streaming and not, tool calls, JSON
schema answers, refused requests) carries unique canaries in the prompts and,
through ``const`` schema values the reference engine must emit, in the
completions. The exchange is killed with SIGKILL while a stream is in flight,
restarted on the same home and database, and serves the workload again. Then
every file under the Cambist home (write-ahead outbox included), every text
column of the database, the process log and ``/metrics`` are scanned: the
canaries appear nowhere, while the usage of every served request is recorded.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.e2e.exchange_process import ExchangeProcess, reference_engine
from tests.e2e.test_privacy import _files_holding, _text_columns_holding
from tests.services import postgres_database

pytestmark = pytest.mark.e2e

SERVED = "e2e-zr-crash"


def _engine() -> contextlib.AbstractContextManager[str]:
    return reference_engine(SERVED)


def _schema(canary: str) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "code", "schema": {
        "type": "object", "properties": {"code": {"const": canary}}, "required": ["code"]}}}


def _tool_arguments(sse: str) -> str:
    """The streamed tool-call arguments, reassembled from their deltas."""
    parts = []
    for line in sse.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                for call in choice["delta"].get("tool_calls") or []:
                    parts.append(call.get("function", {}).get("arguments") or "")
    return "".join(parts)


def _workload(c: httpx.Client, canary: str) -> set[str]:
    """Served request ids; asserts the canary did come back in completions."""
    served: set[str] = set()
    messages = [{"role": "user", "content": f"Say the word {canary} back to me."}]
    zr = {"x-cambist-privacy": "zero_retention"}
    r = c.post("/v1/chat/completions", headers=zr, json={
        "model": SERVED, "messages": messages, "max_tokens": 64,
        "response_format": _schema(canary)})
    assert r.status_code == 200, r.text
    assert canary in r.json()["choices"][0]["message"]["content"]
    served.add(r.headers["x-request-id"])
    tool = {"type": "function", "function": {"name": "remember", "parameters": {
        "type": "object", "properties": {"word": {"const": canary}}, "required": ["word"]}}}
    with c.stream("POST", "/v1/chat/completions", headers=zr, json={
            "model": SERVED, "messages": messages, "max_tokens": 64, "stream": True,
            "tools": [tool], "tool_choice": "required"}) as s:
        assert s.status_code == 200
        text = "".join(s.iter_text())
        assert "[DONE]" in text
        assert canary in _tool_arguments(text)
        served.add(s.headers["x-request-id"])
    for bad in ({"max_tokens": -5}, {"messages": [{"role": 1, "content": canary}]}):
        r = c.post("/v1/chat/completions", headers=zr,
                   json={"model": SERVED, "messages": messages, **bad})
        assert r.status_code == 400 and canary not in r.text
    return served


def _stream_then_die(ex: ExchangeProcess, key: str, canary: str) -> None:
    """Open a long zero-retention stream, and kill -9 the exchange mid-stream."""
    got_first = threading.Event()

    def read() -> None:
        try:
            with ex.client(key) as c, c.stream("POST", "/v1/chat/completions", headers={
                    "x-cambist-privacy": "zero_retention"}, json={
                    "model": SERVED, "stream": True, "max_tokens": 2000,
                    "messages": [{"role": "user", "content": f"A long story about {canary}"}],
                    "response_format": _schema(canary)}) as s:
                for _ in s.iter_bytes():
                    got_first.set()
        except httpx.HTTPError:
            got_first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert got_first.wait(30), "the stream never started"
    ex.kill9()
    reader.join(10)


def _wait_routable(ex: ExchangeProcess, key: str) -> None:
    deadline = time.monotonic() + 30
    with ex.client(key) as c:
        while time.monotonic() < deadline:
            if SERVED in {m["id"] for m in c.get("/v1/models").json()["data"]}:
                return
            time.sleep(0.2)
    raise AssertionError(f"{SERVED} not routable after restart")


def _wait_usage(ex: ExchangeProcess, key: str, ids: set[str]) -> None:
    deadline = time.monotonic() + 20
    with ex.client(key) as c:
        while time.monotonic() < deadline:
            data = c.get("/v1/usage", params={"limit": 10000}).json()["data"]
            if ids <= {u["request_id"] for u in data}:
                return
            time.sleep(0.3)
    raise AssertionError("usage of served requests not recorded")


def _postgres_columns_holding(url: str, needle: str) -> list[str]:
    hits = []
    with psycopg.connect(url) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'").fetchall()
        for table, column in cols:
            n = conn.execute(f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) '
                             "LIKE %s", (f"%{needle}%",)).fetchone()
            if n and n[0]:
                hits.append(f"{table}.{column}")
    return hits


@contextmanager
def _database(backend: str) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    with postgres_database() as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_zero_retention_canaries_survive_a_crash(tmp_path: Path, backend: str) -> None:
    canary = f"canary{uuid.uuid4().hex}"
    with _database(backend) as db_url, _engine() as engine_url:
        env = {"CAMBIST_DATABASE_URL": db_url} if db_url else {}
        ex = ExchangeProcess(tmp_path / "home", env=env).start()
        try:
            r = ex.cli("endpoints", "add", engine_url, "--model", SERVED, "--price-in", "0.01",
                       "--price-out", "0.02")
            assert r.returncode == 0, r.stderr
            key = ex.connection["demo_key"]
            _wait_routable(ex, key)
            with ex.client(key) as c:
                served = _workload(c, canary)
            _stream_then_die(ex, key, canary)
            ex = ExchangeProcess(tmp_path / "home", port=ex.port, env=env).start()
            _wait_routable(ex, key)
            with ex.client(key) as c:
                served |= _workload(c, canary)
            _wait_usage(ex, key, served)
            metrics = httpx.get(f"{ex.base_url}/metrics", timeout=5)
            assert metrics.status_code == 200 and canary not in metrics.text
        finally:
            if ex.proc is not None and ex.proc.poll() is None:
                assert ex.stop() == 0
        assert _files_holding(tmp_path / "home", canary.encode()) == []
        assert canary not in ex.output()
        if db_url is None:
            sqlite_files = [p for p in (tmp_path / "home").rglob("*") if p.is_file()
                            and p.read_bytes()[:16] == b"SQLite format 3\x00"]
            assert sqlite_files
            for db in sqlite_files:
                assert _text_columns_holding(db, canary) == []
        else:
            assert _postgres_columns_holding(db_url, canary) == []
