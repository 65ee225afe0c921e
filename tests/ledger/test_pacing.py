"""PushPacer: one push per interval however many changes, urgent ones at once."""

from __future__ import annotations

import asyncio

from cambist.ledger.pacing import PushPacer


class _Queue:
    """What a push owner keeps: queued changes, and each batch it sent."""

    def __init__(self, fail: bool = False) -> None:
        self.queued: list[int] = []
        self.sent: list[list[int]] = []
        self.fail = fail

    async def push_batch(self) -> bool:
        await asyncio.sleep(0)  # a round trip
        if self.fail:
            return False
        self.sent.append(self.queued)
        self.queued = []
        return bool(self.queued)


async def test_changes_within_an_interval_go_in_one_push() -> None:
    q = _Queue()
    pacer = PushPacer(q.push_batch, interval_s=0.05)
    for i in range(20):
        q.queued.append(i)
        pacer.kick()
        await asyncio.sleep(0)
    assert q.sent == []  # still waiting out the interval
    await asyncio.sleep(0.1)
    assert q.sent == [list(range(20))]


async def test_an_urgent_change_is_pushed_at_once() -> None:
    q = _Queue()
    pacer = PushPacer(q.push_batch, interval_s=10.0)
    q.queued.append(1)
    pacer.kick()
    await asyncio.sleep(0.01)
    assert q.sent == []
    q.queued.append(2)
    pacer.kick(urgent=True)  # wakes the waiting push
    for _ in range(5):
        await asyncio.sleep(0)
    assert q.sent == [[1, 2]]


async def test_an_urgent_change_during_a_push_skips_the_next_wait() -> None:
    q = _Queue()
    sent_during: list[int] = []

    async def push_batch() -> bool:
        batch, q.queued = q.queued, []
        await asyncio.sleep(0)
        if not sent_during:  # a change arrives while this batch is on the wire
            sent_during.append(1)
            q.queued.append(99)
            pacer.kick(urgent=True)
        q.sent.append(batch)
        return bool(q.queued)

    pacer = PushPacer(push_batch, interval_s=10.0)
    q.queued.append(1)
    pacer.kick(urgent=True)
    for _ in range(10):
        await asyncio.sleep(0)
    assert q.sent == [[1], [99]]


async def test_a_failed_push_stops_until_the_next_kick() -> None:
    q = _Queue(fail=True)
    pacer = PushPacer(q.push_batch, interval_s=0.0)
    q.queued.append(1)
    pacer.kick()
    await asyncio.sleep(0.01)
    assert q.sent == [] and q.queued == [1]  # kept for the owner's sync loop
    q.fail = False
    pacer.kick()
    await asyncio.sleep(0.01)
    assert q.sent == [[1]]


def test_a_kick_without_an_event_loop_is_left_to_the_sync_loop() -> None:
    q = _Queue()
    PushPacer(q.push_batch).kick(urgent=True)
    assert q.sent == []
