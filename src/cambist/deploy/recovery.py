"""Startup reconciliation: adopt or clean up what a crash or stop left behind.

Engines run as separate processes and leave a record each under the state
directory. After a restart, a replica whose engine still runs and answers is
adopted (and made to serve if the crash came before its endpoint); one whose
engine is gone goes back to ``leasing`` on its still-running lease so the
controller relaunches it; engines that belong to no live replica are stopped;
replicas caught between lease and record find their lease by client token.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import httpx

from cambist.deploy.controller import DeployController
from cambist.deploy.records import Records
from cambist.domain.deployment import ReplicaState
from cambist.providers.base import EngineHandle
from cambist.providers.engine_process import list_engine_records, pid_alive, stop_engine_process

__all__ = ["recover"]

log = logging.getLogger("cambist.recovery")


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/health", timeout=2.0)).status_code == 200
    except httpx.HTTPError:
        return False


async def recover(records: Records, controller: DeployController, state_dir: Path,
                  client: httpx.AsyncClient, now: float) -> dict[str, int]:
    """Reconcile replicas, leases and engine processes; returns counts of what it did."""
    engines = {r.lease_id: r for r in list_engine_records(state_dir)}
    adopted = relaunch = killed = 0
    keep: set[str] = set()
    for rep in await records.replicas():
        if rep.state in (ReplicaState.STOPPED, ReplicaState.FAILED, ReplicaState.PENDING):
            continue
        if rep.lease_id is None:
            lease = await records.lease_by_token(rep.id)
            if lease is not None:
                await records.save_replica(replace(rep, lease_id=lease.id))
            continue
        if rep.state not in (ReplicaState.HEALTHY, ReplicaState.LAUNCHING):
            continue
        rec = engines.get(rep.lease_id)
        lease = await records.lease(rep.lease_id)
        if rec is not None and pid_alive(rec.pid) and await _answers(client, rec.url):
            keep.add(rep.lease_id)
            handle = EngineHandle(rec.url, rec.pid, rep.lease_id, rec.model)
            dep = await records.deployment(rep.deployment)
            if rep.state == ReplicaState.LAUNCHING and dep is not None and lease is not None:
                # The crash came between the engine's start and the replica's
                # healthy state: left so, nothing would ever route to it. An
                # endpoint already made for it is replaced (no replica names it).
                for ep in await records.endpoints():
                    if ep.lease_id == rep.lease_id:
                        await records.remove_endpoint(ep.id, now)
                await controller.serve(dep, rep, lease, handle)
            else:
                controller.engines[rep.id] = (lease.supplier if lease else "local", handle)
                if rep.endpoint_id:
                    await records.set_endpoint_health(rep.endpoint_id, True)
            adopted += 1
            continue
        if rep.endpoint_id:
            await records.remove_endpoint(rep.endpoint_id, now)
        await records.save_replica(replace(rep, state=ReplicaState.LEASING, endpoint_id=None,
                                           detail="engine gone after restart; relaunching"))
        relaunch += 1
    for lease_id, rec in engines.items():
        if lease_id not in keep:
            await stop_engine_process(EngineHandle(rec.url, rec.pid, lease_id, rec.model),
                                      state_dir)
            killed += 1
    log.info("recovery: adopted %d engines, relaunching %d, stopped %d orphans",
             adopted, relaunch, killed)
    return {"adopted": adopted, "relaunch": relaunch, "orphans_stopped": killed}
