"""What the metrics API accepts: report windows, groupings and pages."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Literal, NoReturn

import orjson

from shared.errors import ValidationFailed

GroupBy = Literal["pool", "source", "agent", "team", "day"]
CohortGroupBy = Literal["pool", "source"]
#: Longest window a report accepts: a year of day counters.
MAX_WINDOW_DAYS = 366
_RELATIVE = re.compile(r"^([1-9]\d{0,2}|0)d$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: Days a report may name: wide enough for any real data, and far enough
#: from date's own limits that a window's end (a day later) always exists.
FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2199, 12, 31)


@dataclass(frozen=True)
class Window:
    """Calendar days ``first``…``last`` (inclusive) in the business zone."""

    first: dt.date
    last: dt.date
    zone: zoneinfo.ZoneInfo

    @property
    def since(self) -> dt.datetime:
        return dt.datetime.combine(self.first, dt.time(), self.zone)

    @property
    def until(self) -> dt.datetime:
        return dt.datetime.combine(
            self.last + dt.timedelta(days=1), dt.time(), self.zone
        )

    def described(self) -> dict[str, str]:
        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "timezone": self.zone.key,
        }


def parse_window(
    text: str, today: dt.date, zone: zoneinfo.ZoneInfo, field: str = "window"
) -> Window:
    """``Nd`` (the last N days, today included; 1d is today) or
    ``YYYY-MM-DD..YYYY-MM-DD`` (both days included)."""
    relative = _RELATIVE.match(text)
    if relative:
        days = int(relative.group(1))
        if not 1 <= days <= MAX_WINDOW_DAYS:
            _refuse(field, f"a window is 1 to {MAX_WINDOW_DAYS} days, not {days}")
        return Window(today - dt.timedelta(days=days - 1), today, zone)
    first_text, separator, last_text = text.partition("..")
    if not separator:
        _refuse(field, "expected 1d, 7d, 30d (any Nd) or YYYY-MM-DD..YYYY-MM-DD")
    first = parse_day(first_text, field)
    last = parse_day(last_text, field)
    if last < first:
        _refuse(field, f"the window ends ({last}) before it starts ({first})")
    if (last - first).days + 1 > MAX_WINDOW_DAYS:
        _refuse(field, f"a window is at most {MAX_WINDOW_DAYS} days")
    return Window(first, last, zone)


def parse_day(text: str, field: str = "day") -> dt.date:
    try:
        day = dt.date.fromisoformat(text) if _DATE.match(text) else None
    except ValueError:
        day = None
    if day is None:
        _refuse(field, f"{text!r} is not a date (YYYY-MM-DD)")
    if not FIRST_DAY <= day <= LAST_DAY:
        _refuse(field, f"{text} is outside {FIRST_DAY}..{LAST_DAY}")
    return day


#: The sort key of a below-target row: (penetration, −missing, lead id,
#: pool). The pool is part of it: a lead that changed pools during the day
#: has a row in each, with the same penetration possibly.
PageKey = tuple[float, int, uuid.UUID, str]


def encode_cursor(key: PageKey) -> str:
    penetration, missing, lead_id, pool = key
    raw = orjson.dumps([penetration, missing, str(lead_id), pool])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> PageKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        penetration, missing, lead_id, pool = orjson.loads(raw)
        if not isinstance(pool, str):
            raise TypeError("pool")
        key = float(penetration), int(missing), uuid.UUID(lead_id), pool
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        _refuse("cursor", "not a cursor this API returned")
    if not -(2**31) <= key[1] < 2**31:
        # The query binds it as an int; out of range it would fail there (500).
        _refuse("cursor", "not a cursor this API returned")
    return key


def _refuse(field: str, message: str) -> NoReturn:
    raise ValidationFailed(
        [{"field": field, "message": message}], f"invalid {field}: {message}"
    )
