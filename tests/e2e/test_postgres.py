"""``cambist up`` on PostgreSQL: migrations and bootstrap on a fresh database,
then tenants, credit, keys and the ledger check through the real CLI and API.

Needs PostgreSQL (``tests/services.py``: fails under ``CI=true``, skips
elsewhere); the exchange gets its own uniquely named database, dropped after.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cambist.store.db import current_revision, head_revision
from tests.e2e.exchange_process import ExchangeProcess
from tests.services import postgres_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def pg_exchange(tmp_path: Path) -> Iterator[ExchangeProcess]:
    with postgres_database() as url:
        ex = ExchangeProcess(tmp_path / "home", env={"CAMBIST_DATABASE_URL": url}).start()
        try:
            yield ex
        finally:
            code = ex.stop()
        assert code == 0, ex.output()
        assert current_revision(url) == head_revision()


def test_up_on_postgres(pg_exchange: ExchangeProcess) -> None:
    ex = pg_exchange
    with ex.client() as c:
        assert c.get("/health").json()["status"] == "ok"
    assert not (ex.home / "cambist.db").exists()  # nothing went to SQLite

    def cli(*args: str) -> str:
        r = ex.cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr + ex.output()[-3000:]
        return r.stdout

    name = f"pg-{uuid.uuid4().hex[:8]}"
    tenant = json.loads(cli("tenants", "create", name, "--json"))
    cli("credits", "add", tenant["id"], "12.50")
    with ex.client(tenant["key"]) as own:
        bal = own.get("/v1/balance").json()["data"][0]
        assert bal["balance"] == "12.500000"
        key = own.post("/v1/keys", json={"name": "pg"}, headers={"Idempotency-Key": name})
        again = own.post("/v1/keys", json={"name": "pg"}, headers={"Idempotency-Key": name})
        assert key.status_code == again.status_code == 201 and key.json() == again.json()
        assert own.post(f"/v1/keys/{key.json()['id']}/revoke").status_code == 200
    demo = ex.connection["demo_tenant"]
    assert demo in cli("balance")  # bootstrap credited the demo tenant on PostgreSQL
    assert "ledger OK" in cli("ledger", "check")
