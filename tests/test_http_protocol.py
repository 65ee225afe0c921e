"""The head-holding transport under uvicorn's protocol: a response head goes
out in the same write as the body that follows, never later than the loop's
next turn, and never out of order."""

from __future__ import annotations

import asyncio
from typing import Any

from cambist.app.http_protocol import _HeadHold


class _Wire:
    """A transport that records each write (one write = one system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name == "sockname" else default


def _hold() -> tuple[_HeadHold, _Wire]:
    wire = _Wire()
    return _HeadHold(wire, asyncio.get_running_loop()), wire  # type: ignore[arg-type]


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_a_head_and_its_body_go_out_in_one_write() -> None:
    hold, wire = _hold()
    hold.write(HEAD)
    hold.write(b"ok")
    assert wire.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)
    assert wire.writes == [HEAD + b"ok"]  # nothing left to flush


async def test_a_head_alone_goes_out_on_the_next_turn() -> None:
    hold, wire = _hold()
    hold.write(HEAD)  # a response that sends its head, then waits for its upstream
    assert wire.writes == []
    await asyncio.sleep(0)
    assert wire.writes == [HEAD]
    hold.write(b"ok")
    assert wire.writes == [HEAD, b"ok"]


async def test_closing_sends_a_held_head_first() -> None:
    hold, wire = _hold()
    hold.write(HEAD)
    hold.close()
    assert wire.writes == [HEAD] and wire.closed


async def test_an_interim_response_keeps_its_place() -> None:
    hold, wire = _hold()
    hold.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    hold.write(HEAD)  # the final head follows the interim one in the same write
    hold.write(b"ok")
    assert b"".join(wire.writes) == b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD + b"ok"
    assert wire.writes[0].startswith(b"HTTP/1.1 100 Continue")


async def test_body_chunks_pass_straight_through_and_the_rest_is_the_transport() -> None:
    hold, wire = _hold()
    hold.write(b"5\r\nhello\r\n")
    assert wire.writes == [b"5\r\nhello\r\n"]
    assert hold.get_extra_info("sockname") == ("127.0.0.1", 8080)
    assert not hold.is_closing()
