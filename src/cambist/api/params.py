"""Query parameter types shared by the REST routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

__all__ = ["MAX_TIMESTAMP", "Timestamp"]

MAX_TIMESTAMP = 1e11
"""Latest epoch second a query may name (year ~5100): beyond it, and for NaN or
infinity, bucket arithmetic overflows, so such values are a 400, not a 500."""

Timestamp = Annotated[
    float | None,
    Query(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False, description="Epoch seconds."),
]
