"""The upstream pool's SSE splitting and the relay's cheap metering scan."""

from __future__ import annotations

from cambist.gateway.pool import UpstreamPool, split_events
from cambist.gateway.sse import event_data, may_carry


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
