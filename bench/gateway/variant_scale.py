"""Run the ``cambist`` CLI with the gateway's rate limits and/or metering
switched off, to measure what they cost (``bench/gateway_scale.py``). Bench
only: nothing in the product reads this, and no product setting turns them off.

``BENCH_OFF`` holds ``+``-joined parts; the exchange is built as usual
(:func:`cambist.app.exchange.open_exchange`: store, Redis, outbox, flusher,
every loop) and only the gateway's injected dependencies are swapped before the
app is assembled:

``limits``
    ``GatewayDeps.limiter`` admits every request without bookkeeping: no
    bucket lookup, refill or take (per key and per tenant, requests and
    tokens), no token estimate reserved or corrected, no ``x-ratelimit-*``
    headers, nothing pushed to Redis; and ``GatewayDeps.budgets`` is ``None``
    (no per-key spend budget check, record or header).
``metering``
    ``GatewayDeps.wallet`` holds no credit and records nothing: ``reserve``
    returns a reservation without touching the balance, the holds or Redis;
    ``settle`` and ``release`` do nothing, so no usage record is appended to the
    outbox, flushed to PostgreSQL (usage row, journal entry) or reported to
    Redis. What stays: reading ``usage`` from the answer, pricing it and
    building the usage record in :class:`cambist.gateway.metering.Meter`.

Auth, parsing, planning, routing, forwarding and relaying are unchanged.
Run: ``BENCH_OFF=limits+metering python bench/gateway/variant_scale.py gateway --port 8081``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from decimal import Decimal
from typing import Any, cast

import cambist.app.run as run
from cambist.app.exchange import Exchange
from cambist.cli.main import main
from cambist.domain.billing import Reservation
from cambist.domain.money import to_micros
from cambist.domain.usage import UsageRecord
from cambist.gateway.limits import Admission, RateLimiter
from cambist.ledger.plans import Plan

__all__ = ["FreeAdmission", "NullWallet", "Unlimited"]


class FreeAdmission:
    """An admission that takes and corrects nothing (fresh headers per request);
    it still names the tenant's plan (its ``max_tokens`` cap applies)."""

    __slots__ = ("extra", "headers", "plan")

    def __init__(self, plan: Plan) -> None:
        self.headers: dict[str, str] = {}
        self.extra: dict[str, str] = {}
        self.plan = plan

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return []

    def reserve_tokens(self, estimate: int) -> None:
        pass

    def settle(self, used: int) -> None:
        pass


class Unlimited(RateLimiter):
    """Admits every request, keeping no buckets."""

    def admit(self, key_id: str, tenant_id: str) -> Admission:
        return cast(Admission, FreeAdmission(self._plans.plan_of(tenant_id)))


class NullWallet:
    """Holds nothing, charges nothing, appends nothing to the outbox."""

    def reserve(self, tenant_id: str, amount: Decimal, request_id: str) -> Reservation:
        return Reservation(request_id, tenant_id, to_micros(amount))

    def reserve_micros(self, tenant_id: str, micros: int, request_id: str) -> Reservation:
        return Reservation(request_id, tenant_id, micros)

    def settle(self, reservation: Reservation, record: UsageRecord,
               micros: int | None = None) -> None:
        pass

    def release(self, reservation: Reservation) -> None:
        pass


def _parts() -> set[str]:
    parts = {p for p in os.environ.get("BENCH_OFF", "").split("+") if p}
    unknown = parts - {"limits", "metering"}
    if unknown:
        raise SystemExit(f"BENCH_OFF: unknown parts {sorted(unknown)} (limits, metering)")
    return parts


_open_exchange = run.open_exchange


async def _open_exchange_off(*args: Any, **kwargs: Any) -> Exchange:
    ex = await _open_exchange(*args, **kwargs)
    parts, changes = _parts(), {}
    if "limits" in parts:
        changes["limiter"] = Unlimited(ex.gateway.plans, ex.gateway.clock)
        changes["budgets"] = None
    if "metering" in parts:
        changes["wallet"] = NullWallet()
    ex.gateway = dataclasses.replace(ex.gateway, **changes)
    return ex


if __name__ == "__main__":
    _parts()  # fail before starting on a typo
    run.open_exchange = _open_exchange_off  # type: ignore[assignment]
    sys.argv[0] = "cambist"
    main()
