"""Commands for models, usage, balances, credits, tenants, prices and the ledger."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cambist.cli.client import ExchangeClient
from cambist.cli.commands_keys import AnyOpt, TiersOpt, set_privacy
from cambist.cli.common import console, emit_json, fail, new_token, parse_money, run_client
from cambist.cli.render import money, table

__all__ = ["register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    @app.command()
    def models(ctx: typer.Context,
               catalog: Annotated[bool, typer.Option(help="The deployable catalog.")] = False,
               as_json: JsonOpt = False) -> None:
        """Models you can call now (or, with --catalog, models you can deploy)."""
        if catalog:
            data = run_client(ctx, lambda c: c.get("/v1/catalog/models"))
            if as_json:
                emit_json(data)
                return
            rows = [[m["id"], f"{m['params_b']:g}B", m["layers"], m["kv_heads"], m["precision"],
                     m["context_length"], "yes" if m["reasoning"] else "", m["cheapest_sku"],
                     money(m["cheapest_cost_per_mtok"])] for m in data["data"]]
            console.print(table("Model catalog", ["model", "params", "layers", "kv heads",
                                                  "precision", "context", "reasoning",
                                                  "cheapest SKU", "$/Mtok"], rows,
                                justify_right=("$/Mtok", "context")))
            return
        data = run_client(ctx, lambda c: c.get("/v1/models"), as_demo=True)
        if as_json:
            emit_json(data)
            return
        rows = [[m["id"], m.get("endpoints"), money(m.get("pricing", {}).get("prompt")),
                 money(m.get("pricing", {}).get("completion")), m.get("context_length")]
                for m in data["data"]]
        console.print(table("Routable models", ["model", "endpoints", "$/Mtok in",
                                                "$/Mtok out", "context"], rows,
                            justify_right=("$/Mtok in", "$/Mtok out")))

    @app.command()
    def usage(ctx: typer.Context, tenant: Annotated[str | None, typer.Option()] = None,
              limit: Annotated[int, typer.Option(min=1)] = 20,
              tier: Annotated[str | None, typer.Option(
                  help="Only requests served under this privacy tier.")] = None,
              as_json: JsonOpt = False) -> None:
        """Metered requests: tokens, price charged, compute cost, privacy tier."""
        data = run_client(ctx, lambda c: c.get("/v1/usage", tenant=tenant, limit=limit,
                                               privacy_tier=tier))
        if as_json:
            emit_json(data)
            return
        rows = [[s["model"], s["requests"], s["prompt_tokens"], s["completion_tokens"],
                 money(s["price"], 6), money(s["compute_cost"], 6)] for s in data["summary"]]
        console.print(table(f"Usage ({data['tenant'] or 'all tenants'})",
                            ["model", "requests", "prompt tok", "completion tok", "charged",
                             "compute cost"], rows,
                            justify_right=("requests", "prompt tok", "completion tok",
                                           "charged", "compute cost")))
        # .get: an exchange from before the tier was recorded omits it.
        recent = [[r["request_id"], r["model"], r["prompt_tokens"], r["completion_tokens"],
                   money(r["price"], 6), r["status"], r.get("privacy_tier", "")]
                  for r in data["data"]]
        console.print(table("Recent requests", ["request", "model", "prompt", "completion",
                                                "charged", "status", "tier"], recent,
                            justify_right=("prompt", "completion", "charged")))

    @app.command()
    def balance(ctx: typer.Context, tenant: Annotated[str | None, typer.Option()] = None,
                as_json: JsonOpt = False) -> None:
        """Tenant balances and available credit: the plan's daily allowance left,
        its monthly pool left and the prepaid balance (spent in that order)."""
        data = run_client(ctx, lambda c: c.get("/v1/balance", tenant=tenant))
        if as_json:
            emit_json(data)
            return
        rows = [[b["tenant"], b.get("plan") or "", money(b.get("allowance_left", "0"), 6),
                 money(b.get("pool_left", "0"), 6), money(b["balance"], 6),
                 money(b["available"], 6)]
                for b in data["data"]]
        console.print(table("Balances", ["tenant", "plan", "allowance left", "pool left",
                                         "balance", "available"], rows,
                            justify_right=("allowance left", "pool left", "balance",
                                           "available")))

    credits = typer.Typer(help="Prepaid credit.", no_args_is_help=True)
    app.add_typer(credits, name="credits")

    @credits.command("add")
    def credits_add(ctx: typer.Context, tenant: Annotated[str, typer.Argument()],
                    amount: Annotated[str, typer.Argument(help="Dollars, e.g. 10.00")],
                    idempotency_key: Annotated[str | None, typer.Option()] = None) -> None:
        """Add prepaid credit to a tenant (admin key)."""
        amt = parse_money(amount, "AMOUNT")
        if amt is None or amt <= 0:
            raise fail("AMOUNT must be a positive dollar amount such as 10.00")
        body = {"tenant": tenant, "amount": str(amt),
                "idempotency_key": idempotency_key or new_token()}
        r = run_client(ctx, lambda c: c.post("/v1/credits", body))
        console.print(f"{r['tenant']}: balance {money(r['balance'], 6)}")

    tenants_app = typer.Typer(help="Tenants (admin key); lists them without a subcommand.",
                              invoke_without_command=True)
    app.add_typer(tenants_app, name="tenants")

    @tenants_app.callback()
    def tenants(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Tenants of this exchange (admin key)."""
        if ctx.invoked_subcommand is not None:
            return
        data = run_client(ctx, lambda c: c.get("/v1/tenants"))
        if as_json:
            emit_json(data)
            return
        console.print(table("Tenants", ["id", "name"], [[t["id"], t["name"]]
                                                       for t in data["data"]]))

    @tenants_app.command("list")
    def tenants_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """Tenants of this exchange (admin key)."""
        tenants(ctx, as_json)

    @tenants_app.command("create")
    def tenants_create(ctx: typer.Context, name: Annotated[str, typer.Argument()],
                       idempotency_key: Annotated[str | None, typer.Option(
                           help="Repeat-safe token.")] = None,
                       as_json: JsonOpt = False) -> None:
        """Create a tenant and its first tenant-admin key (secret printed once)."""
        body = {"name": name, "idempotency_key": idempotency_key or new_token()}
        t = run_client(ctx, lambda c: c.post("/v1/tenants", body))
        if as_json:
            emit_json(t)
            return
        console.print(f"Created tenant [bold]{t['id']}[/bold] ({t['name']}) with tenant-admin "
                      f"key {t['key_id']}")
        console.print(f"secret (shown once, store it now): {t['key']}", soft_wrap=True,
                      highlight=False)

    @tenants_app.command("privacy")
    def tenants_privacy(ctx: typer.Context, tenant_id: Annotated[str, typer.Argument(
                            metavar="TENANT")],
                        tiers: TiersOpt = None, allow_any: AnyOpt = False) -> None:
        """Set the privacy tiers every key of a tenant may use."""
        set_privacy(ctx, f"/v1/tenants/{tenant_id}/privacy", "tenant", tiers, allow_any)

    prices_app = typer.Typer(help="The versioned price list.", invoke_without_command=True)
    app.add_typer(prices_app, name="prices")

    @prices_app.command("set")
    def prices_set(ctx: typer.Context, model: Annotated[str, typer.Argument()],
                   input_per_mtok: Annotated[str, typer.Option("--input", help="$ per Mtok in.")],
                   output_per_mtok: Annotated[str, typer.Option("--output",
                                                                help="$ per Mtok out.")],
                   tier: Annotated[str, typer.Option()] = "standard",
                   in_seconds: Annotated[float, typer.Option(
                       help="Take effect this many seconds from now.")] = 0.0,
                   note: Annotated[str, typer.Option()] = "") -> None:
        """Publish a new price-list version changing one model's price (admin key)."""
        pin = parse_money(input_per_mtok, "--input")
        pout = parse_money(output_per_mtok, "--output")

        async def go(c: ExchangeClient) -> Any:
            body: dict = {"model": model, "tier": tier, "input_per_mtok": str(pin),
                          "output_per_mtok": str(pout), "note": note}
            if in_seconds > 0:
                body["effective_in_s"] = in_seconds
            return await c.post("/v1/prices", body)

        r = run_client(ctx, go)
        console.print(f"price list version {r['version']} published")

    @prices_app.callback()
    def prices(ctx: typer.Context, as_json: JsonOpt = False) -> None:
        """The price list in force ($ per million tokens)."""
        if ctx.invoked_subcommand is not None:
            return
        data = run_client(ctx, lambda c: c.get("/v1/prices"))
        if as_json:
            emit_json(data)
            return
        rows = [[p["model"], p["tier"], money(p["input_per_mtok"]), money(p["output_per_mtok"]),
                 p["version"]] for p in data["data"]]
        console.print(table("Price list", ["model", "tier", "$/Mtok in", "$/Mtok out",
                                           "version"], rows,
                            justify_right=("$/Mtok in", "$/Mtok out")))

    @app.command()
    def events(ctx: typer.Context,
               kind: Annotated[str | None, typer.Option(help="Kind prefix, e.g. lease.")] = None,
               limit: Annotated[int, typer.Option(min=1)] = 30, as_json: JsonOpt = False) -> None:
        """The event log: offer changes, lease transitions, deploy steps, routing (admin)."""
        data = run_client(ctx, lambda c: c.get("/v1/events", kind=kind, limit=limit))
        if as_json:
            emit_json(data)
            return
        rows = [[f"{e['ts']:.3f}", e["kind"], e["subject"],
                 ", ".join(f"{k}={v}" for k, v in e["data"].items())[:100]]
                for e in data["data"]]
        console.print(table("Events", ["ts", "kind", "subject", "data"], rows))

    ledger = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)
    app.add_typer(ledger, name="ledger")

    @ledger.command("check")
    def ledger_check(ctx: typer.Context) -> None:
        """Verify every ledger invariant; exits non-zero on any violation."""
        r = run_client(ctx, lambda c: c.get("/v1/ledger/check"))
        if r["ok"]:
            console.print("ledger OK: every entry balances and matches its usage record")
            return
        for v in r["violations"]:
            console.print(f"[red]violation:[/red] {v}")
        raise typer.Exit(1)
