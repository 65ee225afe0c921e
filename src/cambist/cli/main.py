"""The ``cambist`` command line."""

from __future__ import annotations

from typing import Annotated

import typer

from cambist.cli import (
    commands_db,
    commands_endpoints,
    commands_keys,
    commands_market,
    commands_market_data,
    commands_money,
    commands_quote,
    commands_report,
    commands_serve,
    commands_sim,
)

__all__ = ["app", "main"]

app = typer.Typer(
    name="cambist", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Cambist: the exchange and router for inference compute.",
)


@app.callback()
def _globals(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Exchange base URL (default: "
                                            "$CAMBIST_HOME/connection.json).")] = None,
    key: Annotated[str | None, typer.Option(help="API key (default: the admin key in "
                                            "connection.json).")] = None,
) -> None:
    ctx.obj = {"url": url, "key": key}


commands_serve.register(app)
commands_market.register(app)
commands_money.register(app)
commands_market_data.register(app)
commands_endpoints.register(app)
commands_keys.register(app)
commands_quote.register(app)
commands_db.register(app)
commands_report.register(app)
commands_sim.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
