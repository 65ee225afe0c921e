"""The upstream pool's SSE splitting and the relay's cheap metering scan."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.gateway.pool import UpstreamPool, split_events
from cambist.gateway.sse import event_data, may_carry
from cambist.gateway.streaming import StreamRelay


def test_split_events_keeps_partial_events_for_the_next_read() -> None:
    events, rest = split_events(b"data: 1\n\ndata: 2\n\ndata: 3")
    assert events == [b"data: 1", b"data: 2"] and rest == b"data: 3"
    events, rest = split_events(rest + b"\n\n\n\n: keep-alive\n\n")
    assert events == [b"data: 3", b": keep-alive"] and rest == b""


def test_split_events_normalises_crlf_even_split_across_reads() -> None:
    events, rest = split_events(b"event: x\r\ndata: 1\r\n\r\ndata: 2\r")
    assert events == [b"event: x\ndata: 1"] and rest == b"data: 2\r"
    events, rest = split_events(rest + b"\n\r\n")
    assert events == [b"data: 2"] and rest == b""


def test_event_data_joins_multi_line_data() -> None:
    assert event_data(b"data: {}") == b"{}"
    assert event_data(b"event: x\ndata: a\ndata:b") == b"a\nb"
    assert event_data(b": ping") is None


def test_may_carry_is_certain_when_false() -> None:
    key = b'"usage":'
    assert not may_carry(b'{"choices":[],"usage":null}', key)
    assert not may_carry(b'{"choices":[], "usage": null}', key)
    assert may_carry(b'{"choices":[],"usage":{"prompt_tokens":1}}', key)
    # inside a string the quotes are escaped: never taken for the key
    assert not may_carry(b'{"choices":[{"delta":{"content":"\\"usage\\":1"}}]}', key)
    # a nested key of the same name is a false alarm the caller parses away
    assert may_carry(b'{"choices":[],"x":{"usage":1},"usage":null}', key)
    assert not may_carry(b'{"choices":[]}', key)


async def test_aclose_before_use_and_twice_is_harmless() -> None:
    pool = UpstreamPool()
    await pool.aclose()
    await pool.aclose()


def _relay(client_wants_usage: bool) -> StreamRelay:
    """A relay with only what scanning events reads (no upstream, no meter)."""
    relay = StreamRelay.__new__(StreamRelay)
    relay._request = SimpleNamespace(client_wants_usage=client_wants_usage)  # type: ignore[assignment]
    relay._pending, relay._usage = [], None
    relay._done = relay._upstream_error = False
    return relay


_texts = st.text(alphabet=st.sampled_from('ab "\\:,{}[]\n'), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_texts, st.booleans()), min_size=2, max_size=8), st.booleans())
def test_a_burst_scanned_whole_forwards_what_event_by_event_would(
        chunks: list[tuple[str, bool]], wants_usage: bool) -> None:
    batch = []
    for text, null_usage in chunks:
        chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": text}}],
                 **({"usage": None} if null_usage else {})}
        batch.append(b"data: " + orjson.dumps(chunk))
    whole, single = _relay(wants_usage), _relay(wants_usage)
    fast = whole._take_plain(batch)
    slow = b"".join(single._take(e) or b"" for e in batch)
    if fast is not None:  # taken whole: the same bytes and the same text to meter
        assert fast == slow
        assert whole._pending == [e[6:] for e in slow.split(b"\n\n") if e]
    assert [orjson.loads(d)["choices"] for d in single._pending] == [
        orjson.loads(e[6:])["choices"] for e in batch]


def test_a_plain_burst_is_taken_whole_and_a_usage_report_is_not() -> None:
    burst = [b'data: {"a":1,"usage":null}', b'data: {"b":2,"usage":null}']
    assert _relay(False)._take_plain(burst) == b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert _relay(True)._take_plain(burst) == b"\n\n".join(burst) + b"\n\n"
    assert _relay(False)._take_plain([*burst, b'data: {"usage":{"prompt_tokens":1}}']) is None
    assert _relay(False)._take_plain([*burst, b"data: [DONE]"]) is None
    assert _relay(False)._take_plain([*burst, b": keep-alive"]) is None
