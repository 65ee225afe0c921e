"""Deterministic embeddings: a unit-norm vector from a hash of the input text."""

from __future__ import annotations

import base64
import hashlib
import math
import struct

__all__ = ["embed", "encode_base64"]


def embed(text: str, dimensions: int = 256) -> list[float]:
    """A unit-norm vector of ``dimensions`` floats determined by ``text`` alone.

    The first ``d`` components of a longer vector, renormalized, equal the
    ``d``-dimensional vector (as with OpenAI's ``dimensions``).
    """
    if dimensions < 1:
        raise ValueError("dimensions must be at least 1")
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    vec = [(v + 0.5) / 32768.0 for (v,) in struct.iter_unpack("<h", raw)]
    norm = math.sqrt(sum(x * x for x in vec))
    return [x / norm for x in vec]


def encode_base64(vector: list[float]) -> str:
    """``vector`` as little-endian float32 bytes in base64 (``encoding_format="base64"``)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
