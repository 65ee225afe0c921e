"""Idempotent mutations: a repeated ``Idempotency-Key`` returns the first
outcome instead of acting twice.

:meth:`IdempotencyStore.run` claims the key with an ``INSERT ... ON CONFLICT
DO NOTHING`` as the first statement of a transaction, performs the action in
that same transaction and stores its result there: the action's writes and the
record commit together or not at all, and the database's unique key (not a
prior read) decides which of two concurrent requests acts. The loser waits for
the winner's commit and returns its result. A failed action stores nothing, so
the request can be retried.

Keys are scoped to the caller (its API key id) and stored only as SHA-256
digests; a key reused for a different request is a ``Conflict``. Records
expire after ``ttl_s`` (a day by default), after which the key is new again.
Results must not contain secrets: a created API key's secret is re-derived
on a replay (:meth:`cambist.ledger.keys.Keyring.derived_secret`) from the
client's key, which the database never sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cambist.domain.clock import Clock
from cambist.domain.errors import Conflict, InvalidRequest
from cambist.ledger._sql import insert_ignore
from cambist.store.schema import idempotency

__all__ = ["Action", "IdempotencyStore", "IdempotentCall"]

Action = Callable[[AsyncConnection], Awaitable[dict[str, Any]]]
_MAX_KEY_LEN = 128
_T = idempotency.c


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotentCall:
    """One idempotent request: who (``scope``, the caller's key id), the
    client's ``key`` and what was asked (``request``: the operation and its
    parameters, compared on a replay)."""

    scope: str
    key: str
    request: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not self.key or len(self.key) > _MAX_KEY_LEN or not self.key.isprintable():
            raise InvalidRequest(
                f"an idempotency key must have 1-{_MAX_KEY_LEN} printable characters",
                param="idempotency_key",
            )

    @classmethod
    def resolve(
        cls,
        scope: str,
        header: str | None,
        field: str | None,
        request: Mapping[str, Any],
    ) -> IdempotentCall | None:
        """The call for a request whose key may come from a header or a body
        field (``None`` when neither is given; ``InvalidRequest`` when they differ)."""
        if header is not None and field is not None and header != field:
            raise InvalidRequest(
                "the Idempotency-Key header and the idempotency_key field differ; send one",
                param="idempotency_key",
            )
        key = header if header is not None else field
        return None if key is None else cls(scope, key, request)

    @property
    def key_hash(self) -> str:
        """What the database stores instead of the key."""
        return _sha256(self.key.encode())

    @property
    def request_hash(self) -> str:
        """A digest of the canonical JSON of :attr:`request`."""
        return _sha256(orjson.dumps(dict(self.request), option=orjson.OPT_SORT_KEYS))

    @property
    def seed(self) -> str:
        """Secret material for values a replay must reproduce (never stored)."""
        return f"{self.scope}\x00{self.key}"


class IdempotencyStore:
    """Runs actions at most once per :class:`IdempotentCall`."""

    def __init__(self, engine: AsyncEngine, clock: Clock, ttl_s: float = 86_400.0) -> None:
        self._engine = engine
        self._clock = clock
        self.ttl_s = ttl_s

    async def run(self, call: IdempotentCall | None, action: Action) -> tuple[dict, bool]:
        """Run ``action`` in a transaction, once per ``call``; returns its result
        and whether it is a replay of an earlier run. Without a ``call`` the
        action simply runs. Raises ``Conflict`` when the key was used for a
        different request."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            if call is None:
                return await action(conn), False
            # A write first: SQLite takes its write lock before anything is read.
            await conn.execute(delete(idempotency).where(_T.created_at < now - self.ttl_s))
            row = {"scope": call.scope, "key_hash": call.key_hash,
                   "request_hash": call.request_hash, "result": "", "created_at": now}
            claimed = await conn.execute(
                insert_ignore(conn, idempotency, ["scope", "key_hash"]).returning(_T.scope), row
            )
            if claimed.first() is None:
                return await self._replay(conn, call), True
            result = await action(conn)
            await conn.execute(
                update(idempotency)
                .where(_T.scope == call.scope, _T.key_hash == call.key_hash)
                # str subclasses (SQLAlchemy row keys) need OPT_NON_STR_KEYS
                .values(result=orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode())
            )
        return result, False

    @staticmethod
    async def _replay(conn: AsyncConnection, call: IdempotentCall) -> dict:
        q = select(_T.request_hash, _T.result).where(
            _T.scope == call.scope, _T.key_hash == call.key_hash
        )
        stored = (await conn.execute(q)).one()
        if stored.request_hash != call.request_hash:
            raise Conflict(
                "this idempotency key was already used for a different request; "
                "use a new key for a new request",
                param="idempotency_key",
            )
        result: dict = orjson.loads(stored.result)
        return result
