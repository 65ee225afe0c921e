"""``cambist keys``: create, list, revoke and rotate API keys over the REST API.

Mutations send a fresh idempotency key (or ``--idempotency-key``), so a
command retried after a lost answer never creates a second key.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import typer

from cambist.cli.common import console, emit_json, fail, new_token, parse_money, run_client
from cambist.cli.render import table

__all__ = ["register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
IdemOpt = Annotated[str | None, typer.Option(
    help="Repeat-safe token: the same token returns the first outcome.")]
_SCOPES = ("admin", "tenant-admin", "inference")
_PERIODS = ("day", "month")


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _show_secret(k: dict[str, Any], verb: str) -> None:
    owner = f"tenant {k['tenant_id']}" if k["tenant_id"] else "the platform"
    console.print(f"{verb} key [bold]{k['id']}[/bold] ({k['scope']}, {owner}"
                  + (f", {k['name']!r}" if k["name"] else "") + ")")
    console.print(f"secret (shown once, store it now): {k['key']}", soft_wrap=True,
                  highlight=False)


TiersOpt = Annotated[str | None, typer.Option(
    "--tiers", help="Comma-separated privacy tiers allowed, e.g. zero_retention,confidential.")]
AnyOpt = Annotated[bool, typer.Option("--any", help="Allow every tier (clear the policy).")]


def tier_list(tiers: str | None) -> list[str] | None:
    """``--tiers`` as the API's list (``None`` when not given)."""
    return None if tiers is None else [t.strip() for t in tiers.split(",") if t.strip()]


def set_privacy(ctx: typer.Context, path: str, what: str, tiers: str | None,
                allow_any: bool) -> None:
    """PUT a privacy policy and print it; exactly one of ``tiers``/``allow_any``."""
    if (tiers is None) == (not allow_any):
        raise typer.BadParameter("give --tiers a,b or --any")
    r = run_client(ctx, lambda c: c.put(path, {"privacy_tiers": tier_list(tiers)}))
    allowed = ", ".join(r["privacy_tiers"]) if r["privacy_tiers"] is not None else "any tier"
    console.print(f"{what} {r['id']} may use: {allowed}")


def _budget_cells(k: dict[str, Any]) -> list[str]:
    """The ``budget`` and ``spent`` cells of a key row (empty without a budget)."""
    b = k.get("budget")
    if not b:
        return ["", ""]
    return [f"${b['limit']}/{b['period']}", f"${b['spent']}" if b.get("spent") else ""]


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to ``app``."""
    keys = typer.Typer(help="API keys: create, list, revoke, rotate.", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(ctx: typer.Context,
               tenant: Annotated[str | None, typer.Option(
                   help="Tenant id (admin keys; a tenant key acts for its own).")] = None,
               scope: Annotated[str, typer.Option(
                   help="admin, tenant-admin or inference.")] = "inference",
               name: Annotated[str, typer.Option(help="A label, e.g. laptop.")] = "",
               privacy: Annotated[str | None, typer.Option(
                   help="Privacy tiers the key may use, comma-separated (default: any).")]
               = None,
               idempotency_key: IdemOpt = None, as_json: JsonOpt = False) -> None:
        """Create a key; its secret is printed once."""
        if scope not in _SCOPES:
            raise typer.BadParameter(f"--scope takes one of {', '.join(_SCOPES)}")
        body = {"tenant": tenant, "scope": scope, "name": name,
                "privacy_tiers": tier_list(privacy),
                "idempotency_key": idempotency_key or new_token()}
        k = run_client(ctx, lambda c: c.post("/v1/keys", body))
        emit_json(k) if as_json else _show_secret(k, "Created")

    @keys.command("list")
    def list_(ctx: typer.Context,
              tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")]
              = None,
              active: Annotated[bool, typer.Option(help="Leave out revoked keys.")] = False,
              as_json: JsonOpt = False) -> None:
        """Keys with scope, tenant, prefix and state (never secrets)."""
        data = run_client(ctx, lambda c: c.get("/v1/keys", tenant=tenant, active=active))
        if as_json:
            emit_json(data)
            return
        rows = [[k["id"], k["scope"], k["tenant_id"] or "platform", k["name"],
                 k["prefix"] + "…", _when(k["created_at"]),
                 f"revoked {_when(k['revoked_at'])}" if k["revoked_at"] else "active",
                 *_budget_cells(k)]
                for k in data["data"]]
        console.print(table("API keys", ["id", "scope", "tenant", "name", "prefix", "created",
                                         "state", "budget", "spent"], rows))

    @keys.command("revoke")
    def revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id.")],
               idempotency_key: IdemOpt = None) -> None:
        """Revoke a key; every process refuses it within a second."""
        body = {"idempotency_key": idempotency_key or new_token()}
        k = run_client(ctx, lambda c: c.post(f"/v1/keys/{key_id}/revoke", body))
        console.print(f"Revoked {k['id']} ({k['scope']}, prefix {k['prefix']}…)")

    @keys.command("privacy")
    def privacy(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id.")],
                tiers: TiersOpt = None, allow_any: AnyOpt = False) -> None:
        """Set the privacy tiers a key may use; requests naming another are refused."""
        set_privacy(ctx, f"/v1/keys/{key_id}/privacy", "key", tiers, allow_any)

    @keys.command("budget")
    def budget(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id.")],
               limit: Annotated[str | None, typer.Option(
                   help="Hard limit in dollars per period; requests past it get 402.")] = None,
               alert: Annotated[str | None, typer.Option(
                   help="Soft alert in dollars: one event when spend reaches it.")] = None,
               period: Annotated[str, typer.Option(help="day or month (UTC).")] = "month",
               clear: Annotated[bool, typer.Option(
                   "--clear", help="Remove the key's budget.")] = False,
               as_json: JsonOpt = False) -> None:
        """Set a key's spend budget per UTC day or month (or --clear it)."""
        if clear == (limit is not None):
            raise fail("give --limit AMOUNT (with --alert and --period if wanted) or --clear")
        if period not in _PERIODS:
            raise fail(f"--period takes day or month, not {period!r}")
        lim, warn = parse_money(limit, "--limit"), parse_money(alert, "--alert")
        if clear and warn is not None:
            raise fail("--alert needs --limit; drop --alert to clear the budget")
        body = {"limit": None if lim is None else str(lim),
                "alert": None if warn is None else str(warn), "period": period}
        r = run_client(ctx, lambda c: c.put(f"/v1/keys/{key_id}/budget", body))
        if as_json:
            emit_json(r)
            return
        b = r["budget"]
        if b is None:
            console.print(f"key {r['id']} has no budget")
            return
        extra = f", alert at ${b['alert']}" if b["alert"] is not None else ""
        console.print(f"key {r['id']} budget: ${b['limit']} per {b['period']} (UTC){extra}; "
                      f"spent ${b.get('spent', '0')} this {b['period']}")

    @keys.command("rotate")
    def rotate(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Key id.")],
               idempotency_key: IdemOpt = None, as_json: JsonOpt = False) -> None:
        """Replace a key with a new one (same tenant, scope, name, privacy tiers
        and budget, its spend this period included) and revoke it."""
        body = {"idempotency_key": idempotency_key or new_token()}
        k = run_client(ctx, lambda c: c.post(f"/v1/keys/{key_id}/rotate", body))
        if as_json:
            emit_json(k)
            return
        console.print(f"Revoked {key_id}.")
        _show_secret(k, "New")
        if b := k.get("budget"):
            spent = f"; spent ${b['spent']} this {b['period']}" if b.get("spent") else ""
            console.print(f"Budget kept: ${b['limit']} per {b['period']} (UTC){spent}")
