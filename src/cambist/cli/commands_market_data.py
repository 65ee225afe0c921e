"""``cambist market``: the price feed's history from the command line.

Without options, one row per SKU: best and median price now, 24 h change,
available GPUs and a sparkline of the last 24 hourly closes. With
``--gpu X --history 7d [--interval 1h]``, that SKU's bars.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import typer

from cambist.cli.common import console, emit_json, fail, run_client
from cambist.cli.render import money, table

__all__ = ["parse_duration", "register", "sparkline"]

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_BLOCKS = "▁▂▃▄▅▆▇█"
_INTERVALS = ("1m", "1h", "1d")
_MAX_BARS = 20_000


def parse_duration(text: str) -> int | None:
    """Seconds of ``90m``, ``24h``, ``7d`` or ``2w``; ``None`` if not such a duration."""
    m = _DURATION.match(text)
    if m is None or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def sparkline(values: Sequence[Decimal | float | None]) -> str:
    """One block character per value, scaled from the lowest to the highest; blank
    where a value is missing."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return " " * len(values)
    lo, hi = min(known), max(known)
    span = hi - lo
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            i = 0 if span == 0 else round((float(v) - lo) / span * (len(_BLOCKS) - 1))
            out.append(_BLOCKS[i])
    return "".join(out)


def _auto_interval(seconds: int) -> str:
    if seconds <= 6 * 3600:
        return "1m"
    return "1h" if seconds <= 14 * 86400 else "1d"


def _when(t: float, interval: str) -> str:
    fmt = "%Y-%m-%d" if interval == "1d" else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)


def _pct(v: str | None) -> str:
    if v is None:
        return "-"
    return f"{Decimal(v):+.2f}%"


def _summary_table(data: dict) -> Any:
    rows = []
    for s in data["data"]:
        closes = [None if c["close"] is None else Decimal(c["close"])
                  for c in s["hourly_closes"]]
        rows.append([s["sku"], money(s["best_price"]), money(s["median_price"]),
                     _pct(s["change_24h_pct"]), s["available_gpus"], sparkline(closes)])
    as_of = data.get("as_of")
    title = "Market" + (f" as of {_when(as_of, '1m')} UTC" if as_of else " (no history yet)")
    return table(title, ["sku", "best $/GPU-h", "median $/GPU-h", "24h", "avail GPUs",
                         "last 24h (hourly)"], rows,
                 justify_right=("best $/GPU-h", "median $/GPU-h", "24h", "avail GPUs"))


def _bars_table(data: dict) -> Any:
    rows = []
    for b in data["data"]:
        where = "overall" if b["region"] is None else f"{b['supplier']} {b['region']}"
        rows.append([_when(b["start"], data["interval"]), where, money(b["open"]),
                     money(b["high"]), money(b["low"]), money(b["close"]),
                     b["available_gpus"], f"{b['volume_gpu_hours']:.2f}", b["trades"]])
    title = f"{data['gpu']} {data['interval']} bars ($/GPU-h), times UTC"
    return table(title, ["start", "market", "open", "high", "low", "close", "avail GPUs",
                         "GPU-h leased", "trades"], rows,
                 justify_right=("open", "high", "low", "close", "avail GPUs", "GPU-h leased",
                                "trades"))


def register(app: typer.Typer) -> None:
    """Add ``cambist market`` to ``app``."""

    @app.command()
    def market(
        ctx: typer.Context,
        gpu: Annotated[str | None, typer.Option(help="SKU, e.g. H100-80GB-SXM.")] = None,
        history: Annotated[str | None, typer.Option(
            help="How far back: 90m, 24h, 7d, 30d (default 24h with --gpu).")] = None,
        interval: Annotated[str | None, typer.Option(
            help="Bar size: 1m, 1h or 1d (default: from --history).")] = None,
        supplier: Annotated[str | None, typer.Option(help="One supplier's markets.")] = None,
        region: Annotated[str | None, typer.Option(help="One region's markets.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Prices now per SKU with 24h sparklines, or one SKU's bars (--gpu, --history)."""
        if gpu is None:
            if history is not None or interval is not None:
                raise fail("--history and --interval need a SKU: add --gpu, e.g. "
                           "--gpu H100-80GB-SXM")
            data = run_client(ctx, lambda c: c.get("/v1/market/summary"))
            emit_json(data) if as_json else console.print(_summary_table(data))
            return
        span = parse_duration(history or "24h")
        if span is None:
            raise fail(f"--history takes a duration such as 90m, 24h, 7d or 30d, not "
                       f"{history!r}")
        iv = interval or _auto_interval(span)
        if iv not in _INTERVALS:
            raise fail(f"--interval takes 1m, 1h or 1d, not {interval!r}")
        if span / _UNITS[iv[-1]] > _MAX_BARS:
            raise fail(f"{history} of {iv} bars is too many; use a coarser --interval")
        since = time.time() - span  # the CLI's clock: an exchange runs on the wall clock live
        data = run_client(ctx, lambda c: c.get(
            "/v1/market/prices", gpu=gpu, interval=iv, since=since, supplier=supplier,
            region=region))
        emit_json(data) if as_json else console.print(_bars_table(data))
