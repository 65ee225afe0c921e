"""Running an exchange (``cambist up``) or a gateway alone (``cambist gateway``,
``--workers N`` forks N processes that accept on one pre-bound socket:
:mod:`cambist.app.workers`)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import logging
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn
from rich.console import Console

from cambist.app.bootstrap import Connection, bootstrap, read_connection
from cambist.app.exchange import Role, open_exchange
from cambist.app.guard import header_guard
from cambist.app.http_protocol import HeadHoldingProtocol
from cambist.app.server import create_app
from cambist.config import Settings
from cambist.gateway.app import gateway_fast_path

__all__ = [
    "MMAP_THRESHOLD", "YOUNG_GC_THRESHOLD", "PortInUse", "banner", "bind", "run", "serve",
    "settle_allocator", "settle_collector",
    "setup_logging",
]

KEEP_ALIVE_S = 30
"""An idle keep-alive connection is closed after this long (slow or stuck clients)."""


class _Server(uvicorn.Server):
    """uvicorn, but SIGINT/SIGTERM end a clean shutdown with exit code 0 instead
    of being re-raised after it (engines and the outbox are handled in the
    lifespan). A worker listens to SIGTERM only: its supervisor relays Ctrl-C."""

    def __init__(self, config: uvicorn.Config,
                 signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        super().__init__(config)
        self._signals = signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        sigs = self._signals
        for sig in sigs:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)


class PortInUse(OSError):
    """The requested port is taken."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (``TCP_NODELAY``); raises :class:`PortInUse`.

    It stays close-on-exec: gateway workers get it by ``fork``, and an engine
    started by ``exec`` must not hold it, or the port stays taken after a crash
    for as long as the (deliberately surviving) engine lives."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this; without it a response written as
    # headers then body waits ~40 ms on the client's delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is in use; pass --port to pick another") \
                from None
        raise
    sock.listen(2048)
    return sock


def banner(conn: Connection, home: str) -> str:
    """What ``cambist up`` prints: URL, keys, a curl line and an SDK snippet."""
    return f"""[bold]Cambist is up[/bold] at {conn.base_url}  (home: {home})

  admin key : {conn.admin_key}
  demo key  : {conn.demo_key}   (tenant {conn.demo_tenant})
  saved to  : {home}/connection.json

Try it:
  cambist offers --gpu H100 --model llama-3.1-8b --sort price-per-token
  cambist deploy llama-3.1-8b

  curl {conn.base_url}/v1/chat/completions -H "Authorization: Bearer {conn.demo_key}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "llama-3.1-8b", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  from openai import OpenAI
  client = OpenAI(base_url="{conn.base_url}/v1", api_key="{conn.demo_key}")
  r = client.chat.completions.create(model="llama-3.1-8b",
                                     messages=[{{"role": "user", "content": "Hello"}}])
  print(r.choices[0].message.content, r.usage)

Ctrl-C stops the exchange and its engines."""


def setup_logging(settings: Settings) -> None:
    """The log format and level every serving process uses."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve(settings: Settings, role: Role = "up", console: Console | None = None, *,
                sock: socket.socket | None = None, worker: int | None = None) -> None:
    """Bind (unless given ``sock``, a worker's shared socket), assemble,
    bootstrap, print the banner and serve until SIGINT/SIGTERM."""
    console = console or Console()
    setup_logging(settings)
    owned = sock is None
    sock = sock or bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    base_url = f"http://{settings.host}:{port}"
    ex = await open_exchange(settings, role, worker=worker)
    try:
        if role == "up":
            conn = await bootstrap(ex, base_url)
            console.print(banner(conn, str(settings.home)), soft_wrap=True, highlight=False)
        elif not worker:
            saved = read_connection(settings.connection_file)
            console.print(f"Cambist gateway at {base_url}/v1 on the store of {settings.home}"
                          + (f" (demo key {saved.demo_key})" if saved else ""))
    except BaseException:
        await ex.stop()
        if owned:
            sock.close()
        raise
    app = create_app(ex)
    # Inference requests skip the host app's middleware and route scan, which
    # cost about as much CPU as the gateway's own work (bench/gateway).
    fast = header_guard(gateway_fast_path(app, app.router.routes))
    config = uvicorn.Config(fast, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5, http=HeadHoldingProtocol,
                            timeout_keep_alive=KEEP_ALIVE_S)  # idle clients are closed
    server = _Server(config) if worker is None else _Server(config, (signal.SIGTERM,))
    settle_collector()
    try:
        await server.serve(sockets=[sock])
    finally:
        if owned:
            sock.close()


YOUNG_GC_THRESHOLD = 20_000
"""Allocations (net, of objects the collector tracks) between two young-generation
collections; Python's default is 700."""


def settle_collector() -> None:
    """Tune the garbage collector for serving, once start-up is done.

    What start-up built lives as long as the process: frozen out of the
    collector's sight, a full collection walks only what requests leave behind
    (one took ~65 ms with it in view, the gateway's worst stall at concurrency
    1). And young collections come ~30 times less often: at the default
    threshold one ran every 20-30 requests and found nothing to free (requests
    leave no cycles) while walking every request in flight, 0.2 ms each, ~8 µs
    of CPU per request with limits and metering on (bench/gateway_scale.py).
    Garbage in cycles is still collected, after 20,000 allocations instead of 700."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)


def settle_allocator() -> None:
    """Set glibc's allocator for a long-running server (a no-op off glibc).

    One arena (as ``MALLOC_ARENA_MAX=1``): glibc gives threads their own
    arenas; the SQLite driver's thread allocating and freeing beside the
    event loop's left the gateway's resident memory 20 MiB higher after
    100,000 requests (121 -> 142 MiB, still rising) where one arena holds it
    at +5% (``bench/gateway``). The GIL keeps the two threads from contending
    for it.

    A fixed mmap threshold of 128 KiB (as ``MALLOC_MMAP_THRESHOLD_``): glibc
    raises the threshold to the size of each mapped block freed, so after the
    first flush batch (a few hundred KiB of JSON, a few times a second) every
    later one came from the heap, between the requests' small blocks, and
    the heap could not shrink: +7 MiB over 30,000 requests (resident 122 ->
    133 MiB from 10,000 to 100,000 requests; 116 -> 120 with the threshold
    fixed, ``bench/gateway``). A block that large is rare on a request's path
    (a body over 128 KiB), and a mapping costs little beside its handling."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return  # another C library: its own allocator policy stands
    mallopt(_M_ARENA_MAX, 1)
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


_M_ARENA_MAX = -8  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 << 10
"""Blocks at least this large are mapped and unmapped on their own (glibc's
initial threshold, kept fixed)."""


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop (measured faster for the gateway in bench/gateway),
    or asyncio's own loop where uvloop is not installed."""
    settle_allocator()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run(settings: Settings, role: Role = "up") -> None:
    """Blocking entry point used by the CLI (one process; see
    :func:`cambist.app.workers.supervise` for several)."""
    run_loop(serve(settings, role))
