"""The blocks a dashboard page is made of, as JSON-ready dicts.

A page's data is one dict: ``filters``, ``stats``, ``charts`` and ``tables``.
The server renders the first paint from it and the browser re-renders from
the same dict fetched from ``/ui/data/<page>``, so both always agree. Every
value a table shows is already a display string (money rounded, times
formatted) so the two renderers need no formatting logic of their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "WINDOWS",
    "chart",
    "clock",
    "filter_select",
    "filter_text",
    "money",
    "pct",
    "percentile",
    "series",
    "stat",
    "table",
    "window_filter",
    "window_seconds",
]

WINDOWS: dict[str, float] = {"15m": 900.0, "1h": 3600.0, "6h": 21600.0, "24h": 86400.0}
"""Analysis windows a page may be viewed over."""


def window_seconds(name: str | None, default: str = "1h") -> tuple[str, float]:
    """A known window name and its seconds (unknown names fall back to ``default``)."""
    key = name if name in WINDOWS else default
    return key, WINDOWS[key]


def money(v: Decimal | float | None, places: int = 4) -> str:
    """Dollars for display (``—`` for unknown)."""
    if v is None:
        return "—"
    return f"${Decimal(v).quantize(Decimal(1).scaleb(-places)):,}"


def pct(v: Decimal | float | None) -> str:
    """A ratio as a percentage (``—`` for unknown)."""
    return "—" if v is None else f"{float(v) * 100:.1f}%"


def clock(t: float | None) -> str:
    """An epoch time as ``HH:MM:SS`` UTC (``—`` for none)."""
    if t is None:
        return "—"
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; ``None`` if empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stat(key: str, label: str, value: str) -> dict[str, str]:
    """One headline figure."""
    return {"id": key, "label": label, "value": value}


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          note: str = "") -> dict[str, Any]:
    """A table of display strings (``None`` shows as a dash)."""
    return {"title": title, "columns": list(columns),
            "rows": [["—" if c is None else str(c) for c in r] for r in rows], "note": note}


def series(label: str, values: Sequence[float | None], *, kind: str = "line",
           color: str = "#2563eb", unit: str = "") -> dict[str, Any]:
    """A chart series: ``line``, ``band`` (an edge of a shaded band) or ``points``
    (markers only); ``None`` values leave gaps."""
    clean = [None if v is None or not math.isfinite(v) else round(float(v), 6) for v in values]
    return {"label": label, "values": clean, "kind": kind, "color": color, "unit": unit}


def chart(title: str, x: Sequence[float], lines: Sequence[dict[str, Any]], *,
          y_label: str = "", bands: Sequence[tuple[str, str]] = (),
          note: str = "") -> dict[str, Any]:
    """A time chart: ``x`` in epoch seconds; ``bands`` pairs series labels
    (lower, upper) whose gap is shaded."""
    for s in lines:
        if len(s["values"]) != len(x):
            raise ValueError(f"series {s['label']!r} has {len(s['values'])} values "
                             f"for {len(x)} times")
    return {"title": title, "x": [round(t, 3) for t in x], "series": list(lines),
            "y_label": y_label, "bands": [list(b) for b in bands], "note": note}


def filter_select(name: str, label: str, options: Iterable[tuple[str, str]],
                  value: str | None) -> dict[str, Any]:
    """A drop-down filter; the empty value means "any"."""
    return {"name": name, "label": label, "kind": "select",
            "options": [list(o) for o in options], "value": value or ""}


def filter_text(name: str, label: str, value: str | None, placeholder: str = "") -> dict[str, Any]:
    """A free-text filter."""
    return {"name": name, "label": label, "kind": "text", "value": value or "",
            "placeholder": placeholder}


def window_filter(value: str) -> dict[str, Any]:
    """The analysis-window filter."""
    return filter_select("window", "Window", [(k, f"last {k}") for k in WINDOWS], value)
