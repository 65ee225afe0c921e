"""Who is looking at the dashboard: a signed session cookie or a Bearer key.

The login page trades an API key for a session cookie. The cookie never holds
the key: it holds the key's *id*, an expiry and a random nonce, signed with
HMAC-SHA256 under a key derived from the exchange's server secret (the one the
keyring hashes API keys with, kept in the store), so every process of an
exchange accepts it and a restart does not sign everybody out. Each request
re-reads the key's row, so revoking the key ends its sessions at once. Logging
out records the session's nonce in the store (``settings`` rows named
``dash-ended:<nonce>``, kept until the session would have expired anyway), so
a signed-out cookie stays refused on every process and after a restart.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import cast

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal, Scope
from cambist.ledger.keys import ensure_server_secret
from cambist.store.schema import settings

__all__ = ["COOKIE", "SESSION_TTL_S", "SessionAuth", "SessionSigner"]

COOKIE = "cambist_session"
SESSION_TTL_S = 12 * 3600
_VERSION = "v1"
_CONTEXT = b"cambist-dashboard-session-v1"
_ENDED = "dash-ended:"  # + nonce: a ``settings`` row per signed-out, unexpired session


@dataclass(frozen=True, slots=True)
class Session:
    """A verified cookie: the key it was issued for, its expiry and nonce."""

    key_id: str
    expires_at: int
    nonce: str


class SessionSigner:
    """Issues and verifies ``v1.<key id>.<expiry>.<nonce>.<mac>`` tokens."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must have at least 16 bytes")
        # A key of its own, so a session MAC can never double as an API-key hash.
        self._key = hmac.new(secret, _CONTEXT, hashlib.sha256).digest()

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, key_id: str, now: float, ttl_s: int = SESSION_TTL_S) -> str:
        """A token for ``key_id`` valid until ``now + ttl_s``."""
        if "." in key_id or not key_id:
            raise ValueError("a key id may not be empty or contain '.'")
        body = f"{_VERSION}.{key_id}.{int(now) + ttl_s}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, now: float) -> Session | None:
        """The session in ``token`` if its signature holds and it has not expired."""
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != _VERSION:
            return None
        body, mac = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            expires = int(parts[2])
        except ValueError:
            return None
        if expires <= now:
            return None
        return Session(parts[1], expires, parts[3])


class SessionAuth:
    """Resolves the dashboard's caller and manages its sessions."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self._signer: SessionSigner | None = None
        self._ended: dict[str, int] = {}  # nonce -> expiry, for logged-out sessions

    async def signer(self) -> SessionSigner:
        """The signer, keyed on the exchange's server secret (read once)."""
        if self._signer is None:
            self._signer = SessionSigner(await ensure_server_secret(self.cp.db))
        return self._signer

    async def principal(self, request: Request) -> Principal | None:
        """The caller from ``Authorization: Bearer`` or the session cookie, or ``None``."""
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            return self.cp.auth.authenticate(secret.strip())
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        session = (await self.signer()).verify(token, self.cp.clock.now())
        if session is None or await self._was_ended(session):
            return None
        info = await self.cp.keyring.key_info(session.key_id)
        if info is None or info.get("revoked_at") is not None:
            return None
        return Principal(str(info["id"]), info.get("tenant_id"), cast(Scope, info["scope"]))

    async def login(self, secret: str) -> tuple[Principal, str] | None:
        """A principal and a fresh session token for an API key, or ``None``."""
        p = self.cp.auth.authenticate(secret.strip())
        if p is None:
            return None
        return p, (await self.signer()).issue(p.key_id, self.cp.clock.now())

    async def _was_ended(self, session: Session) -> bool:
        if session.nonce in self._ended:
            return True
        async with self.cp.db.connect() as conn:
            row = (await conn.execute(select(settings.c.key).where(
                settings.c.key == _ENDED + session.nonce))).first()
        if row is not None:  # signed out through another process: remember it here too
            self._ended[session.nonce] = session.expires_at
        return row is not None

    async def logout(self, request: Request) -> None:
        """End the request's session on every process (the cookie is cleared too)."""
        token = request.cookies.get(COOKIE)
        if not token:
            return
        session = (await self.signer()).verify(token, self.cp.clock.now())
        if session is None:
            return
        now = self.cp.clock.now()
        async with self.cp.db.begin() as conn:
            # Drop rows of sessions that have expired since: they are refused anyway.
            rows = (await conn.execute(select(settings.c.key, settings.c.value).where(
                settings.c.key.startswith(_ENDED)))).all()
            stale = [r.key for r in rows if not r.value.isdigit() or int(r.value) <= now]
            if stale:
                await conn.execute(delete(settings).where(settings.c.key.in_(stale)))
        with contextlib.suppress(IntegrityError):  # the same cookie signed out twice
            async with self.cp.db.begin() as conn:
                await conn.execute(insert(settings), {"key": _ENDED + session.nonce,
                                                      "value": str(session.expires_at)})
        # Drop expired entries so the set stays as small as the live sessions.
        self._ended = {n: e for n, e in self._ended.items() if e > now}
        self._ended[session.nonce] = session.expires_at
