"""First start: an admin key, a demo tenant with a key and credit, the first
price list, and ``connection.json`` (mode 0600) so scripts find the exchange.
A second start on the same home reuses all of it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Connection", "read_connection", "write_connection"]


@dataclass(frozen=True, slots=True)
class Connection:
    """What a client needs to reach this exchange."""

    base_url: str
    admin_key: str
    demo_key: str
    demo_tenant: str

    def as_json(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "admin_key": self.admin_key,
                "demo_key": self.demo_key, "demo_tenant": self.demo_tenant}


def read_connection(path: Path) -> Connection | None:
    """The saved connection, or ``None`` if absent or unreadable."""
    try:
        d = json.loads(path.read_text())
        return Connection(d["base_url"], d["admin_key"], d["demo_key"], d["demo_tenant"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_connection(path: Path, conn: Connection) -> None:
    """Write ``connection.json`` atomically with mode 0600 (it holds secrets)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(conn.as_json(), f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


DEMO_TENANT_NAME = "demo"



async def bootstrap(ex: Any, base_url: str) -> Connection:
    """Create (first start) or reuse (later starts) the keys, the demo tenant,
    its credit and the first price list; write ``connection.json``."""
    from cambist.app.pricing import initial_prices  # local: pricing needs the control plane

    s = ex.settings
    saved = read_connection(s.connection_file)
    kr = ex.keyring
    if saved is not None and kr.authenticate(saved.admin_key) is not None \
            and kr.authenticate(saved.demo_key) is not None:
        conn = Connection(base_url, saved.admin_key, saved.demo_key, saved.demo_tenant)
    else:
        _, admin = await kr.create_key(None, "admin", "bootstrap admin")
        tenants = {t["name"]: t["id"] for t in await kr.list_tenants()}
        tid = tenants.get(DEMO_TENANT_NAME) or await kr.create_tenant(DEMO_TENANT_NAME)
        _, demo = await kr.create_key(tid, "tenant-admin", "demo")
        await kr.refresh()
        conn = Connection(base_url, admin, demo, tid)
    # Once per home, whatever happens to connection.json.
    await ex.wallet.topup(conn.demo_tenant, s.demo_credit, "bootstrap:demo-credit")
    if ex.prices.current_version is None and ex.control is not None:
        cp = ex.control
        entries = initial_prices(cp.book.all_offers(), cp.perf, s.markup)
        await ex.prices.publish(entries, s.markup, ex.clock.now(),
                                note="initial: median $/Mtok over offers x (1 + markup)")
    write_connection(s.connection_file, conn)
    return conn
