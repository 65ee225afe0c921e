"""Zero retention, end to end: a canary in prompts never reaches the exchange's
disk (database included), its log or its metrics."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.exchange_process import ExchangeProcess

pytestmark = pytest.mark.e2e

MODEL = "llama-3.1-8b"


def _send_workload(ex: ExchangeProcess, key: str, canary: str) -> set[str]:
    """A mixed zero-retention workload with ``canary`` in every prompt; returns
    the ids of the requests that were served."""
    prompt = f"Please remember the code word {canary} and tell me a story."
    messages = [{"role": "user", "content": prompt}]
    served: set[str] = set()
    with ex.client(key) as c:
        r = c.post("/v1/chat/completions", json={
            "model": MODEL, "messages": messages, "max_tokens": 16, "privacy": "zero_retention",
            "user": canary, f"x_{canary}": 1})
        assert r.status_code == 200, r.text
        served.add(r.headers["x-request-id"])
        with c.stream("POST", "/v1/chat/completions", headers={
                "x-cambist-privacy": "zero_retention"}, json={
                "model": MODEL, "messages": messages, "max_tokens": 16, "stream": True}) as s:
            assert s.status_code == 200
            assert "[DONE]" in "".join(s.iter_text())
            served.add(s.headers["x-request-id"])
        r = c.post("/v1/completions", headers={"x-cambist-privacy": "zero_retention"},
                   json={"model": MODEL, "prompt": prompt, "max_tokens": 8})
        assert r.status_code == 200, r.text
        served.add(r.headers["x-request-id"])
        failing = [
            {"model": MODEL, "messages": messages, "max_tokens": -5, "privacy": "zero_retention"},
            {"model": MODEL, "messages": messages, "max_tokens": 10**9,
             "privacy": "zero_retention"},
            {"model": MODEL, "messages": messages, "privacy": "confidential"},
            {"model": MODEL, "messages": [{"role": 1, "content": canary}],
             "privacy": "zero_retention"},
        ]
        for body in failing:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 400 and canary not in r.text, r.text
        r = c.post("/v1/chat/completions", headers={"x-cambist-privacy": "zero_retention",
                                                    "content-type": "application/json"},
                   content=f'{{"model": "{MODEL}", "messages": "{canary}'.encode())
        assert r.status_code == 400 and canary not in r.text
    return served


def _wait_flushed(ex: ExchangeProcess, key: str, ids: set[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    with ex.client(key) as c:
        while time.monotonic() < deadline:
            data = c.get("/v1/usage", params={"limit": 10000}).json()["data"]
            if ids <= {u["request_id"] for u in data}:
                return
            time.sleep(0.2)
    raise AssertionError(f"usage of {ids} not flushed in {timeout}s")


def _files_holding(home: Path, needle: bytes) -> list[str]:
    return [str(p) for p in sorted(home.rglob("*"))
            if p.is_file() and needle in p.read_bytes()]


def _text_columns_holding(db: Path, needle: str) -> list[str]:
    hits: list[str] = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for col in conn.execute(f'PRAGMA table_info("{table}")'):
                name = col[1]
                n = conn.execute(
                    f'SELECT count(*) FROM "{table}" WHERE CAST("{name}" AS TEXT) LIKE ?',
                    (f"%{needle}%",)).fetchone()[0]
                if n:
                    hits.append(f"{table}.{name}")
    return hits


def test_zero_retention_canary_leaves_no_trace(exchange: ExchangeProcess, llama8b: str) -> None:
    key = exchange.connection["demo_key"]
    canary = f"canary-{uuid.uuid4().hex}"
    served = _send_workload(exchange, key, canary)
    _wait_flushed(exchange, key, served)
    assert _files_holding(exchange.home, canary.encode()) == []
    databases = [p for p in exchange.home.rglob("*") if p.is_file()
                 and p.read_bytes()[:16] == b"SQLite format 3\x00"]
    assert databases, "the exchange's SQLite database was not found"
    for db in databases:
        assert _text_columns_holding(db, canary) == []
    assert canary not in exchange.output()
    metrics = httpx.get(f"{exchange.base_url}/metrics", timeout=5)
    if metrics.status_code == 200:
        assert canary not in metrics.text
