"""A tiny OpenAI-compatible upstream for the scale tests (a separate process).

Answers ``POST /v1/chat/completions`` with a fixed completion and usage
(12 prompt + 24 completion tokens) after ``--latency-ms``, and ``GET`` on
anything else with ``{"ok": true}``; HTTP/1.1 keep-alive, bodies by
Content-Length only. Prints ``READY <port>`` once it listens.

Run: ``python tests/scale/upstream.py --port 0 --latency-ms 20``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

COMPLETION = json.dumps({
    "id": "chatcmpl-scale", "object": "chat.completion", "created": 1700000000,
    "model": "scale-model",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok " * 24}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 24, "total_tokens": 36},
}).encode()


def _response(body: bytes) -> bytes:
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  latency_s: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            if method == "POST":
                await asyncio.sleep(latency_s)
                writer.write(_response(COMPLETION))
            else:
                writer.write(_response(b'{"ok": true}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _main(port: int, latency_s: float) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, latency_s),
                                        "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=20.0)
    a = p.parse_args()
    asyncio.run(_main(a.port, a.latency_ms / 1000))
