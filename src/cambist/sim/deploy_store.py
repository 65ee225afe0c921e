"""The deploy layer's records and event log, kept in memory for the simulator.

:class:`MemoryRecords` and :class:`MemoryEventLog` answer every call of
:class:`~cambist.deploy.records.Records` and :class:`~cambist.store.events.EventLog`
the way the SQL store does (same orderings, same filters, rows copied in and
out as frozen domain objects), so the real deploy controller, lease desk and
autoscaler run on them unchanged. Why not SQLite: the controller reads its
state with one small query per call (about 0.7 ms each through aiosqlite on
this machine), and a month of minutes needs millions of them; in memory the
same calls take microseconds. A simulation never restarts, so it loses
nothing by keeping no file. The deploy tests run the same controller on
SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from cambist.deploy.records import Records
from cambist.domain.deployment import Deployment, DeploymentState, Replica
from cambist.domain.endpoint import Endpoint
from cambist.domain.lease import Lease
from cambist.store.events import EventLog

__all__ = ["MemoryEventLog", "MemoryRecords"]


class MemoryRecords(Records):
    """:class:`Records` on dictionaries (see the module docstring)."""

    def __init__(self) -> None:
        # No engine: every method below is answered from memory.
        self._leases: dict[str, Lease] = {}
        self._lease_tokens: dict[str, str] = {}
        self._deployments: dict[str, Deployment] = {}
        self._specs: dict[str, str | None] = {}
        self._replicas: dict[str, Replica] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._removed: set[str] = set()

    # leases
    async def insert_lease(self, lease: Lease) -> None:
        if lease.id in self._leases:
            raise ValueError(f"lease {lease.id} exists")
        self._leases[lease.id] = lease
        if lease.client_token:
            self._lease_tokens.setdefault(lease.client_token, lease.id)

    async def save_lease(self, lease: Lease) -> None:
        if lease.id in self._leases:
            self._leases[lease.id] = lease
            if lease.client_token:
                self._lease_tokens.setdefault(lease.client_token, lease.id)

    async def lease(self, lease_id: str) -> Lease | None:
        return self._leases.get(lease_id)

    async def lease_by_token(self, token: str) -> Lease | None:
        lease_id = self._lease_tokens.get(token)
        return self._leases.get(lease_id) if lease_id is not None else None

    async def leases(self, *, owner: str | None = None, all_owners: bool = True,
                     active_only: bool = False) -> list[Lease]:
        out = sorted(self._leases.values(), key=lambda x: x.created_at)
        if not all_owners:
            out = [x for x in out if x.owner == owner]
        if active_only:
            out = [x for x in out if not x.terminal]
        return out

    # deployments and replicas
    async def insert_deployment(self, d: Deployment, reps: list[Replica],
                                spec_json: str | None = None) -> None:
        if d.name in self._deployments:
            raise ValueError(f"deployment {d.name} exists")
        self._deployments[d.name] = d
        self._specs[d.name] = spec_json
        for r in reps:
            await self.insert_replica(r)

    async def deployment(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    async def deployment_by_token(self, token: str) -> Deployment | None:
        return next((d for d in self._deployments.values() if d.client_token == token), None)

    async def deployments(self) -> list[Deployment]:
        return sorted(self._deployments.values(), key=lambda d: d.created_at)

    async def deployment_spec(self, name: str) -> str | None:
        return self._specs.get(name)

    async def set_deployment_replicas(self, name: str, replicas: int) -> None:
        if name in self._deployments:
            self._deployments[name] = replace(self._deployments[name], replicas=replicas)

    async def set_deployment_state(self, name: str, state: DeploymentState) -> None:
        if name in self._deployments:
            self._deployments[name] = replace(self._deployments[name], state=state)

    async def replicas(self, deployment: str | None = None) -> list[Replica]:
        # Insertion order is creation order (the clock never goes back).
        return [r for r in self._replicas.values()
                if deployment is None or r.deployment == deployment]

    async def insert_replica(self, r: Replica) -> None:
        if r.id in self._replicas:
            raise ValueError(f"replica {r.id} exists")
        self._replicas[r.id] = r

    async def save_replica(self, r: Replica) -> None:
        if r.id in self._replicas:
            self._replicas[r.id] = r

    def forget_replicas(self, ids: Sequence[str]) -> None:
        """Drop finished replicas' rows (a retention job: the controller only
        ever reads the live ones, and a month of moves leaves thousands)."""
        for rid in ids:
            self._replicas.pop(rid, None)

    # endpoints
    async def insert_endpoint(self, e: Endpoint) -> None:
        if e.id in self._endpoints:
            raise ValueError(f"endpoint {e.id} exists")
        self._endpoints[e.id] = e

    async def set_endpoint_health(self, endpoint_id: str, healthy: bool) -> None:
        if endpoint_id in self._endpoints:
            self._endpoints[endpoint_id] = replace(self._endpoints[endpoint_id], healthy=healthy)

    async def remove_endpoint(self, endpoint_id: str, now: float) -> None:
        if endpoint_id in self._endpoints:
            self._endpoints[endpoint_id] = replace(self._endpoints[endpoint_id], healthy=False)
            self._removed.add(endpoint_id)

    async def endpoints(self, *, include_removed: bool = False) -> list[Endpoint]:
        return sorted((e for e in self._endpoints.values()
                       if include_removed or e.id not in self._removed),
                      key=lambda e: e.created_at)

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return self._endpoints.get(endpoint_id)


class MemoryEventLog(EventLog):
    """:class:`EventLog` on a list (see the module docstring)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    async def append(self, rows: Sequence[dict]) -> None:
        self.rows.extend(dict(r) for r in rows)

    async def read(self, *, kind: str | None = None, since: float | None = None,
                   limit: int = 1000, latest: bool = False) -> list[dict]:
        out = [{"id": i, **r} for i, r in enumerate(self.rows, 1)
               if (kind is None or str(r["kind"]).startswith(kind))
               and (since is None or r["ts"] >= since)]
        return out[-limit:] if latest else out[:limit]
