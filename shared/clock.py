"""Time for the whole project.

Nothing in Redial reads the wall clock directly: code asks a :class:`Clock`.
Production uses :class:`SystemClock`; tests use :class:`ManualClock` and move
it, so a 30-day rule is tested in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that stands still until a test moves it.

    ``monotonic`` advances with :meth:`advance` too, so timeouts computed from
    it follow the moved time.
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._now = start.astimezone(dt.UTC)
        self._monotonic = 1_000.0

    def now(self) -> dt.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, delta: dt.timedelta | float) -> dt.datetime:
        """Move forward by a timedelta or a number of seconds; returns the new now."""
        seconds = delta.total_seconds() if isinstance(delta, dt.timedelta) else delta
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._now += dt.timedelta(seconds=seconds)
        self._monotonic += seconds
        return self._now

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when``, which must not be in this clock's past."""
        if when.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware time")
        self.advance(when.astimezone(dt.UTC) - self._now)
