"""Rich tables for the CLI."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

__all__ = ["money", "table"]


def money(v: Any, places: int = 4) -> str:
    """'$1.2345' from a money string; '-' for None."""
    if v is None or v == "":
        return "-"
    try:
        return f"${float(v):,.{places}f}"
    except (TypeError, ValueError):
        return str(v)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          justify_right: Iterable[str] = ()) -> Table:
    """A table with the given columns; money/number columns right-aligned."""
    right = set(justify_right)
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left", no_wrap=c in right)
    for r in rows:
        t.add_row(*("-" if v is None else str(v) for v in r))
    return t
