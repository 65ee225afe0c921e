"""count_text_tokens counts exactly what the documented rule counts, on every path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.domain.tokens import count_chat_tokens, count_text_tokens, split_pieces


def by_pieces(text: str) -> int:
    """The rule as the module documents it: a word piece of n characters counts
    ceil(n / 4), a symbol piece 1."""
    return sum((len(p) + 3) // 4 if p[0].isalnum() or p[0] == "_" else 1
               for p in split_pieces(text))


_ASCII = "abcxyzABC019_ \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f.,;:!?'\"()[]{}<>/\\-+=*&^%$#@~`|"
_OTHER = ["é", "ß", "\u00a0", "\u2003", "—", "“", "”", "’", "٣", "²", "中", "\ud800", "\U0001f600"]
ASCII_ISH = st.text(alphabet=st.sampled_from([*_ASCII, *_OTHER]))
ANY = st.text(alphabet=st.characters(codec=None))  # surrogates and every category


@settings(max_examples=400)
@given(ASCII_ISH)
def test_mostly_ascii_text_counts_as_the_rule(text: str) -> None:
    assert count_text_tokens(text) == by_pieces(text)


@settings(max_examples=300)
@given(ANY)
def test_any_text_counts_as_the_rule(text: str) -> None:
    assert count_text_tokens(text) == by_pieces(text)


@given(st.integers(min_value=0, max_value=40), st.sampled_from([" ", ".", "é", "\n", "a"]))
def test_word_runs_count_ceil_quarter(n: int, tail: str) -> None:
    assert count_text_tokens("x" * n) == (n + 3) // 4
    assert count_text_tokens("x" * n + tail) == by_pieces("x" * n + tail)


def test_examples() -> None:
    assert count_text_tokens("") == 0
    assert count_text_tokens("Hello, world!") == 2 + 1 + 2 + 1  # Hell|o , worl|d !
    assert count_text_tokens("naïve café — “ok”") == by_pieces("naïve café — “ok”") == 7
    long_english = "The gateway routes every request to the cheapest healthy endpoint. " * 120
    assert count_text_tokens(long_english) == by_pieces(long_english)
    cjk = "这是一个测试，用于检查网关的速度。" * 50  # mostly outside ASCII: the regex path
    assert count_text_tokens(cjk) == by_pieces(cjk)
    assert count_chat_tokens([{"role": "user", "content": "hi there"}]) == 3 + 4 + 3  # hi ther|e
