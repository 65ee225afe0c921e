"""Shared pieces of the CLI commands."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import typer
from rich.console import Console

from cambist.cli.client import CliError, ExchangeClient, resolve_connection

__all__ = ["console", "emit_json", "err_console", "fail", "new_token", "parse_money",
           "run_client"]

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a one-sentence error and return the exit to raise."""
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def run_client(ctx: typer.Context, fn: Callable[[ExchangeClient], Awaitable[T]], *,
               as_demo: bool = False) -> T:
    """Resolve the connection, run ``fn`` with a client, report errors as one sentence."""
    obj = ctx.obj or {}
    try:
        conn = resolve_connection(obj.get("url"), obj.get("key"), as_demo=as_demo)

        async def go() -> T:
            async with ExchangeClient(conn) as client:
                return await fn(client)

        return asyncio.run(go())
    except CliError as exc:
        raise fail(str(exc)) from None


def parse_money(value: str | None, option: str) -> Decimal | None:
    """A non-negative dollar amount from the command line, or a clear error."""
    if value is None:
        return None
    try:
        d = Decimal(value.lstrip("$"))
    except InvalidOperation:
        raise typer.BadParameter(f"{option} takes a dollar amount such as 2.50") from None
    if not d.is_finite() or d < 0:
        raise typer.BadParameter(f"{option} must be a non-negative amount")
    return d


def new_token() -> str:
    """A fresh client token for idempotent operations."""
    return uuid.uuid4().hex


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
