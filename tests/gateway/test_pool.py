"""The upstream pool's SSE splitting and the relay's cheap metering scan."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cambist.gateway.pool import UpstreamPool, split_events
from cambist.gateway.sse import event_data, may_carry
from cambist.gateway.streaming import StreamRelay, _first_notable, pending_payloads


def test_split_events_keeps_partial_events_for_the_next_read() -> None:
    events, rest = split_events(b"data: 1\n\ndata: 2\n\ndata: 3")
    assert events == [b"data: 1", b"data: 2"] and rest == b"data: 3"
    events, rest = split_events(rest + b"\n\n\n\n: keep-alive\n\n")
    assert events == [b"data: 3", b": keep-alive"] and rest == b""


def _split_by_stripping(buf: bytes) -> tuple[list[bytes], bytes]:
    """The reference: line ends normalised, split at blank lines, every part
    stripped of newlines and the empty ones dropped."""
    keep_cr = buf.endswith(b"\r")
    body = (buf[:-1] if keep_cr else buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    parts = body.split(b"\n\n")
    rest = parts.pop() + (b"\r" if keep_cr else b"")
    return [p.strip(b"\n") for p in parts if p.strip(b"\n")], rest


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"data: 1", b"data: {}", b"\n", b"\r", b"\r\n", b"\n\n",
                                 b": keep-alive", b"event: x"]), max_size=16))
def test_split_events_cuts_as_stripping_every_part_would(parts: list[bytes]) -> None:
    buf = b"".join(parts)
    assert split_events(buf) == _split_by_stripping(buf)


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
    relay._pending, relay._delivered, relay._usage = [], [], None
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
        assert pending_payloads(whole._pending) == [e[6:] for e in slow.split(b"\n\n") if e]
    assert [orjson.loads(d)["choices"] for d in single._pending] == [
        orjson.loads(e[6:])["choices"] for e in batch]


def test_a_plain_burst_is_taken_whole_and_a_usage_report_is_not() -> None:
    burst = [b'data: {"a":1,"usage":null}', b'data: {"b":2,"usage":null}']
    assert _relay(False)._take_plain(burst) == b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert _relay(True)._take_plain(burst) == b"\n\n".join(burst) + b"\n\n"
    assert _relay(False)._take_plain([*burst, b'data: {"usage":{"prompt_tokens":1}}']) is None
    assert _relay(False)._take_plain([*burst, b"data: [DONE]"]) is None
    assert _relay(False)._take_plain([*burst, b": keep-alive"]) is None


def _settling_relay(client_wants_usage: bool) -> tuple[StreamRelay, list[str]]:
    """A scanning relay whose settlements are only recorded."""
    relay, settled = _relay(client_wants_usage), []
    relay._settle_ok = lambda: settled.append("ok")  # type: ignore[method-assign]
    relay._settle_partial = lambda: settled.append("partial")  # type: ignore[method-assign]
    return relay, settled


_events = st.one_of(
    st.tuples(_texts, st.booleans()).map(lambda t: b"data: " + orjson.dumps(
        {"id": "c", "choices": [{"index": 0, "delta": {"content": t[0]}}],
         **({"usage": None} if t[1] else {})})),
    st.just(b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'),
    st.just(b'data: {"error":{"message":"overloaded"}}'),
    st.just(b"data: [DONE]"),
    st.just(b": keep-alive"),
    st.just(b'event: message\ndata: {"id":"c","choices":[]}'),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_events, min_size=2, max_size=12), st.booleans())
def test_a_batch_forwards_and_meters_what_event_by_event_would(
        batch: list[bytes], wants_usage: bool) -> None:
    (whole, settled_whole), (single, settled_single) = (
        _settling_relay(wants_usage), _settling_relay(wants_usage))
    assert whole._take_all(batch) == single._take_each(batch)
    assert [orjson.loads(d)["choices"] for d in pending_payloads(whole._pending)] == [
        orjson.loads(d)["choices"] for d in pending_payloads(single._pending)]  # same text
    assert (whole._usage, whole._done, whole._upstream_error) == (
        single._usage, single._done, single._upstream_error)
    assert settled_whole == settled_single


def test_the_plain_run_before_the_usage_report_and_done_is_taken_whole() -> None:
    relay, settled = _settling_relay(False)
    plain = [b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}'] * 3
    batch = [*plain, b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
             b"data: [DONE]", b'data: {"late":1}']
    relay._take_event = relay._take  # type: ignore[attr-defined]
    calls = []
    relay._take = lambda e: calls.append(e) or relay._take_event(e)  # type: ignore[method-assign,attr-defined]
    out = relay._take_all(batch)
    assert calls == batch[3:5]  # the plain run was scanned whole; nothing after [DONE]
    assert out == b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' * 3 + b"data: [DONE]\n\n"
    assert settled == ["ok"] and relay._usage is not None


def _notable_by_walking(joined: bytes) -> int:
    """The reference: every mark's first occurrence, usage walked one by one."""
    found = [at for at in (joined.find(b'"error"'), joined.find(b"[DONE")) if at >= 0]
    at = joined.find(b'"usage":')
    while at >= 0:
        if not joined[at + 8:].lstrip(b" ").startswith(b"null"):
            found.append(at)
            break
        at = joined.find(b'"usage":', at + 1)
    return min(found, default=-1)


_fragments = st.sampled_from([
    b'data: {"choices":[]}', b',"usage":null}', b',"usage": null}', b',"usage":  null}',
    b',"usage":{"prompt_tokens":1}}', b',"usage": {"prompt_tokens":1}}', b',"usage":7}',
    b'"error"', b"[DONE]", b"\n\n", b"x"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_fragments, max_size=12))
def test_the_first_notable_place_is_found_by_counting_as_by_walking(parts: list[bytes]) -> None:
    joined = b"".join(parts)
    assert _first_notable(joined) == _notable_by_walking(joined)


def test_text_of_a_burst_is_counted_when_no_usage_comes() -> None:
    relay, settled = _settling_relay(False)
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"one two"}}],"usage":null}'
    relay._take_all([chunk] * 4)
    relay._commit()
    assert relay._delivered_tokens() == StreamRelay._delivered_tokens(
        _single_taken([chunk] * 4))
    assert relay._delivered_tokens()[0] > 0 and settled == []


def _single_taken(batch: list[bytes]) -> StreamRelay:
    relay, _ = _settling_relay(False)
    for event in batch:
        relay._take(event)
    relay._commit()
    return relay


def _usage_settled(batches: list[list[bytes]]) -> tuple[object, str]:
    relay = _relay(False)
    relay._request = SimpleNamespace(client_wants_usage=False, prompt_tokens=5)  # type: ignore[assignment]
    settled: list[tuple[object, str]] = []
    relay._settle = lambda usage, status: settled.append((usage, status))  # type: ignore[method-assign]
    for batch in batches:
        relay._take_all(batch)
        relay._commit()
    assert len(settled) == 1
    return settled[0]


def test_text_read_together_with_done_is_charged_when_no_usage_comes() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"one two three"}}]}'
    apart = _usage_settled([[chunk, chunk], [b"data: [DONE]"]])
    together = _usage_settled([[chunk, chunk, b"data: [DONE]"]])
    one_by_one = _usage_settled([[chunk], [chunk, b"data: [DONE]"]])
    assert apart == together == one_by_one
    assert apart[1] == "ok" and apart[0].completion_tokens > 0  # type: ignore[attr-defined]
