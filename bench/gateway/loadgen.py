"""A small closed-loop HTTP/1.1 load generator for the gateway benchmark.

``concurrency`` keep-alive connections each send the same POST again and again
until ``requests`` have been answered (after ``warmup`` more that are not
counted). Per request it records the full latency and, for streams, the time
to the first body chunk (TTFB). Responses are read with a minimal parser
(``content-length`` or chunked); a non-200 answer or a stream without
``[DONE]`` counts as an error. Raw streams on uvloop keep the client cheap
enough that it is not what limits any gateway measured here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

__all__ = ["Point", "run_point"]


@dataclass
class Point:
    """What one measurement point saw."""

    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    first_error: str = ""

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0


def _request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"host: {host}:{port}",
            "content-type: application/json", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader, started: float
                         ) -> tuple[int, bytes, float]:
    """(status, body, ttfb in ms) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"content-length:")
    if at >= 0:
        length = int(lower[at + 15:lower.find(b"\r\n", at)])
        body = await reader.readexactly(length)
        return status, body, (time.perf_counter() - started) * 1000.0
    if b"transfer-encoding: chunked" not in lower:
        raise ValueError("response with neither content-length nor chunked encoding")
    parts: list[bytes] = []
    ttfb = 0.0
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            break
        parts.append((await reader.readexactly(size + 2))[:-2])
        if not ttfb:
            ttfb = (time.perf_counter() - started) * 1000.0
    return status, b"".join(parts), ttfb


async def run_point(host: str, port: int, path: str, body: bytes, headers: dict[str, str],
                    *, concurrency: int, requests: int, warmup: int, stream: bool) -> Point:
    """Measure one point (see the module docstring)."""
    raw = _request(host, port, path, body, headers)
    point = Point()
    remaining = [warmup + requests]
    counted_from = [0.0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                warm = remaining[0] >= requests
                started = time.perf_counter()
                if not warm and not counted_from[0]:
                    counted_from[0] = started
                writer.write(raw)
                status, data, ttfb = await _read_response(reader, started)
                took = (time.perf_counter() - started) * 1000.0
                ok = status == 200 and (not stream or b"[DONE]" in data)
                if warm:
                    continue
                if not ok:
                    point.errors += 1
                    point.first_error = point.first_error or f"{status}: {data[:200]!r}"
                    continue
                point.latencies_ms.append(took)
                if stream:
                    point.ttfb_ms.append(ttfb)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    point.elapsed_s = time.perf_counter() - (counted_from[0] or t0)
    return point
