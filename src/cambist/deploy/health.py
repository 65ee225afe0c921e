"""Health probe: engines that stop answering leave the routing table at once
and their replica is replaced."""

from __future__ import annotations

import asyncio
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cambist.deploy.controller import DeployController
from cambist.deploy.records import Records
from cambist.domain.deployment import ReplicaState

__all__ = ["HealthProbe", "engine_in_flight"]

log = logging.getLogger("cambist.health")


_IN_FLIGHT = ("vllm:num_requests_running", "vllm:num_requests_waiting")


async def engine_in_flight(client: httpx.AsyncClient, url: str) -> int | None:
    """Requests running or queued in an engine, from its Prometheus ``/metrics``
    (the vLLM gauge names, which the reference engine also exports); ``None``
    when the engine does not answer."""
    try:
        r = await client.get(f"{url}/metrics", timeout=1.0)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    total = 0.0
    for family in text_string_to_metric_families(r.text):
        if family.name in _IN_FLIGHT:
            total += sum(s.value for s in family.samples)
    return int(total)


class HealthProbe:
    """Loop: ``GET /health`` on every healthy replica's engine.

    The first failure takes the endpoint out of routing; ``failures_to_replace``
    consecutive failures fail the replica, which the controller replaces.
    """

    name = "health-probe"

    def __init__(self, records: Records, controller: DeployController, client: httpx.AsyncClient,
                 *, interval_s: float = 1.0, timeout_s: float = 1.0,
                 failures_to_replace: int = 2) -> None:
        self.records, self.controller, self.client = records, controller, client
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.failures_to_replace = failures_to_replace
        self._failures: dict[str, int] = {}

    async def _ok(self, url: str) -> bool:
        try:
            r = await self.client.get(f"{url}/health", timeout=self.timeout_s)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def step(self, now: float) -> None:
        reps = [r for r in await self.records.replicas()
                if r.state == ReplicaState.HEALTHY and r.endpoint_id]
        eps = {e.id: e for e in await self.records.endpoints()}
        targets = [(r, eps[r.endpoint_id]) for r in reps if r.endpoint_id in eps]
        results = await asyncio.gather(*(self._ok(ep.url) for _, ep in targets))
        for (rep, ep), ok in zip(targets, results, strict=True):
            if ok:
                if self._failures.pop(rep.id, 0) and not ep.healthy:
                    await self.records.set_endpoint_health(ep.id, True)
                continue
            n = self._failures.get(rep.id, 0) + 1
            self._failures[rep.id] = n
            if ep.healthy:
                await self.records.set_endpoint_health(ep.id, False)
            log.warning("engine of replica %s failed health check %d", rep.id, n)
            if n >= self.failures_to_replace:
                self._failures.pop(rep.id, None)
                await self.controller.replica_unhealthy(rep.id, "engine stopped answering")
