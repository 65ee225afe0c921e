"""Commands for the market, leases and deployments."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cambist.cli.client import CliError, ExchangeClient
from cambist.cli.common import console, emit_json, new_token, parse_money, run_client
from cambist.cli.render import money, table

__all__ = ["register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _offers_table(data: dict, with_model: bool) -> Any:
    cols = ["supplier", "sku", "gpus", "VRAM GiB", "region", "$/GPU-h", "spot", "avail"]
    if with_model:
        cols.append("$/Mtok")
    rows = []
    for o in data["data"]:
        row = [o["supplier"], o["sku"] or f"{o['gpu_name']} (unmapped)", o["gpu_count"],
               f"{o['vram_gib']:g}", o["region"], money(o["price_per_gpu_hour"]),
               "yes" if o["spot"] else "", o["available"]]
        if with_model:
            row.append(money(o.get("cost_per_mtok")) if o.get("cost_per_mtok")
                       else "n/a")
        rows.append(row)
    title = (f"{data['total']} offers from {len(data['suppliers'])} suppliers"
             + (f" (showing {len(rows)})" if len(rows) < data["total"] else ""))
    return table(title, cols, rows, justify_right=("$/GPU-h", "$/Mtok", "gpus", "avail"))


def _leases_table(data: dict) -> Any:
    rows = [[x["id"], x["supplier"], x["sku"] or x["gpu_name"], x["gpu_count"], x["region"],
             x["state"], money(x["price_per_hour"]), money(x["cost_so_far"], 6),
             x["owner"] or "platform"] for x in data["data"]]
    return table("Leases", ["lease", "supplier", "sku", "gpus", "region", "state", "$/h",
                            "cost so far", "owner"], rows,
                 justify_right=("$/h", "cost so far", "gpus"))


def _deployments_table(data: dict) -> Any:
    rows = []
    for d in data["data"]:
        for r in d["replica_details"] or [{}]:
            rows.append([d["name"], d["model"], f"{d['healthy_replicas']}/{d['replicas']}",
                         d["state"], r.get("state"), r.get("supplier"), r.get("sku"),
                         money(r.get("price_per_hour")), money(r.get("cost_per_mtok"))])
    return table("Deployments", ["name", "model", "ready", "state", "replica", "supplier",
                                 "sku", "$/h", "$/Mtok"], rows, justify_right=("$/h", "$/Mtok"))


def _event_text(e: dict) -> tuple[str, str]:
    """What happened, and the expected saving for moves."""
    d = e["data"]
    if e["kind"] == "deployment.moved":
        what = f"move {d.get('phase')}"
        if d.get("add") or d.get("drop"):
            what += f": +{','.join(d.get('add', []))} -{','.join(d.get('drop', []))}"
        return what, money(d["expected_saving"]) if d.get("expected_saving") else ""
    if e["kind"] == "deployment.scaled":
        return f"scaled {d.get('from')} -> {d.get('to')}: {d.get('why', '')}", ""
    extra = d.get("reason") or d.get("offer") or ""
    return f"{d.get('step')} {extra}".strip(), ""


def _events_table(data: dict) -> Any:
    rows = []
    for e in data["data"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["ts"]))
        what, saving = _event_text(e)
        rows.append([when, e["deployment"], e["kind"], what, saving])
    return table("Deployment events", ["time (UTC)", "deployment", "kind", "what",
                                       "expected saving"], rows,
                 justify_right=("expected saving",))


def register(app: typer.Typer) -> None:
    @app.command()
    def offers(
        ctx: typer.Context,
        gpu: Annotated[str | None, typer.Option(help="GPU family or SKU, e.g. H100.")] = None,
        count: Annotated[int | None, typer.Option(min=1, help="GPUs per unit.")] = None,
        min_vram: Annotated[float | None, typer.Option(min=0, help="GiB per GPU.")] = None,
        region: Annotated[str | None, typer.Option(help="Region prefix.")] = None,
        max_price: Annotated[str | None, typer.Option(help="Max $ per GPU-hour.")] = None,
        sort: Annotated[str, typer.Option(help="price or price-per-token.")] = "price",
        model: Annotated[str | None, typer.Option(help="Quote $/Mtok for this model.")] = None,
        supplier: Annotated[str | None, typer.Option()] = None,
        limit: Annotated[int, typer.Option(min=1)] = 40,
        as_json: JsonOpt = False,
    ) -> None:
        """Offers from every supplier in one normalized table."""
        if sort not in ("price", "price-per-token"):
            raise typer.BadParameter("--sort takes 'price' or 'price-per-token'")
        mp = parse_money(max_price, "--max-price")
        data = run_client(ctx, lambda c: c.get(
            "/v1/market/offers", gpu=gpu, count=count, min_vram=min_vram, region=region,
            max_price=str(mp) if mp is not None else None, sort=sort, model=model,
            supplier=supplier, limit=limit))
        emit_json(data) if as_json else console.print(_offers_table(data, model is not None))

    @app.command()
    def rent(
        ctx: typer.Context,
        gpu: Annotated[str | None, typer.Option(help="GPU family or SKU.")] = None,
        count: Annotated[int, typer.Option(min=1, help="GPUs in the unit (default 1).")] = 1,
        region: Annotated[str | None, typer.Option()] = None,
        max_price: Annotated[str | None, typer.Option(help="Max $ per GPU-hour.")] = None,
        offer: Annotated[str | None, typer.Option(help="Rent this exact offer id.")] = None,
        tenant: Annotated[str | None, typer.Option(help="Tenant to charge (admin keys).")]
        = None,
        spot: Annotated[bool | None, typer.Option("--spot/--no-spot",
                                                  help="Only spot, or only on-demand.")] = None,
        token: Annotated[str | None, typer.Option(help="Client token (idempotency).")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Rent the cheapest offer that fits (one GPU unless --count)."""
        if gpu is None and offer is None:
            raise typer.BadParameter("say what to rent: --gpu H100 (or --offer ID)")
        mp = parse_money(max_price, "--max-price")
        body = {"gpu": gpu, "count": None if offer else count, "region": region,
                "max_price": str(mp) if mp is not None else None, "offer_id": offer,
                "spot": spot,
                "tenant": tenant, "client_token": token or new_token()}
        lease = run_client(ctx, lambda c: c.post("/v1/leases", body))
        if as_json:
            emit_json(lease)
            return
        console.print(f"Leased [bold]{lease['id']}[/bold]: {lease['gpu_count']}x "
                      f"{lease['sku'] or lease['gpu_name']} at {lease['supplier']} "
                      f"{lease['region']}, {money(lease['price_per_hour'])}/h ({lease['state']})")

    @app.command()
    def leases(
        ctx: typer.Context,
        active: Annotated[bool, typer.Option(help="Only leases not yet ended.")] = False,
        watch: Annotated[bool, typer.Option(help="Refresh every second (Ctrl-C stops).")]
        = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Leases with state and cost so far."""
        if not watch:
            data = run_client(ctx, lambda c: c.get("/v1/leases", active=active))
            emit_json(data) if as_json else console.print(_leases_table(data))
            return

        async def live(c: ExchangeClient) -> None:
            with Live(console=console, refresh_per_second=2) as view:
                while True:
                    view.update(_leases_table(await c.get("/v1/leases", active=active)))
                    await asyncio.sleep(1.0)

        with contextlib.suppress(KeyboardInterrupt):
            run_client(ctx, live)

    @app.command()
    def release(ctx: typer.Context, lease: Annotated[str, typer.Argument(help="Lease id.")]) \
            -> None:
        """End a lease; its final cost is posted to the ledger."""
        x = run_client(ctx, lambda c: c.post(f"/v1/leases/{lease}/release"))
        console.print(f"Released {x['id']}: cost {money(x['cost_so_far'], 6)}")

    @app.command()
    def deploy(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Catalog model, see 'cambist models "
                                                  "--catalog'.")],
        replicas: Annotated[int, typer.Option(min=1, max=64)] = 1,
        max_price_per_mtok: Annotated[str | None, typer.Option(help="Cap in $/Mtok.")] = None,
        name: Annotated[str | None, typer.Option()] = None,
        tenant: Annotated[str | None, typer.Option(help="Dedicated to this tenant.")] = None,
        wait: Annotated[bool, typer.Option(help="Wait until every replica is healthy.")]
        = True,
        timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 300.0,
        token: Annotated[str | None, typer.Option(help="Client token (idempotency).")] = None,
        tokens_per_second: Annotated[float | None, typer.Option(
            "--tokens-per-second", min=1, help="Serve this output rate (sizes replicas).")]
        = None,
        ttft_ms: Annotated[float | None, typer.Option(min=1, help="TTFT SLO in ms.")] = None,
        region: Annotated[list[str] | None, typer.Option(
            help="Allowed region prefix (repeat for several).")] = None,
        max_share: Annotated[float, typer.Option(
            min=0.01, max=1.0, help="Most of the replicas on one supplier (0.5: two).")]
        = 1.0,
        spot: Annotated[bool, typer.Option("--spot/--no-spot",
                                           help="Allow spot offers (default yes).")] = True,
        max_replicas: Annotated[int | None, typer.Option(
            min=1, max=64, help="Autoscale between --replicas and this.")] = None,
    ) -> None:
        """Deploy a model where the placement solver finds it cheapest (by $/Mtok, under
        region, TTFT, spot and supplier-share constraints) and register its endpoints."""
        cap = parse_money(max_price_per_mtok, "--max-price-per-mtok")
        if max_replicas is not None and max_replicas < replicas:
            raise typer.BadParameter("--max-replicas must be at least --replicas")
        body = {"model": model, "replicas": replicas, "name": name, "tenant": tenant,
                "max_price_per_mtok": str(cap) if cap is not None else None,
                "client_token": token or new_token(), "tokens_per_s": tokens_per_second,
                "ttft_ms": ttft_ms, "regions": region or [], "max_supplier_share": max_share,
                "spot": spot, "min_replicas": replicas, "max_replicas": max_replicas}

        async def go(c: ExchangeClient) -> dict:
            d = await c.post("/v1/deployments", body)
            if wait:
                d = await _follow(c, d["name"], timeout)
            return d

        d = run_client(ctx, go)
        console.print(_deployments_table({"data": [d]}))

    @app.command()
    def deployments(ctx: typer.Context,
                    all_: Annotated[bool, typer.Option("--all", help="Include stopped.")] = False,
                    events: Annotated[bool, typer.Option(
                        "--events", help="Show moves, scaling and steps instead.")] = False,
                    name: Annotated[str | None, typer.Option(
                        help="Only this deployment (with --events).")] = None,
                    as_json: JsonOpt = False) -> None:
        """Deployments with replicas, supplier, SKU, state, $/h and $/Mtok."""
        if not events:
            data = run_client(ctx, lambda c: c.get("/v1/deployments", all=all_))
            emit_json(data) if as_json else console.print(_deployments_table(data))
            return

        async def fetch(c: ExchangeClient) -> dict:
            names = [name] if name else [d["name"] for d in (
                await c.get("/v1/deployments", all=all_))["data"]]
            rows = []
            for n in names:
                for e in (await c.get(f"/v1/deployments/{n}/events"))["data"]:
                    rows.append({"deployment": n, **e})
            rows.sort(key=lambda e: e["ts"])
            return {"object": "list", "data": rows}

        data = run_client(ctx, fetch)
        emit_json(data) if as_json else console.print(_events_table(data))

    @app.command()
    def undeploy(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
        """Drain a deployment and release its leases."""
        d = run_client(ctx, lambda c: c.delete(f"/v1/deployments/{name}"))
        console.print(f"Undeploying {d['name']}: {d['state']}")


async def _follow(c: ExchangeClient, name: str, timeout: float) -> dict:
    """Show each replica's steps until all are healthy (or fail loudly)."""
    deadline = time.monotonic() + timeout
    tasks: dict[str, Any] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        while True:
            d = await c.get(f"/v1/deployments/{name}")
            for r in d["replica_details"]:
                text = f"{r['id']}: {r['state']} {r['detail']}"
                if r["id"] not in tasks:
                    tasks[r["id"]] = progress.add_task(text, total=1)
                done = r["state"] in ("healthy", "failed", "stopped")
                progress.update(tasks[r["id"]], description=text, completed=1 if done else 0)
            if d["state"] == "ready":
                return d
            if time.monotonic() > deadline:
                raise CliError(f"deployment {name} not ready after {timeout:.0f}s (state "
                               f"{d['state']}); see 'cambist deployments'")
            await asyncio.sleep(0.5)
