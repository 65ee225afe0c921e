"""Tenants and API keys.

A key's secret (``cb-…``) is shown once, at creation; the database keeps only
``HMAC-SHA256(server secret, key secret)`` and a short display prefix. The
gateway's hot path calls :meth:`Keyring.authenticate` synchronously: one HMAC
and one dict lookup in a map that :class:`KeyringRefresh` rebuilds every
half second, so a revocation reaches every process within one second.

Mutations take an optional ``conn``: given one, they write inside the
caller's transaction (e.g. :class:`cambist.ledger.idempotency.IdempotencyStore`)
and leave the in-memory map alone; the caller calls :meth:`Keyring.refresh`
after the commit. A ``seed`` (secret material the database never stores, such
as an idempotency key) makes a new key's secret reproducible by
:meth:`Keyring.derived_secret`, so a replayed request can return it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.billing import Principal, Scope
from cambist.domain.clock import Clock
from cambist.domain.endpoint import format_tier_list, meet_tiers, parse_tier_list
from cambist.domain.errors import Conflict, InvalidRequest, NotFound
from cambist.domain.ids import new_id
from cambist.ledger._sql import insert_ignore
from cambist.ledger.accounts import validate_name_part
from cambist.store.schema import api_keys, settings, tenants

__all__ = ["SCOPES", "Keyring", "KeyringRefresh", "ensure_server_secret"]

SCOPES: tuple[Scope, ...] = ("admin", "tenant-admin", "inference")
_SECRET_KEY = "server_secret"
_PREFIX_LEN = 10
_MAX_SECRET_LEN = 256
_C = api_keys.c
_INFO = (_C.id, _C.tenant_id, _C.scope, _C.name, _C.prefix, _C.created_at, _C.revoked_at,
         _C.privacy_tiers, _C.budget_limit_micros, _C.budget_alert_micros, _C.budget_period)


async def ensure_server_secret(engine: AsyncEngine) -> bytes:
    """The server's 32-byte HMAC secret, created once (hex, ``settings`` table).

    Concurrent first calls agree: the insert is conflict-ignoring and the
    stored value is read back."""
    async with engine.begin() as conn:
        await conn.execute(
            insert_ignore(conn, settings, ["key"]),
            {"key": _SECRET_KEY, "value": secrets.token_hex(32)},
        )
        value = (
            await conn.execute(select(settings.c.value).where(settings.c.key == _SECRET_KEY))
        ).scalar_one()
    return bytes.fromhex(value)


def _require_some(tiers: frozenset[str] | None) -> None:
    if tiers is not None and not tiers:
        raise InvalidRequest("allow at least one privacy tier (or none to allow any)",
                             param="privacy_tiers")


class Keyring:
    """Creates, revokes and lists tenants and keys; authenticates secrets."""

    def __init__(self, engine: AsyncEngine, clock: Clock, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the server secret must have at least 16 bytes")
        self._engine = engine
        self._clock = clock
        self._secret = secret
        # stored secret hash -> (that hash, principal)
        self._by_hash: dict[str, tuple[str, Principal]] = {}
        self._changes = 0  # bumped by local creates/revokes; a refresh that raced one retries
        # Refreshes overlap (the reload loop and a request that just created a
        # key): one that started earlier must not replace the view of one that
        # started later, or a key created in between vanishes until the next reload.
        self._refresh_started = 0
        self._refresh_applied = 0

    def _hash(self, key_secret: str) -> str:
        return hmac.new(self._secret, key_secret.encode(), hashlib.sha256).hexdigest()

    @asynccontextmanager
    async def _tx(self, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        if conn is not None:
            yield conn
            return
        async with self._engine.begin() as own:
            yield own

    async def create_tenant(
        self, name: str, tenant_id: str | None = None, *, conn: AsyncConnection | None = None
    ) -> str:
        """Create a tenant and return its id; ``Conflict`` if the name or id is taken."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidRequest("a tenant name must have 1-128 characters", param="name")
        tid = validate_name_part(tenant_id, "tenant id") if tenant_id else new_id("ten")
        row = {"id": tid, "name": name, "created_at": self._clock.now()}
        taken = Conflict(f"a tenant named {name!r} or with id {tid!r} already exists",
                         param="name")
        if conn is not None:
            # Inside the caller's transaction: look first rather than let a
            # failed INSERT abort it (PostgreSQL would refuse every later statement).
            q = select(tenants.c.id).where((tenants.c.name == name) | (tenants.c.id == tid))
            if (await conn.execute(q)).first() is not None:
                raise taken
            await conn.execute(insert(tenants), row)
            return tid
        try:
            async with self._engine.begin() as own:
                await own.execute(insert(tenants), row)
        except IntegrityError as exc:
            raise taken from exc
        return tid

    def derived_secret(self, key_id: str, seed: str) -> str:
        """The secret of a key created with ``seed``: HMAC(server secret, key id,
        seed), so only a caller holding the seed can have it reproduced."""
        mac = hmac.new(self._secret, f"key-secret\x00{key_id}\x00{seed}".encode(),
                       hashlib.sha256).digest()
        return "cb-" + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    async def create_key(
        self,
        tenant_id: str | None,
        scope: str,
        name: str = "",
        *,
        conn: AsyncConnection | None = None,
        seed: str | None = None,
        privacy_tiers: frozenset[str] | None = None,
    ) -> tuple[str, str]:
        """Create a key; returns ``(key_id, secret)``. The secret is never stored.

        ``scope`` is ``admin`` (platform-wide, ``tenant_id`` must be ``None``),
        ``tenant-admin`` or ``inference`` (both need an existing tenant).
        ``privacy_tiers`` limits the tiers its requests may use (``None``: any,
        within its tenant's policy)."""
        if scope not in SCOPES:
            raise InvalidRequest(
                f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}", param="scope"
            )
        if scope == "admin" and tenant_id is not None:
            raise InvalidRequest("an admin key belongs to no tenant", param="tenant_id")
        if scope != "admin" and tenant_id is None:
            article = "an" if scope[0] in "aeiou" else "a"
            raise InvalidRequest(f"{article} {scope} key needs a tenant (name one with --tenant)",
                                 param="tenant_id")
        if len(name) > 128:
            raise InvalidRequest("a key name must have at most 128 characters", param="name")
        _require_some(privacy_tiers)
        key_id = new_id("key")
        secret = self.derived_secret(key_id, seed) if seed else "cb-" + secrets.token_urlsafe(32)
        digest = self._hash(secret)
        row = {
            "id": key_id,
            "tenant_id": tenant_id,
            "scope": scope,
            "name": name,
            "prefix": secret[:_PREFIX_LEN],
            "secret_hash": digest,
            "created_at": self._clock.now(),
            "revoked_at": None,
            "privacy_tiers": format_tier_list(privacy_tiers),
        }
        if conn is not None:
            if tenant_id is not None:
                await self._require_tenant(conn, tenant_id)
            await conn.execute(insert(api_keys), row)
        else:
            if tenant_id is not None:  # read apart: SQLite's write transaction starts writing
                async with self._engine.connect() as reader:
                    await self._require_tenant(reader, tenant_id)
            async with self._engine.begin() as own:
                await own.execute(insert(api_keys), row)
        if conn is None:
            await self.refresh()  # the tenant's policy applies to the new key at once
        return key_id, secret

    @staticmethod
    async def _require_tenant(conn: AsyncConnection, tenant_id: str) -> None:
        q = select(tenants.c.id).where(tenants.c.id == tenant_id)
        if (await conn.execute(q)).first() is None:
            raise NotFound(f"no tenant {tenant_id!r}", param="tenant_id")

    async def revoke(self, key_id: str, *, conn: AsyncConnection | None = None) -> None:
        """Revoke a key (idempotent); ``NotFound`` if no such key exists."""
        async with self._tx(conn) as tx:
            await tx.execute(
                update(api_keys)
                .where(_C.id == key_id, _C.revoked_at.is_(None))
                .values(revoked_at=self._clock.now())
            )
            found = await tx.execute(select(_C.id).where(_C.id == key_id))
            if found.first() is None:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
        if conn is None:
            self._forget(key_id)

    def _forget(self, key_id: str) -> None:
        self._by_hash = {h: v for h, v in self._by_hash.items() if v[1].key_id != key_id}
        self._changes += 1

    async def rotate(
        self, key_id: str, *, conn: AsyncConnection | None = None, seed: str | None = None
    ) -> tuple[str, str]:
        """Replace a key: create one with the same tenant, scope, name, privacy
        tiers and spend budget (limit, alert, period, alert state; its spend is
        counted over the key's lineage, so the period's spend carries over),
        and revoke the old one, in one transaction; returns ``(new_key_id,
        secret)``. ``NotFound`` for an unknown key, ``Conflict`` for a revoked one."""
        async with self._tx(conn) as tx:
            # The revoking UPDATE first: SQLite takes its write lock before reading,
            # and of two concurrent rotations of one key only one revokes it.
            revoked = await tx.execute(
                update(api_keys)
                .where(_C.id == key_id, _C.revoked_at.is_(None))
                .values(revoked_at=self._clock.now())
            )
            old = await self.key_info(key_id, conn=tx)
            if old is None:
                raise NotFound(f"no API key {key_id!r}", param="key_id")
            if revoked.rowcount != 1:
                raise Conflict(f"API key {key_id} is revoked; create a new key instead")
            new = await self.create_key(old["tenant_id"], old["scope"], old["name"],
                                        conn=tx, seed=seed,
                                        privacy_tiers=parse_tier_list(old["privacy_tiers"]))
            carried = (await tx.execute(
                select(func.coalesce(_C.lineage, _C.id).label("lineage"),
                       _C.budget_limit_micros, _C.budget_alert_micros, _C.budget_period,
                       _C.budget_alerted).where(_C.id == key_id))).one()
            await tx.execute(update(api_keys).where(_C.id == new[0])
                             .values(**carried._mapping))
        if conn is None:
            await self.refresh()
        return new

    async def key_info(self, key_id: str, *, conn: AsyncConnection | None = None) -> dict | None:
        """One key's public fields (never the secret or its hash), or ``None``."""
        q = select(*_INFO).where(_C.id == key_id)
        if conn is not None:
            row = (await conn.execute(q)).first()
        else:
            async with self._engine.connect() as own:
                row = (await own.execute(q)).first()
        return dict(row._mapping) if row is not None else None

    async def list_keys(self, tenant_id: str | None = None) -> list[dict]:
        """Keys (all, or one tenant's), oldest first; never the secret or its hash."""
        q = select(*_INFO)
        if tenant_id is not None:
            q = q.where(_C.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(q.order_by(_C.created_at, _C.id))).all()
        return [dict(r._mapping) for r in rows]

    async def list_tenants(self) -> list[dict]:
        """Tenants (``id``, ``name``, ``created_at``), oldest first."""
        q = select(tenants).order_by(tenants.c.created_at, tenants.c.id)
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(q)).all()]

    async def tenant(self, tenant_id: str) -> dict | None:
        """One tenant, or ``None``."""
        q = select(tenants).where(tenants.c.id == tenant_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return dict(row._mapping) if row is not None else None

    async def set_privacy(self, *, key_id: str | None = None, tenant_id: str | None = None,
                          tiers: frozenset[str] | None) -> None:
        """Set the tiers one key, or every key of one tenant, may use (``None``: any).
        Applies in this process at once and in every other within a refresh."""
        if (key_id is None) == (tenant_id is None):
            raise ValueError("name exactly one of key_id and tenant_id")
        _require_some(tiers)
        stored = format_tier_list(tiers)
        async with self._engine.begin() as conn:
            if key_id is not None:
                done = await conn.execute(update(api_keys).where(_C.id == key_id)
                                          .values(privacy_tiers=stored))
                missing = NotFound(f"no API key {key_id!r}", param="key_id")
            else:
                done = await conn.execute(update(tenants).where(tenants.c.id == tenant_id)
                                          .values(privacy_tiers=stored))
                missing = NotFound(f"no tenant {tenant_id!r}", param="tenant_id")
            if done.rowcount != 1:
                raise missing
        self._changes += 1
        await self.refresh()

    async def refresh(self) -> None:
        """Reload every non-revoked key into the in-memory map (swapped atomically,
        unless a refresh that started later has already swapped in its view)."""
        self._refresh_started += 1
        ticket = self._refresh_started
        c = api_keys.c
        q = (select(c.id, c.tenant_id, c.scope, c.secret_hash, c.privacy_tiers,
                    tenants.c.privacy_tiers.label("tenant_tiers"))
             .select_from(api_keys.outerjoin(tenants, tenants.c.id == c.tenant_id))
             .where(c.revoked_at.is_(None)))
        while True:
            seen = self._changes
            async with self._engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            if seen == self._changes:
                break
        if ticket < self._refresh_applied:
            return
        self._refresh_applied = ticket
        self._by_hash = {
            r.secret_hash: (r.secret_hash, Principal(
                r.id, r.tenant_id, cast(Scope, r.scope),
                meet_tiers(parse_tier_list(r.privacy_tiers), parse_tier_list(r.tenant_tiers))))
            for r in rows
        }

    def authenticate(self, secret: str) -> Principal | None:
        """The principal of a key secret, or ``None`` if unknown or revoked.
        Synchronous and in memory (the gateway's hot path)."""
        if not isinstance(secret, str) or not secret or len(secret) > _MAX_SECRET_LEN:
            return None
        digest = self._hash(secret)
        found = self._by_hash.get(digest)
        if found is None:
            return None
        stored, principal = found
        return principal if hmac.compare_digest(stored, digest) else None


class KeyringRefresh:
    """Control loop: reload keys so revocations from any process apply within
    ``interval_s`` plus one reload (the default 0.5 s keeps that under a second)."""

    name = "keyring-refresh"

    def __init__(self, keyring: Keyring, interval_s: float = 0.5) -> None:
        self.keyring = keyring
        self.interval_s = interval_s

    async def step(self, now: float) -> None:
        """Reload the key map."""
        await self.keyring.refresh()
