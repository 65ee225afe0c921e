"""``cambist gateway --workers N``: N gateway processes serving one port.

The supervisor binds the listening socket once, then forks N workers that
all accept on it (the kernel hands each connection to one of them), so
nothing else has to know there are several. Each worker is a whole gateway
with its own name ``gateway-<port>-w<i>``: its own usage outbox (replayed if
it crashes), its own exposure in Redis. Share limits and credit between them
with ``CAMBIST_REDIS_URL``; without it each worker enforces the plan's limits
and reserves credit on its own (up to N times the limits; see docs/SCALE.md).

The supervisor restarts a worker that dies (``kill -9``, a crash) under the
same index, which recovers its outbox, and relays SIGINT/SIGTERM to every
worker for a graceful stop. A worker that dies within ``_MIN_LIFE_S`` of its
start (a configuration or database error) stops the whole gateway instead of
restarting in a loop. The workers' pids are in ``<home>/gateway-<port>.workers.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
import traceback
from dataclasses import replace
from pathlib import Path
from types import FrameType

from cambist.app.exchange import Role
from cambist.app.run import bind, run_loop, serve, setup_logging
from cambist.config import Settings

__all__ = ["supervise", "workers_file"]

log = logging.getLogger("cambist.app.workers")

_MIN_LIFE_S = 3.0


def workers_file(settings: Settings, port: int) -> Path:
    """Where the supervisor lists its workers' pids."""
    return settings.home / f"gateway-{port}.workers.json"


def _child(settings: Settings, role: Role, sock: socket.socket, index: int) -> None:
    """Body of a forked worker: serve until SIGTERM, then leave without
    returning into the supervisor's code."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor relays it as SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        run_loop(serve(settings, role, sock=sock, worker=index))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def supervise(settings: Settings, role: Role, workers: int) -> int:
    """Run ``workers`` forked gateway processes on one socket until SIGINT or
    SIGTERM; returns the exit code (0 after a clean stop)."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    setup_logging(settings)
    sock = bind(settings.host, settings.port)
    settings = replace(settings, port=sock.getsockname()[1])  # port 0: name by the real one
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    stopping = False
    code = 0

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            _child(settings, role, sock, index)
        children[pid] = (index, time.monotonic())
        _write_pids(settings, children)

    def stop_all(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        if not stopping:
            stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(workers):
        spawn(i)
    log.info("gateway supervisor: %d workers on port %d", workers, settings.port)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        entry = children.pop(pid, None)
        if entry is None:
            continue
        index, started = entry
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            code = code or (exit_code if exit_code > 0 else 0)
            continue
        if time.monotonic() - started < _MIN_LIFE_S:
            log.error("gateway worker %d exited %d right after starting; stopping", index,
                      exit_code)
            code = 1
            stop_all()
            continue
        log.warning("gateway worker %d (pid %d) exited %d; restarting it", index, pid, exit_code)
        spawn(index)
    sock.close()
    workers_file(settings, settings.port).unlink(missing_ok=True)
    return code


def _write_pids(settings: Settings, children: dict[int, tuple[int, float]]) -> None:
    path = workers_file(settings, settings.port)
    data = {"supervisor": os.getpid(),
            "workers": {str(i): pid for pid, (i, _) in sorted(children.items())}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
