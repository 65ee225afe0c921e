"""``cambist up`` and ``cambist gateway``: the two commands that serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cambist.cli.common import fail

__all__ = ["register"]


def _settings(home: Path | None, overrides: dict[str, Any]) -> Any:
    from cambist.config import ConfigError, load_settings

    try:
        return load_settings(home=home, overrides=overrides)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def _serve(settings: Any, role: str, workers: int = 1) -> None:
    from cambist.app.run import PortInUse, run
    from cambist.app.workers import supervise
    from cambist.store.db import DatabaseUnavailable

    try:
        if workers > 1:
            code = supervise(settings, role, workers)  # type: ignore[arg-type]
            if code:
                raise typer.Exit(code)
        else:
            run(settings, role)  # type: ignore[arg-type]
    except (PortInUse, DatabaseUnavailable) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
        host: Annotated[str | None, typer.Option(help="Address (default 127.0.0.1).")] = None,
        home: Annotated[Path | None, typer.Option(help="Data directory (default "
                                                  "$CAMBIST_HOME or ~/.cambist).")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed of the simulated market.")] = None,
        engine_time_scale: Annotated[float | None, typer.Option(
            help="Reference engines run the simulated GPU at this multiple of real time "
                 "(0.1 = 10x faster).")] = None,
    ) -> None:
        """Start the whole exchange in one process: market, deploy, gateway, dashboard."""
        if port is not None and not 0 <= port <= 65535:
            raise typer.BadParameter("--port takes 0..65535")
        s = _settings(home, {"port": port, "host": host, "seed": seed,
                             "engine_time_scale": engine_time_scale})
        _serve(s, "up")

    @app.command()
    def gateway(
        port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
        host: Annotated[str | None, typer.Option()] = None,
        home: Annotated[Path | None, typer.Option(help="Data directory of the exchange.")]
        = None,
        workers: Annotated[int, typer.Option(
            help="Gateway processes sharing the port (set CAMBIST_REDIS_URL so they share "
                 "rate limits and credit).")] = 1,
    ) -> None:
        """Run the model API alone against the exchange's store."""
        if not 1 <= workers <= 256:
            raise typer.BadParameter("--workers takes 1..256")
        s = _settings(home, {"port": port, "host": host})
        if not s.connection_file.exists() and not s.database_url:
            raise fail(f"no exchange in {s.home}: run 'cambist up' there first")
        _serve(s, "gateway", workers)
