"""Rows <-> domain objects for leases, deployments, replicas and endpoints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.deployment import Deployment, DeploymentState, Replica, ReplicaState
from cambist.domain.endpoint import Endpoint
from cambist.domain.lease import TERMINAL_LEASE_STATES, Lease, LeaseState
from cambist.domain.money import from_micros, to_micros
from cambist.store.schema import deployments, endpoints, leases, replicas

__all__ = ["Records", "endpoint_row"]


def _lease(r: RowMapping) -> Lease:
    return Lease(
        id=r["id"], supplier=r["supplier"], supplier_lease_id=r["supplier_lease_id"],
        offer_id=r["offer_id"], sku=r["sku"], gpu_name=r["gpu_name"], gpu_count=r["gpu_count"],
        region=r["region"], price_per_hour=from_micros(r["price_per_hour_micros"]),
        spot=bool(r["spot"]), owner=r["owner"], state=LeaseState(r["state"]),
        created_at=r["created_at"], billing_increment_s=r["billing_increment_s"],
        billing_minimum_s=r["billing_minimum_s"], started_at=r["started_at"],
        ended_at=r["ended_at"], posted_until=r["posted_until"], client_token=r["client_token"],
        platform_fee_rate=Decimal(r["platform_fee_rate"]),
    )


def _lease_row(x: Lease) -> dict[str, Any]:
    return {
        "id": x.id, "supplier": x.supplier, "supplier_lease_id": x.supplier_lease_id,
        "offer_id": x.offer_id, "sku": x.sku, "gpu_name": x.gpu_name, "gpu_count": x.gpu_count,
        "region": x.region, "price_per_hour_micros": to_micros(x.price_per_hour),
        "spot": x.spot, "owner": x.owner, "state": str(x.state), "created_at": x.created_at,
        "started_at": x.started_at, "ended_at": x.ended_at, "posted_until": x.posted_until,
        "billing_increment_s": x.billing_increment_s, "billing_minimum_s": x.billing_minimum_s,
        "platform_fee_rate": str(x.platform_fee_rate), "client_token": x.client_token,
    }


def _deployment(r: RowMapping) -> Deployment:
    mp = r["max_price_per_mtok_micros"]
    return Deployment(
        name=r["name"], model=r["model"], replicas=r["replicas"], owner=r["owner"],
        state=DeploymentState(r["state"]), created_at=r["created_at"],
        max_price_per_mtok=from_micros(mp) if mp is not None else None,
        client_token=r["client_token"],
    )


def _replica(r: RowMapping) -> Replica:
    return Replica(
        id=r["id"], deployment=r["deployment"], state=ReplicaState(r["state"]),
        lease_id=r["lease_id"], endpoint_id=r["endpoint_id"], created_at=r["created_at"],
        detail=r["detail"],
    )


def _opt_micros(v: int | None) -> Decimal | None:
    return from_micros(v) if v is not None else None


def _endpoint(r: RowMapping) -> Endpoint:
    return Endpoint(
        id=r["id"], model=r["model"], url=r["url"], supplier=r["supplier"], owner=r["owner"],
        healthy=bool(r["healthy"]), deployment=r["deployment"], lease_id=r["lease_id"],
        sku=r["sku"], region=r["region"], cost_per_hour=from_micros(r["cost_per_hour_micros"]),
        capacity_tok_s=r["capacity_tok_s"], max_concurrency=r["max_concurrency"],
        context_length=r["context_length"], created_at=r["created_at"],
        kind=r["kind"] or "deployment",
        input_price_per_mtok=_opt_micros(r["input_micros_per_mtok"]),
        output_price_per_mtok=_opt_micros(r["output_micros_per_mtok"]),
        api_key_env=r["api_key_env"], quantization=r["quantization"],
    )


def endpoint_row(e: Endpoint) -> dict[str, Any]:
    """The ``endpoints`` row of ``e`` (without ``removed_at``)."""
    return {
        "id": e.id, "model": e.model, "url": e.url, "supplier": e.supplier, "owner": e.owner,
        "healthy": e.healthy, "deployment": e.deployment, "lease_id": e.lease_id, "sku": e.sku,
        "region": e.region, "cost_per_hour_micros": to_micros(e.cost_per_hour),
        "capacity_tok_s": e.capacity_tok_s, "max_concurrency": e.max_concurrency,
        "context_length": e.context_length, "created_at": e.created_at, "kind": e.kind,
        "input_micros_per_mtok": (to_micros(e.input_price_per_mtok)
                                  if e.input_price_per_mtok is not None else None),
        "output_micros_per_mtok": (to_micros(e.output_price_per_mtok)
                                   if e.output_price_per_mtok is not None else None),
        "api_key_env": e.api_key_env, "quantization": e.quantization,
    }


class Records:
    """Persistence of the deploy layer's state (one small query per method)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # leases
    async def insert_lease(self, lease: Lease) -> None:
        async with self.engine.begin() as c:
            await c.execute(insert(leases).values(**_lease_row(lease)))

    async def save_lease(self, lease: Lease) -> None:
        row = _lease_row(lease)
        async with self.engine.begin() as c:
            await c.execute(update(leases).where(leases.c.id == lease.id).values(**row))

    async def lease(self, lease_id: str) -> Lease | None:
        async with self.engine.connect() as c:
            r = (await c.execute(select(leases).where(leases.c.id == lease_id))).first()
        return _lease(r._mapping) if r else None

    async def lease_by_token(self, token: str) -> Lease | None:
        async with self.engine.connect() as c:
            r = (await c.execute(select(leases).where(leases.c.client_token == token))).first()
        return _lease(r._mapping) if r else None

    async def leases(self, *, owner: str | None = None, all_owners: bool = True,
                     active_only: bool = False) -> list[Lease]:
        q = select(leases).order_by(leases.c.created_at)
        if not all_owners:
            q = q.where(leases.c.owner == owner) if owner else q.where(leases.c.owner.is_(None))
        if active_only:
            q = q.where(leases.c.state.not_in([str(s) for s in TERMINAL_LEASE_STATES]))
        async with self.engine.connect() as c:
            return [_lease(r._mapping) for r in await c.execute(q)]

    # deployments and replicas
    async def insert_deployment(self, d: Deployment, reps: list[Replica],
                                spec_json: str | None = None) -> None:
        mp = to_micros(d.max_price_per_mtok) if d.max_price_per_mtok is not None else None
        async with self.engine.begin() as c:
            await c.execute(insert(deployments).values(
                name=d.name, model=d.model, replicas=d.replicas, owner=d.owner,
                state=str(d.state), created_at=d.created_at, max_price_per_mtok_micros=mp,
                client_token=d.client_token, spec_json=spec_json))
            for r in reps:
                await c.execute(insert(replicas).values(**self._replica_row(r)))

    @staticmethod
    def _replica_row(r: Replica) -> dict[str, Any]:
        return {"id": r.id, "deployment": r.deployment, "state": str(r.state),
                "lease_id": r.lease_id, "endpoint_id": r.endpoint_id,
                "created_at": r.created_at, "detail": r.detail}

    async def deployment(self, name: str) -> Deployment | None:
        async with self.engine.connect() as c:
            r = (await c.execute(select(deployments).where(deployments.c.name == name))).first()
        return _deployment(r._mapping) if r else None

    async def deployment_by_token(self, token: str) -> Deployment | None:
        q = select(deployments).where(deployments.c.client_token == token)
        async with self.engine.connect() as c:
            r = (await c.execute(q)).first()
        return _deployment(r._mapping) if r else None

    async def deployments(self) -> list[Deployment]:
        async with self.engine.connect() as c:
            rows = await c.execute(select(deployments).order_by(deployments.c.created_at))
            return [_deployment(r._mapping) for r in rows]

    async def deployment_spec(self, name: str) -> str | None:
        """The stored placement spec (JSON) of a deployment."""
        q = select(deployments.c.spec_json).where(deployments.c.name == name)
        async with self.engine.connect() as c:
            return (await c.execute(q)).scalar()

    async def set_deployment_replicas(self, name: str, replicas: int) -> None:
        async with self.engine.begin() as c:
            await c.execute(update(deployments).where(deployments.c.name == name)
                            .values(replicas=replicas))

    async def set_deployment_state(self, name: str, state: DeploymentState) -> None:
        async with self.engine.begin() as c:
            await c.execute(update(deployments).where(deployments.c.name == name)
                            .values(state=str(state)))

    async def replicas(self, deployment: str | None = None) -> list[Replica]:
        q = select(replicas).order_by(replicas.c.created_at)
        if deployment is not None:
            q = q.where(replicas.c.deployment == deployment)
        async with self.engine.connect() as c:
            return [_replica(r._mapping) for r in await c.execute(q)]

    async def insert_replica(self, r: Replica) -> None:
        async with self.engine.begin() as c:
            await c.execute(insert(replicas).values(**self._replica_row(r)))

    async def save_replica(self, r: Replica) -> None:
        async with self.engine.begin() as c:
            await c.execute(update(replicas).where(replicas.c.id == r.id)
                            .values(**self._replica_row(r)))

    # endpoints
    async def insert_endpoint(self, e: Endpoint) -> None:
        async with self.engine.begin() as c:
            await c.execute(insert(endpoints).values(**endpoint_row(e)))

    async def set_endpoint_health(self, endpoint_id: str, healthy: bool) -> None:
        async with self.engine.begin() as c:
            await c.execute(update(endpoints).where(endpoints.c.id == endpoint_id)
                            .values(healthy=healthy))

    async def remove_endpoint(self, endpoint_id: str, now: float) -> None:
        async with self.engine.begin() as c:
            await c.execute(update(endpoints).where(endpoints.c.id == endpoint_id)
                            .values(healthy=False, removed_at=now))

    async def endpoints(self, *, include_removed: bool = False) -> list[Endpoint]:
        q = select(endpoints).order_by(endpoints.c.created_at)
        if not include_removed:
            q = q.where(endpoints.c.removed_at.is_(None))
        async with self.engine.connect() as c:
            return [_endpoint(r._mapping) for r in await c.execute(q)]

    async def endpoint(self, endpoint_id: str) -> Endpoint | None:
        async with self.engine.connect() as c:
            r = (await c.execute(select(endpoints).where(endpoints.c.id == endpoint_id))).first()
        return _endpoint(r._mapping) if r else None
