"""``python -m cambist.engine``: run the reference engine on a socket.

Prints exactly one line to stdout once the server accepts connections::

    CAMBIST_ENGINE_READY {"port": <int>, "pid": <int>}

Supplier adapters parse that line; it is a fixed contract. SIGTERM or SIGINT
stops the server gracefully (exit 0). A model that is unknown, does not fit,
or an SKU that cannot be quoted exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Sequence

import uvicorn

from cambist.domain.errors import CambistError
from cambist.engine.config import DEFAULT_MAX_BODY_BYTES, EngineConfig
from cambist.engine.server import create_app

__all__ = ["READY_PREFIX", "main", "parse_args"]

READY_PREFIX = "CAMBIST_ENGINE_READY"
EXIT_CONFIG = 2


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        prog="python -m cambist.engine",
        description="Cambist reference engine: an OpenAI-compatible server simulating a GPU.",
    )
    p.add_argument("--model", required=True, help="catalog name or Hugging Face id")
    p.add_argument("--sku", required=True, help="canonical GPU SKU, e.g. H100-80GB-SXM")
    p.add_argument("--gpu-count", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="real sleep = modeled time x this (default 1.0, real time)")
    p.add_argument("--served-name", default=None, help="model name clients send")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--attest-key", default=None,
                   help="Ed25519 key file (created if absent): serve signed evidence at "
                        "/attestation (a test harness for the confidential tier)")
    p.add_argument("--attest-ttl", type=float, default=60.0,
                   help="seconds one attestation document stays valid")
    return p.parse_args(argv)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: a response written as headers then
    # body must not wait on Nagle for the client's delayed ACK (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        server.should_exit = True

    # uvicorn swaps in its own handlers while serving and, on exit, restores
    # these and re-raises the signal it caught; it lands here and only asks
    # for the (already running) graceful exit, so the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # startup failed: surface its error
            return
        await asyncio.sleep(0.01)
    port = sock.getsockname()[1]
    print(f"{READY_PREFIX} {json.dumps({'port': port, 'pid': os.getpid()})}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    """Run the engine until SIGTERM/SIGINT; returns the process exit code."""
    args = parse_args(argv)
    config = EngineConfig(
        model=args.model, sku=args.sku, gpu_count=args.gpu_count, served_name=args.served_name,
        time_scale=args.time_scale, max_body_bytes=args.max_body_bytes,
        attest_key=args.attest_key, attest_ttl_s=args.attest_ttl,
    )
    try:
        app = create_app(config)
    except CambistError as exc:
        print(f"cambist engine: {exc.message}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except (OSError, ValueError) as exc:  # an unreadable or foreign attestation key
        print(f"cambist engine: --attest-key: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(f"cambist engine: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr, flush=True)
        return EXIT_CONFIG
    uv_config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(uv_config)
    with sock:
        asyncio.run(_serve(server, sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
