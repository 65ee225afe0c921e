"""The gateway's collector settings once start-up is done (run in a fresh
interpreter: freezing and thresholds are process-wide)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, weakref
    from cambist.app.run import YOUNG_GC_THRESHOLD, settle_collector

    class Node:
        pass

    kept = [Node() for _ in range(1000)]  # what start-up built
    settle_collector()
    assert gc.get_freeze_count() >= len(kept), gc.get_freeze_count()
    assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD, gc.get_threshold()

    # Garbage in cycles made while serving is still found and freed.
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
    print("ok")
""")


def test_settle_collector_freezes_start_up_and_spaces_young_collections() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
