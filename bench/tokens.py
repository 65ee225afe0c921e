"""Prompt token counting: ``count_text_tokens`` against the rule's own loop.

The gateway estimates every chat request's prompt tokens before it forwards
it (the token limit and the credit hold need it), and counts the answer's text
when an upstream reports no usage. The rule (``cambist.domain.tokens``) splits
text into word runs and symbols; the baseline here is that rule written as one
Python step per piece (how it was counted until 2026-12-06), measured in the
same run on the same texts: a short chat message, 8 KB of English in ASCII, 8 KB
of English with typographic punctuation (a few percent non-ASCII), 8 KB of
Chinese and 8 KB of JSON.

Run: ``python bench/tokens.py [--repeat 2000]``.
"""

from __future__ import annotations

import argparse
import json
import time

from cambist.domain.tokens import count_text_tokens, split_pieces

_SENTENCE = ("The gateway routes every request to the cheapest healthy endpoint that "
             "meets its latency objective, and meters each token it serves. ")


def by_pieces(text: str) -> int:
    """The baseline: the rule with a Python step per piece."""
    total = 0
    for piece in split_pieces(text):
        if piece[0].isalnum() or piece[0] == "_":
            total += (len(piece) + 3) // 4
        else:
            total += 1
    return total


def texts() -> dict[str, str]:
    english = (_SENTENCE * 60)[:8192]
    typographic = english.replace(", and", " — and").replace("The gateway", "“The gateway”")
    chinese = ("网关把每个请求路由到满足延迟目标的最便宜的健康端点，"
               "并计量它提供的每个令牌。" * 120)[:2730]  # 3 bytes a character
    records = [{"id": i, "model": "llama-3.1-8b", "prompt": "summarize", "ok": True}
               for i in range(200)]
    return {
        "short chat message": "benchmark the gateway, please",
        "8 KB English (ASCII)": english,
        "8 KB English, typographic": typographic,
        "8 KB Chinese": chinese,
        "8 KB JSON": json.dumps(records)[:8192],
    }


def _us(fn, text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn(text)
        best = min(best, (time.perf_counter() - t0) / repeat * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2000, help="calls per timing (best of 3)")
    args = ap.parse_args()
    print(f"{'text':28} {'tokens':>7} {'per piece µs':>13} {'count_text_tokens µs':>21} "
          f"{'ratio':>6}")
    for name, text in texts().items():
        tokens = count_text_tokens(text)
        assert tokens == by_pieces(text), name  # same rule, same count
        base = _us(by_pieces, text, args.repeat)
        new = _us(count_text_tokens, text, args.repeat)
        print(f"{name:28} {tokens:>7} {base:>13.1f} {new:>21.1f} {new / base:>6.2f}")


if __name__ == "__main__":
    main()
