"""Time comes from a clock object so the simulator can drive it.

Times are float seconds since the Unix epoch (UTC). Domain code never calls
``time.time()``; it asks the clock it was given.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Source of the current time."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests and the simulator)."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00Z
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a clock never moves backwards")
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        """Jump to ``t`` (not earlier than now)."""
        if t < self._now:
            raise ValueError("a clock never moves backwards")
        self._now = t
