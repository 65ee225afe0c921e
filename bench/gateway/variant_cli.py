"""Run the ``cambist`` CLI with changes the benchmark measures before they are
wired into ``cambist.app.run``: ``BENCH_VARIANT`` holds ``+``-joined parts,
``uvloop`` (uvloop's event loop policy), ``fast`` (the app wrapped in
:func:`cambist.gateway.app.gateway_fast_path`) and ``h11`` (uvicorn's pure-Python
HTTP parser even where httptools is installed).
Run: ``BENCH_VARIANT=uvloop+fast python bench/gateway/variant_cli.py gateway --port 8081``."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

if "h11" in os.environ.get("BENCH_VARIANT", "").split("+"):
    sys.modules["httptools"] = None  # type: ignore[assignment]  # uvicorn falls back to h11

import cambist.app.run as run
from cambist.cli.main import main
from cambist.gateway.app import gateway_fast_path


def _fast_app(ex: Any) -> Any:
    app = _create_app(ex)
    return gateway_fast_path(app, app.router.routes)


_create_app = run.create_app

if __name__ == "__main__":
    parts = set(os.environ.get("BENCH_VARIANT", "").split("+"))
    if "uvloop" in parts:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if "fast" in parts:
        run.create_app = _fast_app  # type: ignore[assignment]
    sys.argv[0] = "cambist"
    main()
