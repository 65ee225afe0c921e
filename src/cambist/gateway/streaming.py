"""The streaming relay: upstream SSE events forwarded to the client as they arrive.

Each event goes out with its framing intact the moment it is read (the
events one network read brought go out in one write). The relay watches the
events it forwards only to meter them: the final usage chunk (sent
on only if the client asked for it) and the generated text per choice, which
is counted as delivered once the client has taken the chunk (kept as raw
bytes and parsed only if the stream ends without a usage report). A stream that
ends with ``[DONE]`` settles as ``ok``; one that breaks ends with an
OpenAI-style error event and ``[DONE]`` and settles as ``partial``, charging
only what was delivered; so does a client that goes away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cambist.gateway.deps import GatewayDeps
from cambist.gateway.errors import log_unexpected
from cambist.gateway.metering import Meter, TextTally, Usage, usage_from
from cambist.gateway.pool import TransportError
from cambist.gateway.protocol import ParsedRequest
from cambist.gateway.sse import DONE, encode_event, error_event, event_data, may_carry
from cambist.gateway.upstream import UpstreamResult, close_quietly

__all__ = ["RelayResponse", "StreamRelay"]

log = logging.getLogger("cambist.gateway")

BROKEN_MESSAGE = "the upstream stream broke before it finished; the response is incomplete"


def _drop_null_usage(data: bytes) -> bytes:
    """``data`` without its top-level ``"usage": null`` member (as compact JSON
    writers, orjson and pydantic, emit it: last member, or followed by a comma)."""
    for member in (b',"usage":null', b', "usage": null'):
        if member in data:
            return data.replace(member, b"", 1)
    for member in (b'"usage":null,', b'"usage": null, '):
        if member in data:
            return data.replace(member, b"", 1)
    return data


def _first_notable(joined: bytes) -> int:
    """Where the first thing that may matter to metering starts in ``joined``
    events (an ``"error"`` key, ``[DONE``, a non-null ``"usage":``), or -1.
    Like :func:`may_carry`, a false alarm only costs the event-by-event path.
    Counted rather than walked: a burst holds a ``"usage":null`` per chunk."""
    first = -1
    for mark in (b'"error"', b"[DONE"):
        at = joined.find(mark)
        if at >= 0 and (first < 0 or at < first):
            first = at
    end = first if first >= 0 else len(joined)
    key = b'"usage":'
    total = joined.count(key, 0, end)
    if not total:
        return first
    nulls = joined.count(b'"usage":null', 0, end)  # compact JSON: the usual spelling
    if nulls == total:
        return first
    report = joined.find(b'"usage":{', 0, end)
    if report >= 0 and total == nulls + joined.count(b'"usage":{', report, end):
        return report  # the usual report, as compact JSON
    nulls += joined.count(b'"usage": null', 0, end)
    if nulls == total:
        return first
    at = joined.find(key, 0, end)
    while at >= 0:  # any other spelling: walk the occurrences
        after = at + len(key)
        while joined[after:after + 1] == b" ":
            after += 1
        if not joined.startswith(b"null", after):
            return at
        at = joined.find(key, after, end)
    return first


class _Burst:
    """Plain content chunks taken whole: their SSE text (one-line ``data:``
    events joined by blank lines), split into payloads only if the stream ends
    without a usage report and its text has to be counted."""

    __slots__ = ("sse",)

    def __init__(self, sse: bytes) -> None:
        self.sse = sse


def pending_payloads(items: list[bytes | _Burst]) -> list[bytes]:
    """The chunk payloads held by ``items``, bursts split, in order."""
    out: list[bytes] = []
    for item in items:
        if isinstance(item, _Burst):
            out += [event[6:] for event in item.sse.split(b"\n\n")]
        else:
            out.append(item)
    return out


class StreamRelay:
    """Relays one started upstream stream and settles it exactly once."""

    def __init__(
        self, deps: GatewayDeps, request: ParsedRequest, result: UpstreamResult, meter: Meter
    ) -> None:
        self._deps = deps
        self._request = request
        self._result = result
        self._meter = meter
        self._ttft_ms = result.ttfb_ms
        self._delivered: list[bytes | _Burst] = []
        self._pending: list[bytes | _Burst] = []
        self._usage: Usage | None = None
        self._done = False
        self._upstream_error = False
        self._finished = False
        self.ended = False
        """Set when the chunk :meth:`stream` yields is its last (the response
        can end in the same write)."""

    async def stream(self) -> AsyncIterator[bytes]:
        """The bytes to send the client: each read's events in one write."""
        events = self._result.events
        batch = self._result.first_events
        while batch is not None and events is not None:
            out = self._take_all(batch)
            self.ended = self._done
            if out:
                yield out
            self._commit()  # the client took the chunk: it counts as delivered
            if self._done:
                return
            try:
                batch = await anext(events)
            except StopAsyncIteration:
                batch = None
            except TransportError as exc:
                log.warning(
                    "upstream %s broke mid-stream (request %s): %s",
                    self._result.route.id, self._meter.request_id, exc.reason,
                )
                self._deps.metrics.upstream_error(self._meter.model, self._result.route.id,
                                                  f"stream_{exc.reason}")
                batch = None
        self.ended = True
        if self._usage is not None and not self._upstream_error:
            self._settle_ok()  # ended after its usage chunk without [DONE]
            yield DONE
            return
        self._deps.routes.record_failure(self._result.route)
        self._settle_partial()
        yield error_event(BROKEN_MESSAGE)

    def _take_all(self, batch: list[bytes]) -> bytes:
        """What to forward of one batch (up to and including ``[DONE]``).

        A burst (a fast upstream, or a whole answer in one read) is split where
        the first event that may matter to metering starts (an error, a usage
        report, ``[DONE]``): the plain content chunks before it are scanned
        whole, only the few after it one by one."""
        if len(batch) == 1:
            return self._take(batch[0]) or b""
        joined = b"\n\n".join(batch)
        cut = _first_notable(joined)
        if cut < 0:
            plain = self._take_plain(batch, joined)
            if plain is not None:
                return plain
            head, rest = b"", batch
        else:
            count = joined.count(b"\n\n", 0, cut)  # events wholly before the notable one
            head = b""
            if count >= 2:
                before = joined[:joined.rfind(b"\n\n", 0, cut)]
                head = self._take_plain(batch[:count], before, scanned=True) or b""
            rest = batch[count:] if head else batch
        return head + self._take_each(rest)

    def _take_each(self, events: list[bytes]) -> bytes:
        """What to forward of ``events`` taken one by one (up to ``[DONE]``)."""
        out = []
        for event in events:
            data = self._take(event)
            if data is not None:
                out.append(data)
            if self._done:
                break
        return b"".join(out)

    def _take_plain(self, batch: list[bytes], joined: bytes | None = None,
                    scanned: bool = False) -> bytes | None:
        """A burst of plain content chunks forwarded with whole-batch scans
        instead of event by event (the same bytes out); ``None`` when any event
        may matter to metering or is not a one-line ``data:`` event.
        ``joined``: the events already joined by blank lines; ``scanned``: and
        known to hold nothing notable (see :func:`_first_notable`)."""
        if joined is None:
            joined = b"\n\n".join(batch)
        if ((not scanned and _first_notable(joined) >= 0)
                or joined.count(b"\n") != 2 * (len(batch) - 1)
                or joined.count(b"\n\ndata: ") != len(batch) - 1
                or not joined.startswith(b"data: ")):
            return None
        if not self._request.client_wants_usage and b'"usage"' in joined:
            stripped = joined.replace(b',"usage":null', b"")
            if b'"usage"' in stripped:
                return None  # another spelling: event by event
            joined = stripped
        self._pending.append(_Burst(joined))
        return joined + b"\n\n"

    def _take(self, event: bytes) -> bytes | None:
        """Inspect one event; return what to forward (``None`` drops it)."""
        data = event_data(event)
        if data is None:
            return encode_event(event)
        if data.strip() == b"[DONE]":
            self._done = True
            if self._upstream_error:
                self._settle_partial()
            else:
                self._settle_ok()
            return DONE
        if b'"error"' not in data and not may_carry(data, b'"usage":'):
            # A plain content chunk: its text is counted only if it is ever
            # needed (no usage reported), so most streams never parse it.
            self._pending.append(data)
            if not self._request.client_wants_usage and b'"usage"' in data:
                # Usage was asked upstream only to meter: the client did not ask,
                # so its chunks carry no usage field, as OpenAI's do.
                return b"data: " + _drop_null_usage(data) + b"\n\n"
            return encode_event(event)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return encode_event(event)
        if not isinstance(chunk, Mapping):
            return encode_event(event)
        if "error" in chunk:
            self._upstream_error = True
            return encode_event(event)
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage = usage_from(usage) or self._usage
            if not choices and not self._request.client_wants_usage:
                return None
        if isinstance(choices, list) and choices:
            self._pending.append(data)
        return encode_event(event)

    def _delivered_tokens(self) -> tuple[int, int]:
        tally = TextTally()
        for data in pending_payloads(self._delivered):
            tally.add_chunk(data)
        return tally.tokens()

    def _commit(self) -> None:
        if self._pending:
            self._delivered += self._pending
            self._pending.clear()

    def _settle_ok(self) -> None:
        usage = self._usage
        if usage is None:
            # The stream is complete: the chunks read with its end go out in
            # the same write as it, so they count too.
            self._commit()
            completion, reasoning = self._delivered_tokens()
            usage = Usage(self._request.prompt_tokens, completion, reasoning)
        self._settle(usage, "ok")

    def _settle_partial(self) -> None:
        completion, reasoning = self._delivered_tokens()
        self._settle(Usage(self._request.prompt_tokens, completion, reasoning), "partial")

    def _settle(self, usage: Usage, status: str) -> None:
        # A metering failure must not cut off a client that is being served;
        # the wallet keeps the hold when settling fails.
        try:
            self._meter.settle(self._result.route, usage, status, self._ttft_ms)
            self._deps.metrics.served(self._meter.model, self._result.route.id,
                                      self._meter.elapsed_ms(), self._ttft_ms)
        except Exception as exc:
            log_unexpected(log, exc, f"settling stream request {self._meter.request_id} failed")

    async def finish(self) -> None:
        """Settle whatever was delivered if the stream did not finish (the client
        left or the relay was cancelled), close the upstream, free the slot."""
        if self._finished:
            return
        self._finished = True
        try:
            if not self._meter.done:
                log.info(
                    "stream for request %s ended early; settling what was delivered",
                    self._meter.request_id,
                )
                self._settle_partial()
        finally:
            self._deps.routes.release(self._result.route)
            self._deps.metrics.finished()
            await close_quietly(self._result.response)


class RelayResponse(Response):
    """A ``text/event-stream`` response that always finishes its relay, even when
    the client disconnects or the response is cancelled before it starts.

    Sent straight through ASGI rather than as Starlette's ``StreamingResponse``,
    whose anyio task group per response cost about a tenth of a streamed
    request's CPU (``bench/gateway``); a plain task waits for the client's
    disconnect instead and cancels the relay, so the upstream is dropped at once
    even while it is silent."""

    media_type = "text/event-stream"

    def __init__(self, relay: StreamRelay, headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in headers.items()]
        self.raw_headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
        self._relay = relay
        self._client_left = False
        self._sent_all = False

    async def _watch(self, receive: Receive, relay_task: asyncio.Task[object]) -> None:
        """Cancel the relay when the client goes away mid-stream."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not self._sent_all:
            self._client_left = True
            relay_task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.get_running_loop().create_task(self._watch(receive, task))
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            relay, last = self._relay, False
            async for chunk in relay.stream():
                # The last chunk ends the response in the same write.
                last = self._sent_all = relay.ended
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            if not last:
                self._sent_all = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self._client_left:
                raise
            task.uncancel()
            log.info("client disconnected mid-stream")
        except OSError:
            log.info("client disconnected mid-stream")
        finally:
            self._sent_all = True
            watcher.cancel()
            await self._relay.finish()
