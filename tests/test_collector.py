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


ALLOCATOR = textwrap.dedent("""
    import ctypes, sys
    from cambist.app.run import MMAP_THRESHOLD, settle_allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        print("no glibc"); sys.exit(0)
    mallinfo2.restype = MallInfo2
    if sys.argv[1] == "settled":
        settle_allocator()
    size = 2 * MMAP_THRESHOLD
    mapped = []
    for _ in range(4):
        before = mallinfo2().hblkhd
        block = bytearray(size)  # a flush batch's worth, made and dropped
        mapped.append(mallinfo2().hblkhd - before >= size)
        del block
    print(mapped)
""")


def _blocks_mapped(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", ALLOCATOR, mode], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_settle_allocator_keeps_large_blocks_off_the_heap() -> None:
    """Large transient blocks stay mapped on their own, freed back to the system,
    instead of moving into the heap once one was freed (glibc's default)."""
    settled = _blocks_mapped("settled")
    if settled == "no glibc":
        return  # the setting is glibc's; elsewhere the C library's policy stands
    assert settled == "[True, True, True, True]"
    # What it prevents: glibc's own policy moves them to the heap once a mapped
    # block was freed (here already during the interpreter's start).
    assert _blocks_mapped("default").endswith("False]")
