"""Time for the whole project.

Nothing in Redial reads the wall clock directly: code asks a :class:`Clock`.
Production uses :class:`SystemClock`; tests use :class:`ManualClock` and move
it, so a 30-day rule is tested in milliseconds. End-to-end tests, where every
service is its own process, share one :class:`SharedClock` through a file.
"""

from __future__ import annotations

import datetime as dt
import mmap
import struct
import time
from pathlib import Path
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


class SharedClock:
    """A manual clock that several processes read: the end-to-end tests'
    way of moving time in every service at once.

    The time lives in a small file that each reader maps into memory, so
    ``now()`` costs one memory read, not a system call. The file holds a
    marker, the start time and the current time, both in whole microseconds
    since the epoch; one writer (the test) moves the current time, every
    reader sees the move at its next call. Like :class:`ManualClock`, time
    stands still until the writer moves it, and ``monotonic`` follows it.

    A service only reads such a file when ``REDIAL_TEST_CLOCK_FILE`` is set
    and ``REDIAL_ENVIRONMENT`` is ``test`` (see
    :class:`shared.settings.ServiceSettings`); anything else refuses to start.
    """

    MARKER = b"redialck"
    _LAYOUT = struct.Struct("<8sqq")
    _NOW_OFFSET = 16  # where the current time starts: after marker and start

    def __init__(self, path: Path, *, writable: bool = False) -> None:
        self.path = path
        with open(path, "r+b" if writable else "rb") as handle:
            self._map = mmap.mmap(
                handle.fileno(),
                self._LAYOUT.size,
                access=mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ,
            )
        marker, self._start_us, _ = self._LAYOUT.unpack_from(self._map)
        if marker != self.MARKER:
            self._map.close()
            raise ValueError(f"{path} is not a Redial test clock file")
        self._writable = writable

    @classmethod
    def create(cls, path: Path, start: dt.datetime | None = None) -> SharedClock:
        """Write a new clock file at ``start`` and return its writer.

        An existing file is refused (``FileExistsError``): processes may have
        it mapped, and rewriting it truncates it first, which kills a reader
        touching the mapping then with SIGBUS."""
        start = start or dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)
        if start.tzinfo is None:
            raise ValueError("SharedClock needs a timezone-aware start time")
        micros = _micros(start)
        with open(path, "xb") as handle:
            handle.write(cls._LAYOUT.pack(cls.MARKER, micros, micros))
        return cls(path, writable=True)

    def _now_us(self) -> int:
        # The writer stores the 8 bytes in one go, but nothing in Python
        # promises the copy is a single machine store: read until two reads
        # agree, so a reader never acts on a half-written time.
        while True:
            first: int = struct.unpack_from("<q", self._map, self._NOW_OFFSET)[0]
            if first == struct.unpack_from("<q", self._map, self._NOW_OFFSET)[0]:
                return first

    def now(self) -> dt.datetime:
        return _EPOCH + dt.timedelta(microseconds=self._now_us())

    def monotonic(self) -> float:
        return 1_000.0 + (self._now_us() - self._start_us) / 1_000_000

    def advance(self, delta: dt.timedelta | float) -> dt.datetime:
        """Move every reader forward by a timedelta or seconds; the new now."""
        if not self._writable:
            raise PermissionError("this process only reads the shared clock")
        seconds = delta.total_seconds() if isinstance(delta, dt.timedelta) else delta
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        moved = self._now_us() + round(seconds * 1_000_000)
        struct.pack_into("<q", self._map, self._NOW_OFFSET, moved)
        return self.now()

    def set(self, when: dt.datetime) -> None:
        """Jump to ``when``, which must not be in this clock's past."""
        if when.tzinfo is None:
            raise ValueError("SharedClock.set needs a timezone-aware time")
        self.advance((_micros(when) - self._now_us()) / 1_000_000)

    def close(self) -> None:
        self._map.close()


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(when: dt.datetime) -> int:
    return (when.astimezone(dt.UTC) - _EPOCH) // dt.timedelta(microseconds=1)
