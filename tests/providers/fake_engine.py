"""A stand-in for ``python -m cambist.engine`` that honours its process contract.

Once listening it prints one line ``CAMBIST_ENGINE_READY {"port": ..., "pid": ...}``,
serves ``GET /health`` (200), exits 0 on SIGTERM, and exits 2 with a message
on stderr when asked for the model ``does-not-fit``. Standard library only, so
it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "model": self.server.model}).encode()  # type: ignore[attr-defined]
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("fake-engine: " + format % args + "\n")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--sku", default="")
    p.add_argument("--gpu-count", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--no-ready-line", action="store_true")
    args, _unknown = p.parse_known_args()
    if args.model == "does-not-fit":
        sys.stderr.write(f"model {args.model} does not fit on {args.gpu_count} x {args.sku}\n")
        return 2
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    server.model = args.model  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if not args.no_ready_line:
        ready = {"port": server.server_address[1], "pid": os.getpid()}
        print("CAMBIST_ENGINE_READY " + json.dumps(ready), flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
