"""SQLite's driver thread runs below the event loop's thread (Linux), so a
usage flush yields the gateway's core to requests instead of sharing it."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from cambist.store.db import migrate, open_engine, sqlite_url

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="per-thread priorities are a Linux feature")


def _nice(tid: int) -> int:
    stat = Path(f"/proc/{os.getpid()}/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


async def test_the_driver_thread_runs_below_the_event_loop(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "store.db")
    migrate(url)
    engine = open_engine(url)
    before = {int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")}
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
            driver = {int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")} - before
            loop_nice = _nice(threading.get_native_id())
            assert driver, "the connection runs in a thread of its own"
            assert all(_nice(t) == min(19, loop_nice + 10) for t in driver)
    finally:
        await engine.dispose()
