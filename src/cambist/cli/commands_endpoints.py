"""``cambist endpoints``: list, register, remove and probe upstream endpoints."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cambist.cli.common import console, emit_json, parse_money, run_client
from cambist.cli.render import money, table

__all__ = ["register"]


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _price(e: dict[str, Any]) -> str:
    if e.get("kind") in ("external", "local"):
        return f"{money(e.get('input_price_per_mtok'))} / {money(e.get('output_price_per_mtok'))}"
    return f"{money(e.get('cost_per_hour'))}/h"


def _attested(a: dict[str, Any] | None) -> str:
    if a is None:
        return "-"
    if a.get("confidential"):
        return "verified"
    return a["status"] + (f" ({a['reason']})" if a.get("reason") else "")


def _list(ctx: typer.Context, as_json: bool) -> None:
    data = run_client(ctx, lambda c: c.get("/v1/endpoints"))
    if as_json:
        emit_json(data)
        return
    rows = [[e["id"], e.get("kind", "deployment"), e["model"], e["supplier"], e["url"],
             "yes" if e["healthy"] else "no", _price(e), e.get("quantization"),
             _attested(e.get("attestation")), e["owner"] or "platform"] for e in data["data"]]
    console.print(table("Endpoints", ["id", "kind", "model", "supplier", "url", "healthy",
                                      "cost ($/Mtok in / out, or $/h)", "quant", "attested",
                                      "owner"], rows))


def _default(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Without a subcommand: list the endpoints."""
    if ctx.invoked_subcommand is None:
        _list(ctx, as_json)


def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Endpoints of every kind that this key may see."""
    _list(ctx, as_json)


def add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Base URL, e.g. http://127.0.0.1:8000/v1.")],
    model: Annotated[str, typer.Option(help="The model name the server serves.")],
    price_in: Annotated[str, typer.Option(help="$ per million input tokens it costs.")],
    price_out: Annotated[str, typer.Option(help="$ per million output tokens it costs.")],
    api_key_env: Annotated[str | None, typer.Option(
        help="Name of the environment variable (of the exchange) holding its API key.")]
    = None,
    quantization: Annotated[str | None, typer.Option(help="e.g. fp8, int4, q4_k_m.")]
    = None,
    supplier: Annotated[str, typer.Option(help="Name to route by (provider.order).")]
    = "local",
    context_length: Annotated[int, typer.Option(min=0)] = 0,
    attestation: Annotated[str | None, typer.Option(
        help="Evidence format the server attests with (cambist-selfsigned-v1 for the "
             "reference engine's --attest-key mode): it joins the confidential tier once "
             "verified.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama,
    LM Studio) as a local endpoint (admin key)."""
    body = {"url": url, "model": model,
            "input_price_per_mtok": str(parse_money(price_in, "--price-in")),
            "output_price_per_mtok": str(parse_money(price_out, "--price-out")),
            "api_key_env": api_key_env, "quantization": quantization,
            "supplier": supplier, "context_length": context_length,
            "attestation": attestation}
    data = run_client(ctx, lambda c: c.post("/v1/endpoints", body))
    if as_json:
        emit_json(data)
        return
    console.print(f"registered [bold]{data['id']}[/bold]: {data['model']} at {data['url']}")


def remove(ctx: typer.Context, endpoint_id: Annotated[str, typer.Argument(
        metavar="ID")]) -> None:
    """Take an external or local endpoint out of routing (admin key)."""
    run_client(ctx, lambda c: c.delete(f"/v1/endpoints/{endpoint_id}"))
    console.print(f"removed {endpoint_id}")


def probe(ctx: typer.Context, endpoint_id: Annotated[str, typer.Argument(metavar="ID")],
          as_json: JsonOpt = False) -> None:
    """Probe an endpoint: latency, the models it serves, /health (admin key)."""
    data = run_client(ctx, lambda c: c.post(f"/v1/endpoints/{endpoint_id}/probe"))
    if as_json:
        emit_json(data)
        return
    state = "[green]ok[/green]" if data["ok"] else f"[red]failed[/red] ({data['error']})"
    latency = f"{data['latency_ms']} ms" if data["latency_ms"] is not None else "-"
    console.print(f"{endpoint_id}: {state}, /models in {latency}, "
                  f"/health {data['health_status'] or '-'}")
    if data["models"]:
        console.print("serves: " + ", ".join(data["models"]))


def attest(
    ctx: typer.Context,
    endpoint_id: Annotated[str, typer.Argument(metavar="ID")],
    fmt: Annotated[str, typer.Option("--format", help="Evidence format.")]
    = "cambist-selfsigned-v1",
    revoke: Annotated[bool, typer.Option("--revoke", help="Take it out of the "
                                         "confidential tier now instead.")] = False,
    reason: Annotated[str, typer.Option(help="Why (with --revoke).")]
    = "revoked by an operator",
) -> None:
    """Declare that an endpoint attests (it joins the confidential tier once
    verified), or revoke its attestation (admin key)."""
    if revoke:
        data = run_client(ctx, lambda c: c.post(
            f"/v1/endpoints/{endpoint_id}/attestation/revoke", {"reason": reason}))
    else:
        data = run_client(ctx, lambda c: c.post(
            f"/v1/endpoints/{endpoint_id}/attestation", {"format": fmt}))
    console.print(f"{endpoint_id}: attestation {_attested(data['attestation'])}")


def register(app: typer.Typer) -> None:
    """Add the ``endpoints`` command group to ``app``."""
    endpoints = typer.Typer(help="Upstreams the gateway routes to: own deployments, external "
                                 "providers, local OpenAI-compatible servers.",
                            invoke_without_command=True)
    endpoints.callback()(_default)
    endpoints.command("list")(list_)
    endpoints.command()(add)
    endpoints.command()(remove)
    endpoints.command()(probe)
    endpoints.command()(attest)
    app.add_typer(endpoints, name="endpoints")
