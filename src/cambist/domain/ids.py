"""Identifiers: short, prefixed, random."""

from __future__ import annotations

import secrets

__all__ = ["new_id"]


def new_id(prefix: str, nbytes: int = 8) -> str:
    """A random id such as ``lease_3f9a...``."""
    return f"{prefix}_{secrets.token_hex(nbytes)}"
