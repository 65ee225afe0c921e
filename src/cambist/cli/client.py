"""The CLI's one client path: every command but ``up`` and ``gateway`` talks to
a running exchange over its REST API.

The exchange is found through ``--url``/``--key``, then ``CAMBIST_URL`` /
``CAMBIST_API_KEY``, then ``$CAMBIST_HOME/connection.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CliError", "Connection", "ExchangeClient", "resolve_connection"]


class CliError(Exception):
    """A failure to report to the user as one sentence (exit code 1)."""


@dataclass(frozen=True, slots=True)
class Connection:
    base_url: str
    key: str
    demo_key: str | None = None


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("CAMBIST_HOME") or Path.home() / ".cambist").expanduser()


def resolve_connection(url: str | None, key: str | None,
                       environ: Mapping[str, str] | None = None, *,
                       as_demo: bool = False) -> Connection:
    """Where the exchange is and which key to use (see module docstring)."""
    env = os.environ if environ is None else environ
    url = url or env.get("CAMBIST_URL")
    key = key or env.get("CAMBIST_API_KEY")
    conn_file = _home(env) / "connection.json"
    saved: dict[str, Any] = {}
    if (not url or not key) and conn_file.exists():
        try:
            saved = json.loads(conn_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read {conn_file} ({exc}); restart 'cambist up' "
                           "to rewrite it") from None
    url = url or saved.get("base_url")
    key = key or (saved.get("demo_key") if as_demo else saved.get("admin_key"))
    if not url or not key:
        raise CliError("no exchange found: start one with 'cambist up', or pass --url and "
                       "--key (or set CAMBIST_URL and CAMBIST_API_KEY)")
    return Connection(url.rstrip("/"), key, saved.get("demo_key"))


class ExchangeClient:
    """Thin async REST client; turns HTTP errors into :class:`CliError`."""

    def __init__(self, conn: Connection, timeout: float = 30.0) -> None:
        self.conn = conn
        self._http = httpx.AsyncClient(base_url=conn.base_url, timeout=timeout,
                                       headers={"authorization": f"Bearer {conn.key}"})

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      json_body: Any = None) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = await self._http.request(method, path, params=clean, json=json_body)
        except httpx.ConnectError:
            raise CliError(f"cannot reach the exchange at {self.conn.base_url}; is "
                           "'cambist up' running?") from None
        except httpx.TimeoutException:
            raise CliError(f"the exchange at {self.conn.base_url} did not answer in time") \
                from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                msg = err.get("message") or str(err)
            except (ValueError, KeyError, TypeError):
                msg = r.text[:200] or r.reason_phrase
            raise CliError(f"{msg} (HTTP {r.status_code})")
        return r.json()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.request("POST", path, json_body=body)

    async def put(self, path: str, body: Any = None) -> Any:
        return await self.request("PUT", path, json_body=body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)
