"""``cambist db``: the database schema, migrated explicitly.

``cambist up`` and ``cambist gateway`` migrate at start as well; ``db
upgrade`` lets an operator migrate a shared PostgreSQL database once, before
rolling out processes (``CAMBIST_DATABASE_URL`` or ``--database-url``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cambist.cli.common import console, fail

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to ``app``."""
    db = typer.Typer(help="The database schema (SQLite or PostgreSQL).", no_args_is_help=True)
    app.add_typer(db, name="db")

    @db.command("upgrade")
    def upgrade(
        home: Annotated[Path | None, typer.Option(help="Data directory (default "
                                                  "$CAMBIST_HOME or ~/.cambist).")] = None,
        database_url: Annotated[str | None, typer.Option(
            help="Database URL (default $CAMBIST_DATABASE_URL, else SQLite in the home).")]
        = None,
    ) -> None:
        """Migrate the database to this version's schema (a no-op when current)."""
        from cambist.config import ConfigError, load_settings
        from cambist.store.db import (
            DatabaseUnavailable,
            current_revision,
            head_revision,
            migrate,
            redacted_url,
        )

        try:
            s = load_settings(home=home, overrides={"database_url": database_url})
        except ConfigError as exc:
            raise fail(str(exc)) from None
        url = s.db_url
        if url.startswith("sqlite"):
            s.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            before = current_revision(url)
            migrate(url)
            after = current_revision(url)
        except DatabaseUnavailable as exc:
            raise fail(str(exc)) from None
        where = redacted_url(url)
        if before == after:
            console.print(f"{where}: already at revision {after} (newest: {head_revision()})")
        else:
            console.print(f"{where}: migrated from {before or 'empty'} to {after}")
