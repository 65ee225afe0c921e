"""A fast mock OpenAI upstream for the gateway benchmark.

A raw asyncio protocol (on uvloop when installed) that answers
``POST /v1/chat/completions`` (and ``/v1/completions``) with a fixed
completion, streamed as ``--events`` SSE events (plus the usage chunk when
``stream_options.include_usage`` is asked for, then ``[DONE]``) or whole;
``GET /v1/models`` and ``GET /health`` for the gateways' health checks. Every
response is prebuilt, so the mock costs a few microseconds per request and is
never the bottleneck. ``--latency-ms`` holds each answer that long;
``--chunk-delay-ms`` spaces the streamed events.

Run: ``python bench/gateway/mock_upstream.py --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import orjson

MODEL = "bench-model"
_USAGE = {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36}


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _stream_events(n: int, with_usage: bool) -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": MODEL}
    events = []
    for i in range(n):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": f" w{i}"}
        finish = "stop" if i == n - 1 else None
        events.append(_event({**base, "choices": [{"index": 0, "delta": delta,
                                                   "finish_reason": finish}],
                              **({"usage": None} if with_usage else {})}))
    if with_usage:
        events.append(_event({**base, "choices": [], "usage": _USAGE}))
    events.append(b"data: [DONE]\n\n")
    return events


def _json_response(body: bytes, status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


_COMPLETION = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant",
                                         "content": "a fixed answer of the benchmark mock"},
                 "finish_reason": "stop"}],
    "usage": _USAGE,
})
_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
_MODELS = orjson.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}]})


class Mock:
    """The prebuilt answers and timing options, shared by every connection."""

    def __init__(self, events: int, latency_ms: float, chunk_delay_ms: float) -> None:
        self.latency_s = latency_ms / 1000.0
        self.chunk_delay_s = chunk_delay_ms / 1000.0
        self.completion = _json_response(_COMPLETION)
        self.models = _json_response(_MODELS)
        self.health = _json_response(b'{"status":"ok"}')
        self.not_found = _json_response(b'{"error":{"message":"not found"}}', "404 Not Found")
        self.events = {u: [_chunk(e) for e in _stream_events(events, u)] for u in (False, True)}
        self.whole = {u: _STREAM_HEAD + b"".join(ev) + b"0\r\n\r\n"
                      for u, ev in self.events.items()}
        self.served = 0


class MockProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, requests answered in order (no pipelining needed)."""

    def __init__(self, mock: Mock) -> None:
        self.mock = mock
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17:line_end if line_end > 0 else None])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.answer(head[:head.find(b"\r\n")], body)

    def answer(self, request_line: bytes, body: bytes) -> None:
        mock, transport = self.mock, self.transport
        assert transport is not None
        mock.served += 1
        method, _, rest = request_line.partition(b" ")
        path = rest.partition(b" ")[0]
        if method == b"GET":
            out = mock.models if path.endswith(b"/models") else (
                mock.health if path.endswith(b"/health") else mock.not_found)
            transport.write(out)
            return
        if not path.endswith(b"/completions"):
            transport.write(mock.not_found)
            return
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            transport.write(_json_response(b'{"error":{"message":"bad json"}}', "400 Bad Request"))
            return
        stream = bool(req.get("stream"))
        usage = bool((req.get("stream_options") or {}).get("include_usage")) if stream else False
        if not stream:
            self.later(mock.completion)
        elif mock.chunk_delay_s <= 0:
            self.later(mock.whole[usage])
        else:
            self.task = asyncio.ensure_future(self.trickle(mock.events[usage]))

    def later(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.mock.latency_s <= 0:
            transport.write(data)
        else:
            asyncio.get_running_loop().call_later(self.mock.latency_s, self._write, data)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def trickle(self, events: list[bytes]) -> None:
        """Stream the events spaced by the chunk delay (first after the latency)."""
        if self.mock.latency_s > 0:
            await asyncio.sleep(self.mock.latency_s)
        self._write(_STREAM_HEAD)
        for i, event in enumerate(events):
            if i:
                await asyncio.sleep(self.mock.chunk_delay_s)
            self._write(event)
        self._write(b"0\r\n\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def use_uvloop() -> str:
    """Install uvloop's policy when available; returns the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(port: int, mock: Mock) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(mock), "127.0.0.1", port,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--events", type=int, default=24, help="SSE events per streamed answer")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    use_uvloop()
    mock = Mock(args.events, args.latency_ms, args.chunk_delay_ms)
    started = time.monotonic()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, mock))
    print(f"mock served {mock.served} requests in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
