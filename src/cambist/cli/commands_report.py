"""``cambist report``: utilization, margins and spread over a recent window.

:mod:`cambist.analytics` (and the database layer under it) is imported when the
command runs, so that it does not slow down every other command."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from cambist.cli.client import ExchangeClient
from cambist.cli.common import console, emit_json, fail, run_client
from cambist.cli.render import money, table
from cambist.domain.errors import InvalidRequest

__all__ = ["register"]

def _pct(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f}%"


def _tokens(r: dict) -> str:
    out = f"{r['visible_tokens']:,}"
    return f"{out} (+{r['reasoning_tokens']:,} r)" if r.get("reasoning_tokens") else out


# (header, how to render a row); a column is shown when its field is present
# (tenant keys get no cost or margin fields).
_MARGIN_COLS: tuple[tuple[str, str, Any], ...] = (
    ("requests", "requests", lambda r: r["requests"]),
    ("prompt tok", "prompt_tokens", lambda r: f"{r['prompt_tokens']:,}"),
    ("output tok", "visible_tokens", _tokens),
    ("revenue", "revenue", lambda r: money(r["revenue"], 6)),
    ("compute cost", "compute_cost", lambda r: money(r["compute_cost"], 6)),
    ("spread", "spread", lambda r: money(r["spread"], 6)),
    ("compute margin", "compute_margin", lambda r: _pct(r["compute_margin"])),
    ("effective margin", "effective_margin", lambda r: _pct(r["effective_margin"])),
    ("$/Mtok out", "cost_per_mtok", lambda r: money(r["cost_per_mtok"])),
    ("$/query", "cost_per_query", lambda r: money(r["cost_per_query"], 6)),
)


def _print(summary: dict, margins: dict, deployments: dict, by: str, since: str) -> None:
    scope = summary["tenant"] or "platform"
    rows = list(margins["data"])
    sample = rows[0] if rows else margins["total"]
    shown = [c for c in _MARGIN_COLS if c[1] in sample]
    body = [[r["key"], *(fn(r) for _, _, fn in shown)] for r in rows]
    body.append(["total", *(fn(margins["total"]) for _, _, fn in shown)])
    cols = [by, *(h for h, _, _ in shown)]
    console.print(table(f"Margins by {by} ({scope}, last {since})", cols, body,
                        justify_right=set(cols[1:])))
    platform = summary.get("platform")
    if platform is not None:
        console.print(f"platform utilization {_pct(platform['utilization'])}; lease cost "
                      f"{money(platform['lease_cost'], 6)}, idle {money(platform['idle_cost'], 6)}")
    util = [[d["key"], d["busy_tokens"], f"{d['capacity_tokens']:,.0f}", _pct(d["utilization"])]
            for d in deployments["data"]]
    console.print(table("Utilization by deployment", ["deployment", "busy tok", "capacity tok",
                                                      "utilization"], util,
                        justify_right=("busy tok", "capacity tok", "utilization")))
    tenants = [[t["tenant_id"], t["tokens"], f"{t['mean_tok_s']:.3f}", f"{t['peak_tok_s']:.3f}",
                _pct(t["dedicated_utilization"])] for t in summary["tenants"]]
    console.print(table("Tenants as if on dedicated GPUs sized for their own peak",
                        ["tenant", "tokens", "mean tok/s", "peak tok/s (5 min)",
                         "dedicated utilization"], tenants,
                        justify_right=("tokens", "mean tok/s", "peak tok/s (5 min)",
                                       "dedicated utilization")))


def register(app: typer.Typer) -> None:
    @app.command()
    def report(ctx: typer.Context,
               since: Annotated[str, typer.Option(help="Window back from now: 90m, 24h, 7d.")]
               = "24h",
               by: Annotated[str, typer.Option(help="Group margins by model, tenant, "
                                               "supplier or endpoint.")] = "model",
               tenant: Annotated[str | None, typer.Option(help="One tenant (admin key).")]
               = None,
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) \
            -> None:
        """Utilization, margins, spread and cost per token/query over a window."""
        from cambist.analytics.margins import GROUPINGS
        from cambist.analytics.window import parse_duration

        try:
            parse_duration(since)
        except InvalidRequest:
            raise fail(f"--since takes a duration such as 90m, 24h or 7d, not {since!r}") \
                from None
        if by not in GROUPINGS:
            raise fail(f"--by must be one of {', '.join(GROUPINGS)}, not {by!r}")

        async def go(c: ExchangeClient) -> tuple[Any, Any, Any]:
            params = {"since": since, "tenant": tenant}
            s, m, d = await asyncio.gather(
                c.get("/v1/analytics/summary", **params),
                c.get("/v1/analytics/margins", by=by, **params),
                c.get("/v1/analytics/utilization", by="deployment", **params))
            return s, m, d

        s, m, d = run_client(ctx, go)
        if as_json:
            emit_json({"summary": s, "margins": m, "utilization": d})
            return
        _print(s, m, d, by, since)
