"""Ids: ordered ids sort by time, never repeat, and a forked child draws its own."""

from __future__ import annotations

import itertools
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cambist.domain.ids import new_id, ordered_id


def test_ordered_id_shape() -> None:
    rid = ordered_id("req", 1_767_225_600.123)
    assert re.fullmatch(r"req_[0-9a-f]{28}", rid)
    assert rid[4:16] == f"{1_767_225_600_123:012x}"  # the milliseconds lead


def test_ordered_ids_in_one_millisecond_are_distinct_and_increasing() -> None:
    ids = [ordered_id("req", 100.0) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    # The sequence may wrap past 2**64 once in a run this short only if it
    # started within 10,000 of the top; otherwise the ids come out sorted.
    wraps = sum(1 for a, b in itertools.pairwise(ids) if b < a)
    assert wraps <= 1


@given(st.lists(st.floats(min_value=0, max_value=2.8e11, allow_nan=False), min_size=2,
                max_size=50))
def test_ordered_ids_sort_by_time(times: list[float]) -> None:
    """Times up to the year ~10,900 (48 bits of milliseconds)."""
    times.sort()
    ids = [ordered_id("req", t) for t in times]
    for (t1, a), (t2, b) in itertools.pairwise(zip(times, ids, strict=True)):
        if int(t1 * 1000) < int(t2 * 1000):
            assert a < b, (t1, t2, a, b)


def test_times_outside_48_bits_still_make_valid_ids() -> None:
    for at in (-1.0, 0.0, 2.0**48, 1e15):
        assert re.fullmatch(r"req_[0-9a-f]{28}", ordered_id("req", at))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its next ids, then exit without running pytest's teardown
        try:
            os.write(write, " ".join(ordered_id("req", 5.0) for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = {ordered_id("req", 5.0) for _ in range(100)}
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split())
    assert len(child) == 100
    assert not parent & child


def test_new_id_is_random_hex() -> None:
    a, b = new_id("ep"), new_id("ep")
    assert a != b and re.fullmatch(r"ep_[0-9a-f]{16}", a)
