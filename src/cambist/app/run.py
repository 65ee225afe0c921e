"""Running an exchange (``cambist up``) or a gateway alone (``cambist gateway``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn
from rich.console import Console

from cambist.app.bootstrap import Connection, bootstrap, read_connection
from cambist.app.exchange import Role, open_exchange
from cambist.app.server import create_app
from cambist.config import Settings

__all__ = ["PortInUse", "banner", "serve"]


class _Server(uvicorn.Server):
    """uvicorn, but SIGINT/SIGTERM end a clean shutdown with exit code 0 instead
    of being re-raised after it (engines and the outbox are handled in the
    lifespan)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGINT, signal.SIGTERM)
        for sig in sigs:
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in sigs:
                loop.remove_signal_handler(sig)


class PortInUse(OSError):
    """The requested port is taken."""


def _bind(host: str, port: int) -> socket.socket:
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
    sock.set_inheritable(True)
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


async def serve(settings: Settings, role: Role = "up", console: Console | None = None) -> None:
    """Bind, assemble, bootstrap, print the banner and serve until SIGINT/SIGTERM."""
    console = console or Console()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sock = _bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    base_url = f"http://{settings.host}:{port}"
    ex = await open_exchange(settings, role)
    try:
        if role == "up":
            conn = await bootstrap(ex, base_url)
            console.print(banner(conn, str(settings.home)), soft_wrap=True, highlight=False)
        else:
            saved = read_connection(settings.connection_file)
            console.print(f"Cambist gateway at {base_url}/v1 on the store of {settings.home}"
                          + (f" (demo key {saved.demo_key})" if saved else ""))
    except BaseException:
        await ex.stop()
        sock.close()
        raise
    app = create_app(ex)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = _Server(config)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


def run(settings: Settings, role: Role = "up") -> None:
    """Blocking entry point used by the CLI."""
    asyncio.run(serve(settings, role))
