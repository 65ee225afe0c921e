"""``/v1/usage``, ``/v1/balance``, ``/v1/credits``, ``/v1/tenants``, ``/v1/prices``,
``/v1/ledger/check``: the money side, read and (for admins) written."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from cambist.api.auth import control_plane, principal, require_admin, resolve_tenant
from cambist.api.context import ControlPlane
from cambist.api.params import Timestamp
from cambist.api.routes_keys import IdempotencyHeader, finish_idempotent
from cambist.domain.billing import Principal
from cambist.domain.endpoint import PrivacyTier
from cambist.domain.errors import InvalidRequest, NotFound
from cambist.domain.models import MODEL_CATALOG, find_model
from cambist.domain.money import quantize_usd
from cambist.ledger.idempotency import IdempotencyStore, IdempotentCall
from cambist.ledger.queries import usage_records, usage_summary

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["billing"])


def _money(x: object) -> object:
    return str(quantize_usd(x)) if isinstance(x, Decimal) else x


def _jsonable(row: dict) -> dict:
    return {k: _money(v) for k, v in row.items()}


@router.get("/usage")
async def usage(cp: Annotated[ControlPlane, Depends(control_plane)],
                p: Annotated[Principal, Depends(principal)],
                tenant: str | None = None,
                limit: Annotated[int, Query(ge=1, le=10000)] = 100,
                since: Timestamp = None,
                privacy_tier: PrivacyTier | None = None) -> dict:
    """Usage records and per-model totals (a tenant key sees only its own).
    Each record names the ``privacy_tier`` it was served under; the filters
    ``since`` and ``privacy_tier`` narrow the records, not the totals."""
    t = resolve_tenant(p, tenant)
    records = await usage_records(cp.db, t, limit=limit, since=since,
                                  privacy_tier=privacy_tier)
    summary = await usage_summary(cp.db, t)
    return {"object": "list", "tenant": t, "data": [_jsonable(r) for r in records],
            "summary": [_jsonable(r) for r in summary]}


@router.get("/balance")
async def balance(cp: Annotated[ControlPlane, Depends(control_plane)],
                  p: Annotated[Principal, Depends(principal)],
                  tenant: str | None = None) -> dict:
    """Balance and available credit of a tenant (an admin lists all), with its
    plan and each source of credit in spend order: ``allowance_left`` (today),
    ``pool_left`` (this month), ``prepaid``."""
    t = resolve_tenant(p, tenant)
    known = [x["id"] for x in await cp.keyring.list_tenants()]
    if t is not None and t not in known:
        # Checked before the ledger sees the id: it raises on ids that cannot
        # name an account, and an unknown tenant has no balance to show.
        raise NotFound(f"no tenant {t!r}; see 'cambist tenants'", param="tenant")
    tenants = [t] if t else known
    rows = []
    for tid in tenants:
        credit = cp.wallet.credit(tid)
        rows.append({"tenant": tid,
                     "journal_balance": str(quantize_usd(await cp.journal.tenant_balance(tid))),
                     "balance": str(quantize_usd(cp.wallet.balance(tid))),
                     "available": str(quantize_usd(cp.wallet.available(tid))),
                     "plan": credit["plan"],
                     "allowance_left": str(quantize_usd(credit["allowance_left"])),
                     "pool_left": str(quantize_usd(credit["pool_left"])),
                     "prepaid": str(quantize_usd(credit["prepaid"])),
                     "spendable": str(quantize_usd(credit["spendable"]))})
    return {"object": "list", "data": rows}


class CreditBody(BaseModel):
    tenant: str
    amount: Decimal = Field(gt=0, le=Decimal(1_000_000))
    idempotency_key: str = Field(min_length=1, max_length=128)


@router.post("/credits", status_code=201)
async def add_credit(body: CreditBody, cp: Annotated[ControlPlane, Depends(control_plane)],
                     p: Annotated[Principal, Depends(principal)]) -> dict:
    """Top up a tenant's prepaid balance (admin; idempotent)."""
    require_admin(p)
    if body.tenant not in {x["id"] for x in await cp.keyring.list_tenants()}:
        raise NotFound(f"no tenant {body.tenant!r}; see 'cambist tenants'", param="tenant")
    await cp.wallet.topup(body.tenant, body.amount, f"topup:{body.idempotency_key}")
    return {"tenant": body.tenant, "balance": str(quantize_usd(cp.wallet.balance(body.tenant)))}


