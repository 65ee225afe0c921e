"""``PUT /v1/keys/{id}/budget``: a key's spend budget per UTC day or month.

The body is the whole budget (``{"limit": "5.00", "alert": "4.00", "period":
"month"}``; ``limit: null`` clears it), so a repeated PUT changes nothing.
Past ``limit`` the key's requests are refused (402 ``key_budget_exceeded``)
until the period resets; reaching ``alert`` appends one ``key.budget_alert``
event per period (:mod:`cambist.ledger.budgets`). Admin keys set any key's
budget; a tenant-admin key its own tenant's keys'; inference keys none.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cambist.api.auth import control_plane, managed_key, principal
from cambist.api.context import ControlPlane
from cambist.domain.billing import Principal
from cambist.domain.errors import NotFound
from cambist.domain.money import from_micros
from cambist.ledger.budgets import KeyBudgets

__all__ = ["budget_json", "router"]

router = APIRouter(prefix="/v1", tags=["keys"])


class BudgetBody(BaseModel):
    """``limit``/``alert`` in dollars (strings keep them exact); ``period``: day or month."""

    limit: Decimal | None = Field(default=None, description="Hard limit (null: no budget).")
    alert: Decimal | None = Field(default=None, description="Soft alert threshold.")
    period: str = Field(default="month", max_length=8, description="day or month (UTC).")


def budget_json(info: dict[str, Any], budgets: KeyBudgets | None) -> dict[str, Any] | None:
    """A key's stored budget as JSON (amounts as dollar strings), with what it
    spent this period when the exchange tracks it; ``None`` without a budget."""
    limit = info.get("budget_limit_micros")
    if limit is None:
        return None
    alert = info.get("budget_alert_micros")
    out: dict[str, Any] = {"limit": str(from_micros(limit)),
                           "alert": None if alert is None else str(from_micros(alert)),
                           "period": info.get("budget_period")}
    if budgets is not None:
        out["spent"] = str(budgets.spent(info["id"]))
        left = budgets.remaining(info["id"])
        out["remaining"] = None if left is None else str(left)
    return out


@router.put("/keys/{key_id}/budget")
async def set_key_budget(key_id: str, body: BudgetBody,
                         cp: Annotated[ControlPlane, Depends(control_plane)],
                         p: Annotated[Principal, Depends(principal)]) -> dict[str, Any]:
    """Set or clear one key's spend budget (idempotent: the body is the whole budget)."""
    await managed_key(cp, p, key_id)
    if cp.budgets is None:
        raise NotFound("this exchange does not track key budgets", param="key_id")
    await cp.budgets.set_budget(key_id, body.limit, body.alert, body.period)
    info = await cp.keyring.key_info(key_id)
    return {"id": key_id, "budget": budget_json(info, cp.budgets)}
