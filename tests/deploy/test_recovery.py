"""Startup reconciliation after a crash (``cambist.deploy.recovery``), in
process: the crash windows of a replica's launch."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import httpx

from cambist.deploy import DeployController
from cambist.deploy.recovery import recover
from cambist.domain.deployment import Replica, ReplicaState
from cambist.perf.model import PerfModel
from cambist.providers.engine_process import EngineRecord, _write_record
from tests.deploy.conftest import Stack, offer


async def _serving_replica(st: Stack) -> Replica:
    """A deployment of one replica, run until it serves."""
    st.suppliers["alpha"].offers = [offer("a", "alpha", "4.00")]
    await st.publish()
    await st.controller.create("llama-3.1-8b", name="m")
    await st.run(3)
    [rep] = await st.records.replicas("m")
    assert rep.state == ReplicaState.HEALTHY and rep.lease_id and rep.endpoint_id
    return rep


def _restarted(st: Stack) -> DeployController:
    """A new controller over the same records, as after a restart."""
    return DeployController(records=st.records, desk=st.desk, perf=PerfModel(),
                            events=st.events, clock=st.clock, retry_backoff_s=0.0)


def _answering() -> httpx.AsyncClient:
    """A client whose every engine answers ``/health``."""
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200)))


async def test_an_engine_started_before_the_crash_serves_after_the_restart(
        stack: Stack, tmp_path: Path) -> None:
    """Killed after its engine started (record written) but before the replica
    was saved healthy: the restarted controller adopts the engine and routes
    to it, replacing an endpoint the crash left unnamed, instead of leaving the
    replica launching for ever."""
    st = stack
    rep = await _serving_replica(st)
    assert rep.lease_id
    # The crash window: endpoint inserted (or not), replica still launching.
    await st.records.save_replica(replace(rep, state=ReplicaState.LAUNCHING, endpoint_id=None,
                                          detail="starting engine"))
    url = "http://127.0.0.1:9/engine"
    state_dir = tmp_path / "suppliers"
    _write_record(state_dir, EngineRecord(rep.lease_id, os.getpid(), url, "llama-3.1-8b",
                                          ("engine",)))
    restarted = _restarted(st)
    async with _answering() as client:
        done = await recover(st.records, restarted, state_dir, client, st.clock.now())
    assert done == {"adopted": 1, "relaunch": 0, "orphans_stopped": 0}
    [after] = await st.records.replicas("m")
    assert after.state == ReplicaState.HEALTHY and after.endpoint_id != rep.endpoint_id
    live = [e for e in await st.records.endpoints() if e.lease_id == rep.lease_id]
    assert [(e.id, e.url, e.healthy) for e in live] == [(after.endpoint_id, url, True)]
    assert restarted.engines[rep.id][1].url == url
    await restarted.step(st.clock.now())  # nothing left to relaunch
    assert [r.state for r in await st.records.replicas("m")] == [ReplicaState.HEALTHY]


async def test_a_healthy_replica_is_adopted_as_it_was(stack: Stack, tmp_path: Path) -> None:
    st = stack
    rep = await _serving_replica(st)
    assert rep.lease_id and rep.endpoint_id
    ep = await st.records.endpoint(rep.endpoint_id)
    assert ep is not None
    await st.records.set_endpoint_health(ep.id, False)  # what a stop leaves
    state_dir = tmp_path / "suppliers"
    _write_record(state_dir, EngineRecord(rep.lease_id, os.getpid(), ep.url, "llama-3.1-8b",
                                          ("engine",)))
    restarted = _restarted(st)
    async with _answering() as client:
        await recover(st.records, restarted, state_dir, client, st.clock.now())
    assert await st.records.replicas("m") == [rep]
    again = await st.records.endpoint(rep.endpoint_id)
    assert again is not None and again.healthy