@router.get("/tenants")
async def tenants(cp: Annotated[ControlPlane, Depends(control_plane)],
                  p: Annotated[Principal, Depends(principal)]) -> dict:
    require_admin(p)
    return {"object": "list", "data": await cp.keyring.list_tenants()}


class TenantBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantBody, response: Response,
                        cp: Annotated[ControlPlane, Depends(control_plane)],
                        p: Annotated[Principal, Depends(principal)],
                        idempotency_key: IdempotencyHeader = None) -> dict:
    """Create a tenant with one tenant-admin key (the secret is shown once;
    idempotent on ``Idempotency-Key``)."""
    require_admin(p)
    call = IdempotentCall.resolve(p.key_id, idempotency_key, body.idempotency_key,
                                  {"op": "tenants.create", "name": body.name})
    seed = call.seed if call else None
    fresh: list[str] = []

    async def act(conn: Any) -> dict:
        tid = await cp.keyring.create_tenant(body.name, conn=conn)  # Conflict if taken
        key_id, secret = await cp.keyring.create_key(tid, "tenant-admin", "default",
                                                     conn=conn, seed=seed)
        fresh.append(secret)
        return {"id": tid, "name": body.name.strip(), "key_id": key_id}

    result, replayed = await IdempotencyStore(cp.db, cp.clock).run(call, act)
    await cp.keyring.refresh()
    finish_idempotent(response, replayed)
    secret = (cp.keyring.derived_secret(result["key_id"], seed) if replayed and seed
              else fresh[0])
    return {**result, "key": secret}


@router.get("/prices")
async def prices(cp: Annotated[ControlPlane, Depends(control_plane)],
                 _: Annotated[Principal, Depends(principal)]) -> dict:
    """The price list in force: $ per million input/output tokens per model and tier."""
    rows = [{"model": m.model, "tier": m.tier, "input_per_mtok": str(m.input_per_mtok),
             "output_per_mtok": str(m.output_per_mtok), "version": m.version}
            for m in cp.price_book.list_prices()]
    versions = [{**v, "markup": str(v["markup"])} for v in await cp.price_book.versions()]
    return {"object": "list", "data": rows, "versions": versions}


class PriceBody(BaseModel):
    model: str
    tier: str = Field(default="standard", pattern=r"^[a-z_]{1,32}$")
    input_per_mtok: Decimal = Field(ge=0, le=Decimal(10_000))
    output_per_mtok: Decimal = Field(ge=0, le=Decimal(10_000))
    effective_at: float | None = None
    effective_in_s: float | None = Field(default=None, ge=0)
    note: str = Field(default="", max_length=500)


@router.post("/prices", status_code=201)
async def set_price(body: PriceBody, cp: Annotated[ControlPlane, Depends(control_plane)],
                    p: Annotated[Principal, Depends(principal)]) -> dict:
    """Change one model's price: a new complete version of the list, effective
    now or at ``effective_at`` (admin). Earlier versions stay for billing history."""
    require_admin(p)
    if find_model(body.model) is None:
        raise InvalidRequest(f"unknown model {body.model!r}; catalog: "
                             f"{', '.join(sorted(MODEL_CATALOG))}", param="model")
    now = cp.clock.now()
    effective = (body.effective_at if body.effective_at is not None
                 else now + (body.effective_in_s or 0.0))
    if effective < now - 1:
        raise InvalidRequest("effective_at is in the past; prices never change retroactively",
                             param="effective_at")
    entries = {(m.model, m.tier): (m.input_per_mtok, m.output_per_mtok)
               for m in cp.price_book.list_prices()}
    entries[(find_model(body.model).name, body.tier)] = (  # type: ignore[union-attr]
        body.input_per_mtok, body.output_per_mtok)
    versions = await cp.price_book.versions()
    markup = versions[0]["markup"] if versions else Decimal(0)
    version = await cp.price_book.publish(entries, markup, effective,
                                          note=body.note or f"set {body.model}/{body.tier}")
    return {"version": version, "effective_at": effective}


@router.get("/ledger/check")
async def ledger_check(cp: Annotated[ControlPlane, Depends(control_plane)],
                       p: Annotated[Principal, Depends(principal)]) -> dict:
    """Every ledger invariant violation (empty when the books are sound)."""
    require_admin(p)
    problems = await cp.journal.check()
    return {"ok": not problems, "violations": problems}
