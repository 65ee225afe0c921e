"""``cambist quote``: the cheapest ways to serve a model now."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cambist.cli.common import console, emit_json, run_client
from cambist.cli.render import money, table

__all__ = ["register"]


def _quote_table(data: dict) -> Any:
    demand = data.get("tokens_per_second")
    rows = []
    for q in data["data"]:
        head = "-" if q["headroom"] is None else f"{q['headroom'] * 100:.0f}%"
        rows.append([q["sku"], q["gpu_count"], q["supplier"], q["region"], q["replicas"],
                     money(q["cost_per_hour"]), money(q["cost_per_mtok"]),
                     f"{q['tokens_per_s_per_replica']:,.0f}", f"{q['ttft_ms']:,.0f}", head])
    what = f" at {demand:,.0f} tok/s" if demand else ""
    title = (f"Cheapest ways to serve {data['model']}{what} "
             f"({len(rows)} of {data['total']} options)")
    return table(title, ["sku", "gpus", "supplier", "region", "replicas", "$/h", "$/Mtok",
                         "tok/s each", "TTFT ms", "headroom"], rows,
                 justify_right=("gpus", "replicas", "$/h", "$/Mtok", "tok/s each", "TTFT ms",
                                "headroom"))


def register(app: typer.Typer) -> None:
    @app.command()
    def quote(
        ctx: typer.Context,
        model: Annotated[str, typer.Argument(help="Catalog model, see 'cambist models "
                                                  "--catalog'.")],
        tokens_per_second: Annotated[float | None, typer.Option(
            "--tokens-per-second", min=0.001, help="Sustained output tokens/s to serve.")]
        = None,
        ttft_ms: Annotated[float | None, typer.Option(
            "--ttft-ms", min=0.001, help="Time-to-first-token SLO (1,000-token prompt).")]
        = None,
        region: Annotated[str | None, typer.Option(help="Region prefix, e.g. us or eu.")]
        = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 15,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """The cheapest ways to serve a model now: SKU, supplier, replicas, $/h, $/Mtok."""
        data = run_client(ctx, lambda c: c.get(
            "/v1/market/quote", model=model, tokens_per_second=tokens_per_second,
            ttft_ms=ttft_ms, region=region, limit=limit))
        emit_json(data) if as_json else console.print(_quote_table(data))
