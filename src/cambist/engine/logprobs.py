"""Deterministic log probabilities of the reference engine's tokens.

The engine plans its text rather than sampling it, so logprobs are derived,
not measured: for token ``position`` of choice ``choice`` a hash of
(generation seed, choice, position) draws the chosen token's probability
``p`` in (0.5, 1) and a decay ``r``; alternative ``i`` gets
``(1 - p) * (1 - r) * r**i``. So the chosen token is always the most likely
(logprob <= 0), the alternatives are strictly lower and strictly decreasing,
the probabilities sum to at most 1, and asking for fewer alternatives gives a
prefix of asking for more. Alternatives are distinct vocabulary words shaped
like the chosen token (same leading whitespace and capitalisation).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cambist.engine.text import VOCABULARY

__all__ = ["TokenLogprob", "chat_logprobs", "legacy_logprobs", "token_logprob"]

_PUNCTUATION = (".", ",", ";", ":", "!", "?", "-", ")")
_MAX_P = 1.0 - 1e-6  # keeps some mass for alternatives, so every logprob is finite


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One emitted token's logprob and its most likely alternatives (chosen first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def _alternatives(token: str, rng: random.Random) -> list[str]:
    stripped = token.lstrip()
    lead = token[: len(token) - len(stripped)]
    capital = stripped[:1].isupper()
    words = [lead + (w.capitalize() if capital else w) for w in VOCABULARY]
    pool = list(dict.fromkeys(w for w in (*words, *_PUNCTUATION) if w != token))
    rng.shuffle(pool)  # shuffling the whole pool keeps smaller top-k a prefix of larger
    return pool


def token_logprob(seed: str, choice: int, position: int, token: str, top: int) -> TokenLogprob:
    """The logprob of ``token`` at ``position`` of choice ``choice``, with ``top`` entries.

    ``top`` counts the chosen token itself (it is the most likely), as OpenAI's
    ``top_logprobs`` does; 0 gives an empty list.
    """
    digest = hashlib.sha256(f"{seed}:{choice}:{position}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    p = min(_MAX_P, 1.0 - 0.5 * rng.random() ** 2)
    r = 0.3 + 0.5 * rng.random()
    chosen = math.log(p)
    entries: list[tuple[str, float]] = [(token, chosen)] if top > 0 else []
    if top > 1:
        rest = 1.0 - p
        for i, alt in enumerate(_alternatives(token, rng)[: top - 1]):
            entries.append((alt, math.log(rest * (1.0 - r) * r**i)))
    return TokenLogprob(token=token, logprob=chosen, top=tuple(entries))


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8"))


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's ``logprobs`` object: ``content`` always a list, ``refusal`` null."""
    content = [
        {
            "token": e.token,
            "logprob": e.logprob,
            "bytes": _bytes(e.token),
            "top_logprobs": [
                {"token": t, "logprob": lp, "bytes": _bytes(t)} for t, lp in e.top
            ],
        }
        for e in entries
    ]
    return {"content": content, "refusal": None}


def legacy_logprobs(entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """A legacy completions choice's ``logprobs``; ``offset``: text offset of the first token.

    Offsets count characters of the generated text (the engine never echoes the
    prompt). Each ``top_logprobs`` dict always holds the sampled token, as the
    legacy API promises, so ``logprobs: 0`` still names it.
    """
    offsets: list[int] = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) or {e.token: e.logprob} for e in entries],
        "text_offset": offsets,
    }
