"""Analysis windows: ``[since, until)`` in epoch seconds, parsed from input."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from cambist.domain.errors import InvalidRequest

__all__ = ["Window", "overlap_seconds", "parse_duration", "resolve_window", "seconds_decimal"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW_S = 366 * 86400


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time window ``[since, until)``, ``since < until``."""

    since: float
    until: float

    def __post_init__(self) -> None:
        if not self.until > self.since:
            raise InvalidRequest("the window must end after it starts (until > since)",
                                 param="since")
        if self.until - self.since > MAX_WINDOW_S:
            raise InvalidRequest("the window may span at most 366 days", param="since")

    @property
    def seconds(self) -> float:
        return self.until - self.since


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90m``, ``24h``, ``7d`` (also ``s``, ``w``)."""
    m = _DURATION.match(text or "")
    if m is None:
        raise InvalidRequest(f"{text!r} is not a duration; use a number and a unit such as "
                             "90m, 24h or 7d", param="since")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidRequest("the duration must be positive and at most 366d", param="since")
    return seconds


def _instant(text: str, now: float, param: str) -> float:
    """Epoch seconds from ``text``: a number is an epoch time, ``24h`` means now - 24h."""
    try:
        value = float(text)
    except ValueError:
        return now - parse_duration(text)
    if not 0 <= value <= 1e11:  # also refuses NaN and infinities
        raise InvalidRequest(f"{param} must be epoch seconds or a duration such as 24h",
                             param=param)
    return value


def resolve_window(since: str | None, until: str | None, now: float,
                   default: str = "24h") -> Window:
    """The window named by ``since``/``until`` (epoch seconds or durations back
    from ``now``); ``until`` defaults to ``now``, ``since`` to ``default`` back."""
    end = now if until in (None, "") else _instant(str(until), now, "until")
    start = _instant(since or default, now, "since")
    return Window(start, end)


def overlap_seconds(start: float | None, end: float | None, window: Window) -> float:
    """Seconds of ``[start, end)`` (``end`` ``None``: still open) inside ``window``."""
    if start is None:
        return 0.0
    hi = window.until if end is None else min(end, window.until)
    return max(0.0, hi - max(start, window.since))


def seconds_decimal(seconds: float) -> Decimal:
    """A float duration as a Decimal (its shortest repr, so 1.5 is exactly 1.5)."""
    return Decimal(repr(seconds))
