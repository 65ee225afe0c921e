"""Endpoints in the store: rows to and from :class:`Endpoint`, the loop that
loads them into the routing table, the configured external upstreams
(upserted at startup with stable ids) and admin-registered local servers.

Rows hold the *name* of the environment variable with an upstream's API key,
never the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from cambist.domain.attestation import verified_until
from cambist.domain.clock import Clock
from cambist.domain.endpoint import Endpoint
from cambist.domain.errors import Conflict, NotFound
from cambist.domain.money import from_micros, to_micros
from cambist.gateway.routing import RoutingTable
from cambist.store.schema import endpoint_attestations as _A
from cambist.store.schema import endpoints as endpoints_table

__all__ = [
    "RoutingRefresh",
    "endpoint_from_row",
    "endpoint_to_row",
    "find_endpoint",
    "insert_local_endpoint",
    "list_endpoints",
    "remove_endpoint",
    "upsert_external_endpoints",
]

_T = endpoints_table


def _opt_micros(value: int | None) -> Decimal | None:
    return from_micros(int(value)) if value is not None else None


def _to_micros(value: Decimal | None) -> int | None:
    return to_micros(value) if value is not None else None


def endpoint_from_row(row: Mapping[str, Any]) -> Endpoint:
    """An :class:`Endpoint` from an ``endpoints`` table row."""
    return Endpoint(
        id=row["id"],
        model=row["model"],
        url=row["url"],
        supplier=row["supplier"],
        owner=row["owner"],
        healthy=bool(row["healthy"]),
        deployment=row["deployment"],
        lease_id=row["lease_id"],
        sku=row["sku"],
        region=row["region"] or "",
        cost_per_hour=from_micros(int(row["cost_per_hour_micros"] or 0)),
        capacity_tok_s=float(row["capacity_tok_s"] or 0.0),
        max_concurrency=int(row["max_concurrency"] or 64),
        context_length=int(row["context_length"] or 0),
        created_at=float(row["created_at"]),
        kind=row.get("kind") or "deployment",
        input_price_per_mtok=_opt_micros(row.get("input_micros_per_mtok")),
        output_price_per_mtok=_opt_micros(row.get("output_micros_per_mtok")),
        api_key_env=row.get("api_key_env"),
        quantization=row.get("quantization"),
    )


def endpoint_to_row(e: Endpoint) -> dict[str, Any]:
    """The ``endpoints`` row of ``e`` (``removed_at`` left out)."""
    return {
        "id": e.id, "model": e.model, "url": e.url, "supplier": e.supplier, "owner": e.owner,
        "healthy": e.healthy, "deployment": e.deployment, "lease_id": e.lease_id, "sku": e.sku,
        "region": e.region, "cost_per_hour_micros": to_micros(e.cost_per_hour),
        "capacity_tok_s": e.capacity_tok_s, "max_concurrency": e.max_concurrency,
        "context_length": e.context_length, "created_at": e.created_at, "kind": e.kind,
        "input_micros_per_mtok": _to_micros(e.input_price_per_mtok),
        "output_micros_per_mtok": _to_micros(e.output_price_per_mtok),
        "api_key_env": e.api_key_env, "quantization": e.quantization,
    }


async def upsert_external_endpoints(
    engine: AsyncEngine, declared: Sequence[Endpoint], now: float, *, retire_others: bool,
) -> None:
    """Make the ``external`` rows match ``declared``: insert new ones, update
    (and revive) known ones, keeping their ``created_at``; with ``retire_others``
    mark external rows no longer configured as removed. Another process doing
    the same at the same moment makes the first try fail; it is tried again."""
    for attempt in range(3):
        try:
            await _upsert(engine, declared, now, retire_others)
            return
        except IntegrityError:
            if attempt == 2:
                raise


async def _upsert(engine: AsyncEngine, declared: Sequence[Endpoint], now: float,
                  retire_others: bool) -> None:
    ids = {e.id for e in declared}
    async with engine.begin() as conn:
        rows = await conn.execute(select(_T.c.id, _T.c.removed_at).where(_T.c.kind == "external"))
        existing = {r.id: r.removed_at for r in rows}
        for e in declared:
            row = endpoint_to_row(e)
            if e.id in existing:
                row.pop("created_at")
                await conn.execute(update(_T).where(_T.c.id == e.id)
                                   .values(**row, removed_at=None))
            else:
                await conn.execute(insert(_T).values(**row))
        stale = [i for i, removed in existing.items() if i not in ids and removed is None]
        if retire_others and stale:
            await conn.execute(update(_T).where(_T.c.id.in_(stale))
                               .values(healthy=False, removed_at=now))


async def insert_local_endpoint(engine: AsyncEngine, endpoint: Endpoint) -> None:
    """Register a local endpoint; ``Conflict`` if a live one already serves the
    same model at the same URL."""
    same = select(_T.c.id).where(and_(_T.c.url == endpoint.url, _T.c.model == endpoint.model,
                                      _T.c.removed_at.is_(None)))
    async with engine.begin() as conn:
        found = (await conn.execute(same)).first()
        if found is not None:
            raise Conflict(f"endpoint {found.id} already serves {endpoint.model} at "
                           f"{endpoint.url}", param="url")
        try:
            await conn.execute(insert(_T).values(**endpoint_to_row(endpoint)))
        except IntegrityError:
            raise Conflict(f"endpoint {endpoint.id} already exists") from None


async def list_endpoints(engine: AsyncEngine) -> list[Endpoint]:
    """Every live endpoint, oldest first."""
    query = select(_T).where(_T.c.removed_at.is_(None)).order_by(_T.c.created_at, _T.c.id)
    async with engine.connect() as conn:
        return [endpoint_from_row(dict(r._mapping)) for r in await conn.execute(query)]


async def find_endpoint(engine: AsyncEngine, endpoint_id: str) -> Endpoint:
    """The live endpoint ``endpoint_id``; ``NotFound`` otherwise."""
    query = select(_T).where(and_(_T.c.id == endpoint_id, _T.c.removed_at.is_(None)))
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"no endpoint {endpoint_id!r}", param="id")
    return endpoint_from_row(dict(row._mapping))


async def remove_endpoint(engine: AsyncEngine, endpoint_id: str, now: float) -> None:
    """Take a live endpoint out of routing for good (sets ``removed_at``)."""
    async with engine.begin() as conn:
        done = await conn.execute(
            update(_T).where(and_(_T.c.id == endpoint_id, _T.c.removed_at.is_(None)))
            .values(healthy=False, removed_at=now))
    if done.rowcount == 0:
        raise NotFound(f"no endpoint {endpoint_id!r}", param="id")


class RoutingRefresh:
    """Control loop: reload live endpoints (``removed_at`` NULL) into the table.

    ``declared`` are the external endpoints of this process's configuration:
    what only configuration knows about them (``zdr``, ``data_collection``,
    ``supported_parameters``) is laid over their rows by id.
    """

    name = "gateway.routing"

    def __init__(
        self, engine: AsyncEngine, table: RoutingTable, clock: Clock, interval_s: float = 0.5,
        declared: Sequence[Endpoint] = (),
    ) -> None:
        self._engine = engine
        self._table = table
        self._clock = clock
        self.interval_s = interval_s
        self._declared = {e.id: e for e in declared}
        self.refreshed_at: float | None = None

    def _overlay(self, ep: Endpoint) -> Endpoint:
        conf = self._declared.get(ep.id)
        if conf is None:
            return ep
        return replace(ep, zdr=conf.zdr, data_collection=conf.data_collection,
                       supported_parameters=conf.supported_parameters)

    async def step(self, now: float) -> None:
        """Read the endpoints table once and swap the snapshot. Endpoints whose
        attestation verified and has not expired carry ``attested_until`` (the
        confidential tier); an expiry drops it at the first refresh after."""
        query = select(_T).where(_T.c.removed_at.is_(None))
        async with self._engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
            attested = verified_until(
                {r.endpoint_id: dict(r._mapping) for r in await conn.execute(select(_A))}, now)
        self._table.swap(
            replace(ep, attested_until=attested.get(ep.id))
            for ep in (self._overlay(endpoint_from_row(r)) for r in rows))
        self.refreshed_at = now
