"""Live load of a deployment, for the autoscaler: its engines' own metrics.

Each serving replica's engine exports Prometheus gauges (the reference engine
and vLLM-compatible names): tokens generated per second over a recent window
and requests waiting. Their sums over a deployment's replicas are the
:class:`~cambist.deploy.autoscale.LoadSample` (TTFT is left to the queue
signal: engines do not export a percentile).
"""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cambist.deploy.autoscale import LoadSample
from cambist.deploy.records import Records
from cambist.domain.deployment import ReplicaState

__all__ = ["EngineLoad", "parse_engine_load"]

_RATE = "cambist_engine_generation_tokens_per_second"
_WAITING = ("vllm:num_requests_waiting", "cambist_engine_requests_waiting")


def parse_engine_load(text: str) -> tuple[float, float]:
    """(generated tokens/s, requests waiting) from one engine's ``/metrics``."""
    rate = waiting = 0.0
    seen_waiting = False
    for family in text_string_to_metric_families(text):
        if family.name == _RATE:
            rate += sum(s.value for s in family.samples)
        elif family.name in _WAITING and not seen_waiting:
            # Both names carry the same gauge; count it once.
            waiting += sum(s.value for s in family.samples)
            seen_waiting = True
    return rate, waiting


class EngineLoad:
    """A :class:`~cambist.deploy.autoscale.LoadSource` over the engines' ``/metrics``."""

    def __init__(self, records: Records, client: httpx.AsyncClient,
                 timeout_s: float = 1.0) -> None:
        self.records, self.client, self.timeout_s = records, client, timeout_s

    async def _scrape(self, url: str) -> tuple[float, float] | None:
        try:
            r = await self.client.get(f"{url}/metrics", timeout=self.timeout_s)
        except httpx.HTTPError:
            return None
        return parse_engine_load(r.text) if r.status_code == 200 else None

    async def sample(self, deployment: str, now: float) -> LoadSample | None:
        eps = {e.id: e for e in await self.records.endpoints()}
        urls = [eps[r.endpoint_id].url for r in await self.records.replicas(deployment)
                if r.state == ReplicaState.HEALTHY and r.endpoint_id in eps]
        got = [x for x in await asyncio.gather(*(self._scrape(u) for u in urls)) if x]
        if not got:
            return None
        return LoadSample(now, sum(r for r, _ in got), sum(w for _, w in got))
