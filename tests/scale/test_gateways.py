"""Four gateway processes (``cambist gateway --workers 4``) on PostgreSQL and
Redis, against the documented bounds (docs/SCALE.md):

* one tenant with a low RPM limit: accepted requests stay within
  ``L + L*t/60 + N*S``;
* one tenant with a small balance: charges stay within
  ``balance + N * max(credit_slack, largest reservation)``;
* every completed request is charged exactly once, in the journal and in
  Redis, also when a worker is killed with ``kill -9`` under load and the
  supervisor restarts it; ``cambist ledger check`` passes.

Needs PostgreSQL and Redis (``tests/services.py``: fail under ``CI=true``,
skip elsewhere).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from redis import Redis

from tests.e2e.exchange_process import ExchangeProcess
from tests.scale.cluster import Cluster, Load, Upstream, hammer
from tests.services import postgres_database, require_redis

pytestmark = pytest.mark.e2e

WORKERS = 4
SLACK = Decimal("0.10")
RPM = 30  # the "tight" plan of tests/scale/cluster.py, per key and per tenant
RPM_SLACK = 1  # max(1, floor(30 * 0.02))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    redis_url = require_redis()
    prefix = f"cambist-test-{secrets.token_hex(4)}"
    with postgres_database() as db_url:
        upstream = Upstream(latency_ms=20)
        env = {"CAMBIST_DATABASE_URL": db_url, "CAMBIST_REDIS_URL": redis_url,
               "CAMBIST_REDIS_PREFIX": prefix, "CAMBIST_CREDIT_SLACK": str(SLACK)}
        c = Cluster(tmp_path_factory.mktemp("scale") / "home", env, upstream, db_url,
                    workers=WORKERS)
        try:
            c.start_up()
            c.tenants = {"limited": c.tenant("limited", "50"),  # type: ignore[attr-defined]
                         "poor": c.tenant("poor", "1.00"), "steady": c.tenant("steady", "100")}
            c.start_gateway({c.tenants["limited"]["id"]: "tight"})  # type: ignore[attr-defined]
            yield c
        finally:
            c.stop()
            r = Redis.from_url(redis_url)
            keys = list(r.scan_iter(match=f"{prefix}:*"))
            if keys:
                r.delete(*keys)
            r.close()


def _redis_used(cluster: Cluster, tenant_id: str) -> Decimal:
    r = Redis.from_url(cluster.env["CAMBIST_REDIS_URL"])
    try:
        raw = r.get(f"{cluster.env['CAMBIST_REDIS_PREFIX']}:used:{tenant_id}")
    finally:
        r.close()
    return Decimal(int(raw or 0)) / 1_000_000


def _ledger_ok(cluster: Cluster) -> None:
    assert "ledger OK" in cluster.cli("ledger", "check")


def _tenant(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.tenants[name]  # type: ignore[attr-defined, no-any-return]


def test_four_gateways_share_limits_and_balance(cluster: Cluster) -> None:
    limited, poor = _tenant(cluster, "limited"), _tenant(cluster, "poor")

    async def both() -> tuple[Load, Load]:
        return await asyncio.gather(hammer(cluster.base_url, limited["key"], 4.0, 8,
                                           until=lambda ld: ld.ok + ld.credit_pending >= RPM
                                           and ld.statuses.get(429, 0) > ld.credit_pending),
                                    hammer(cluster.base_url, poor["key"], 4.0, 8))

    lim, pr = asyncio.run(both())
    # Rate limit: a burst of RPM, the refill while the test ran, and each
    # worker ahead of Redis by at most its slack.
    # (A request refused for credit still pending in Redis took its request.)
    elapsed = lim.last_ok - lim.first
    taken = lim.ok + lim.credit_pending
    assert lim.statuses.get(429, 0) > lim.credit_pending
    assert RPM <= taken <= RPM + RPM * elapsed / 60 + WORKERS * RPM_SLACK, lim.statuses
    # Balance: never more than the documented overdraft.
    largest = max(pr.costs)
    charged = sum(pr.costs, Decimal(0))
    assert pr.statuses.get(402, 0) > 0
    assert Decimal("1.00") - 2 * largest <= charged <= Decimal("1.00") + WORKERS * max(
        SLACK, largest), pr.statuses
    # No usage lost: every completed request is in the ledger, and nothing else.
    for tenant, load in ((limited, lim), (poor, pr)):
        cluster.wait_flushed(tenant["id"], load.ok_ids)
        assert set(cluster.usage_ids(tenant["id"])) == load.ok_ids
        assert cluster.charged(tenant["id"]) == sum(load.costs, Decimal(0))
        assert _redis_used(cluster, tenant["id"]) == cluster.charged(tenant["id"])
    # The load was spread over the workers (each reported charges to Redis).
    r = Redis.from_url(cluster.env["CAMBIST_REDIS_URL"])
    try:
        reporters = list(r.scan_iter(match=f"{cluster.env['CAMBIST_REDIS_PREFIX']}:rpos:*"))
    finally:
        r.close()
    assert len(reporters) >= 2
    _ledger_ok(cluster)


def test_kill_9_a_worker_under_load_charges_each_completed_request_once(
        cluster: Cluster) -> None:
    steady = _tenant(cluster, "steady")
    victim = cluster.worker_pids()[1]

    async def load_and_kill() -> Load:
        task = asyncio.create_task(hammer(cluster.base_url, steady["key"], 6.0, 8))
        await asyncio.sleep(3.5)  # the worker has lived long enough to be restarted
        os.kill(victim, signal.SIGKILL)
        return await task

    load = asyncio.run(load_and_kill())
    deadline = time.monotonic() + 30
    while cluster.worker_pids().get(1) in (victim, None) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.worker_pids()[1] != victim  # the supervisor restarted worker 1
    assert load.ok > 50
    ok_ids = load.ok_ids
    cluster.wait_flushed(steady["id"], ok_ids, timeout=30)
    charged_ids = cluster.usage_ids(steady["id"])
    assert len(charged_ids) == len(set(charged_ids))
    assert ok_ids <= set(charged_ids)  # every completed request is charged...
    entries = cluster.sql(
        "SELECT idempotency_key FROM journal_entries WHERE idempotency_key = ANY(%s)",
        ([f"usage:{rid}" for rid in ok_ids],))
    assert len(entries) == len(ok_ids)  # ...exactly once in the journal
    # Requests cut by the kill after their usage was written are charged too
    # (at most the ones in flight on the victim); Redis agrees with the journal.
    assert len(charged_ids) - len(ok_ids) <= 8
    assert _redis_used(cluster, steady["id"]) == cluster.charged(steady["id"])
    _ledger_ok(cluster)
    assert cluster.gateway is not None
    cluster.gateway.send_signal(signal.SIGTERM)
    assert cluster.gateway.wait(timeout=30) == 0, cluster.log()



def test_a_killed_leader_is_replaced_within_seconds(
        cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two ``cambist up`` on one PostgreSQL database: the first leads, the
    second follows; ``kill -9`` the leader and the follower leads within
    ``leader_retry_s`` (1 s) plus a round trip. Runs last: it kills the
    cluster's ``up``."""
    assert cluster.up is not None
    home = tmp_path_factory.mktemp("follower") / "home"
    follower = ExchangeProcess(home, env={**cluster.env, "CAMBIST_LOG_LEVEL": "info"})
    follower.start(timeout=90)
    try:
        assert "follows: another process runs the control loops" in follower.output()
        assert "is now the leader" not in follower.output()
        cluster.up.kill9()
        killed = time.monotonic()
        while "is now the leader" not in follower.output() and time.monotonic() < killed + 15:
            time.sleep(0.05)
        took = time.monotonic() - killed
        assert "is now the leader" in follower.output(), follower.output()[-3000:]
        assert took < 3.0
        with follower.client() as c:  # and it still serves
            assert c.get("/health").json()["status"] == "ok"
    finally:
        assert follower.stop() == 0, follower.output()[-3000:]
