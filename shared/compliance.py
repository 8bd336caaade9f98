"""When the law lets a lead be called: calling hours and frequency caps.

Pure functions over plain values. ``rules_for`` says which hours and caps the
law sets for a lead, ``callable_window`` finds the next stretch of time that
is inside every set of hours in every zone the lead may be in, and
``cap_free_at`` finds when the caps allow one more call.

The rules are telemarketing (telephone solicitation) rules. Redial cannot tell
a sales call from any other kind, so every call is held to them; the queue
uses them for calls and nurture for text messages, which the federal rule and
several state laws (Florida's among them) treat as calls. None of
the statutes' exemptions (consent, an existing business relationship, debt
collection and so on) is used. This module is not legal advice: the table
records what was found in public sources, each entry says how sure that
finding is, and counsel should review it before it is relied on.

Known shortcomings:

* Public holidays are not modelled. Alabama, Louisiana, Rhode Island, Utah and
  Pennsylvania (which has no entry, as its hours match the federal ones) ban
  solicitation on holidays, and Louisiana bans it while a state of emergency
  is declared. Whoever schedules calls must close those days separately.
* Caps that a statute counts per subject matter (Florida, Oklahoma, Maryland)
  are counted over every call to the lead, which is stricter.
* Only US states are tabled. A lead in another country gets the US federal
  hours, which can be laxer than that country's own law (Canada's are).
  A US lead whose state is unknown gets the federal hours only.
* A calling window is assumed to contain at most one change of UTC offset,
  which holds for every zone in the IANA database.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

#: A span of UTC time as microseconds since the Unix epoch, end exclusive.
Interval = tuple[int, int]

_SECOND = 1_000_000
_DAY = 86_400 * _SECOND
_ONE_MICROSECOND = dt.timedelta(microseconds=1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_ORDINAL = _NAIVE_EPOCH.toordinal()
_ROLLING = dt.timedelta(hours=24)

_EVERY_DAY = frozenset(range(1, 8))
_MONDAY_TO_FRIDAY = frozenset(range(1, 6))
_MONDAY_TO_SATURDAY = frozenset(range(1, 7))
_SATURDAY = frozenset({6})
_SUNDAY = frozenset({7})


@dataclass(frozen=True)
class CallingHours:
    """Calls allowed from start to end (local time, end exclusive) on ISO weekdays
    `days` (1=Mon..7=Sun).

    An end at or before the start means the window runs past midnight: it
    opens on a listed day and closes on the following one.
    """

    start: dt.time
    end: dt.time
    days: frozenset[int]

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("calling hours are wall-clock times without a zone")
        if not self.days <= _EVERY_DAY:
            raise ValueError("days are ISO weekdays, 1 (Monday) to 7 (Sunday)")


@dataclass(frozen=True)
class FrequencyCaps:
    """How many calls a lead may get; ``None`` leaves that count unlimited."""

    lifetime: int | None = None  # calls ever
    per_day: int | None = None  # calls per calendar day in the lead's local zone
    per_24h: int | None = None  # calls in any rolling 24 hours

    def stricter(self, other: FrequencyCaps) -> FrequencyCaps:
        """Both sets of caps at once: the lower of each limit either one sets."""
        return FrequencyCaps(
            lifetime=_lower(self.lifetime, other.lifetime),
            per_day=_lower(self.per_day, other.per_day),
            per_24h=_lower(self.per_24h, other.per_24h),
        )

    def rolling(self) -> FrequencyCaps:
        """The per-day and 24-hour caps only: a reached lifetime cap ends a
        lead rather than delaying it, so callers check it on its own."""
        return FrequencyCaps(per_day=self.per_day, per_24h=self.per_24h)


@dataclass(frozen=True)
class StateRule:
    """One state's telemarketing limits beyond the federal ones."""

    region: str  # "FL"
    # A weekday no window covers has no calls; an empty tuple = federal hours.
    hours: tuple[CallingHours, ...]
    caps: FrequencyCaps
    source: str  # the statute or regulation, e.g. "Fla. Stat. § 501.616(6)"
    note: str = ""


def _lower(first: int | None, second: int | None) -> int | None:
    if first is None:
        return second
    if second is None:
        return first
    return min(first, second)


def _hours(start: int, end: int, days: frozenset[int] = _EVERY_DAY) -> CallingHours:
    return CallingHours(dt.time(start), dt.time(end), days)


_UNCAPPED = FrequencyCaps()
_THREE_IN_24_HOURS = FrequencyCaps(per_24h=3)

#: 47 CFR § 64.1200(c)(1): no solicitation before 8 a.m. or after 9 p.m.
FEDERAL_HOURS: tuple[CallingHours, ...] = (_hours(8, 21),)

# Each entry's note says how far its source was checked: "confirmed" means the
# rule was read in the statute's text or in coverage of the enacting bill.
US_RULES: dict[str, StateRule] = {
    rule.region: rule
    for rule in (
        StateRule(
            "AL",
            (_hours(8, 20, _MONDAY_TO_SATURDAY),),
            _UNCAPPED,
            "Ala. Admin. Code r. 770-X-5-.17(1)(b)",
            "Confirmed in the rule's text, which is written for automated "
            "solicitation; held to every call. Sundays and holidays closed.",
        ),
        StateRule(
            "CT",
            (_hours(9, 20),),
            _UNCAPPED,
            "Conn. Gen. Stat. § 42-288a, as amended by P.A. 23-98 (SB 1058)",
            "Confirmed from coverage of the 2023 amendment, which moved the end "
            "from 9 p.m. to 8 p.m. from 2023-10-01; subsection not checked.",
        ),
        StateRule(
            "FL",
            (_hours(8, 20),),
            _THREE_IN_24_HOURS,
            "Fla. Stat. § 501.616(6)(a)-(b), as amended by ch. 2021-185 (SB 1120)",
            "Confirmed in the bill text. The cap counts calls on one subject "
            "from any number; it is held to every call to the lead.",
        ),
        StateRule(
            "KY",
            (_hours(10, 21),),
            _UNCAPPED,
            "KRS 367.46955",
            "Not confirmed in the statute's text: the 10 a.m. start agrees "
            "across several compliance charts, and the subsection is unchecked.",
        ),
        StateRule(
            "LA",
            (_hours(8, 20, _MONDAY_TO_SATURDAY),),
            _UNCAPPED,
            "La. PSC General Order R-29617, under La. R.S. 45:844.11 et seq.",
            "Not confirmed in the order's text; hours and the Sunday ban from "
            "compliance charts. Holidays and emergencies (R.S. 45:844.31) close.",
        ),
        StateRule(
            "MA",
            (_hours(8, 20),),
            _UNCAPPED,
            "201 CMR 12.02(2); M.G.L. c. 159C",
            "Confirmed in the regulation's text.",
        ),
        StateRule(
            "MD",
            (_hours(8, 20),),
            _THREE_IN_24_HOURS,
            "Md. Code, Com. Law § 14-4503 (Stop the Spam Calls Act of 2023)",
            "Hours and cap confirmed from coverage of the Act; the section "
            "number is unchecked. The cap (one subject) is held to every call.",
        ),
        StateRule(
            "MN",
            (_hours(9, 21),),
            _UNCAPPED,
            "Minn. Stat. § 325E.27",
            "Not confirmed in the statute's text; hours from compliance charts. "
            "The section governs automated dialing; held to every call.",
        ),
        StateRule(
            "MS",
            (_hours(9, 20, _MONDAY_TO_SATURDAY),),
            _UNCAPPED,
            "Miss. Code Ann. § 77-3-723(1); § 77-3-603(a)",
            "Confirmed: 8 a.m. to 8 p.m. Central Standard Time, no Sundays. "
            "Only 09:00-20:00 local meets that in daylight time and in winter.",
        ),
        StateRule(
            "NM",
            (_hours(9, 21),),
            _UNCAPPED,
            "N.M. Stat. Ann. § 57-12-22(B)(5)",
            "Confirmed in the statute's text.",
        ),
        StateRule(
            "NV",
            (_hours(9, 20),),
            _UNCAPPED,
            "NRS 597.814(2)(a)",
            "The 9 a.m. start is confirmed for automated dialing; the 8 p.m. end "
            "is from compliance charts only and is the stricter reading.",
        ),
        StateRule(
            "OK",
            (_hours(8, 20),),
            _THREE_IN_24_HOURS,
            "15 O.S. § 775C.4 (Telephone Solicitation Act of 2022)",
            "Confirmed from coverage of the Act. The cap counts calls on one "
            "subject; it is held to every call to the lead.",
        ),
        StateRule(
            "RI",
            (_hours(9, 18, _MONDAY_TO_FRIDAY), _hours(10, 17, _SATURDAY)),
            _UNCAPPED,
            "R.I. Gen. Laws §§ 5-61-2, 5-61-3.6",
            "Confirmed in the statute's text. Sundays and holidays closed.",
        ),
        StateRule(
            "TX",
            (_hours(9, 21, _MONDAY_TO_SATURDAY), _hours(12, 21, _SUNDAY)),
            _UNCAPPED,
            "Tex. Bus. & Com. Code § 301.051",
            "Not confirmed in the statute's text; the noon Sunday start and the "
            "9 a.m. start agree across compliance references.",
        ),
        StateRule(
            "UT",
            (_hours(8, 21, _MONDAY_TO_SATURDAY),),
            _UNCAPPED,
            "Utah Code § 13-25a-103(3)",
            "Confirmed in the statute's text. Sundays and holidays closed "
            "unless the consumer consented.",
        ),
        StateRule(
            "WA",
            (_hours(8, 20),),
            _UNCAPPED,
            "RCW 80.36.390; RCW 19.158.040(2)",
            "The 8 p.m. end is confirmed in RCW 19.158.040(2).",
        ),
    )
}


def rules_for(
    country: str | None, region: str | None
) -> tuple[tuple[CallingHours, ...], FrequencyCaps, StateRule | None]:
    """The legal windows (federal + state for US leads; a lead with unknown/no
    country gets the federal US hours as the conservative default) and the
    state's caps.

    The windows come back as one set already narrowed to both laws, so it is
    a single hour set for ``callable_window``. Codes are ISO 3166 ("US") and
    USPS ("FL"), in any case.
    """
    rule = _state_rule(country, region)
    if rule is None:
        return FEDERAL_HOURS, _UNCAPPED, None
    return _LEGAL_HOURS[rule.region], rule.caps, rule


def _state_rule(country: str | None, region: str | None) -> StateRule | None:
    if country is None or region is None:
        return None
    if country.strip().upper() not in {"US", "USA"}:
        return None
    return US_RULES.get(region.strip().upper())


def _within(
    hours: Iterable[CallingHours], bounds: Iterable[CallingHours]
) -> tuple[CallingHours, ...]:
    """The windows where both `hours` and `bounds` allow calls (same-day only)."""
    both: list[CallingHours] = []
    for window in hours:
        for bound in bounds:
            if window.end <= window.start or bound.end <= bound.start:
                raise ValueError("only windows that close before midnight combine")
            start, end = max(window.start, bound.start), min(window.end, bound.end)
            days = window.days & bound.days
            if start < end and days:
                both.append(CallingHours(start, end, days))
    return tuple(both)


_LEGAL_HOURS = {
    code: _within(rule.hours, FEDERAL_HOURS) if rule.hours else FEDERAL_HOURS
    for code, rule in US_RULES.items()
}


def callable_window(
    at: dt.datetime,
    zones: Sequence[str],
    *hour_sets: Sequence[CallingHours],
    horizon_days: int = 14,
) -> tuple[dt.datetime, dt.datetime] | None:
    """The first interval [start, end) with end > at during which, in EVERY zone in
    `zones` (IANA names), the local time is inside at least one CallingHours of
    EACH hour set. start = max(at, window opening).

    None when no such interval opens within `horizon_days` of `at`. `at` must
    be timezone-aware; both results are in UTC. Around a DST change the
    interval holds only instants whose local clock reading is inside the
    hours, so a spring-forward gap shortens it and a fall-back hour can split
    it. An end that would lie past the horizon may be cut short. Raises
    ValueError when no zone or no hour set is given, and ZoneInfoNotFoundError
    for an unknown zone name.
    """
    now = _microseconds(at)
    zones_key, sets_key = _cache_keys(zones, hour_sets)
    limit = now + horizon_days * _DAY
    day = now // _DAY
    while day * _DAY < limit:
        starts, ends = _pieces_covering_day(zones_key, sets_key, day)
        index = bisect.bisect_right(ends, now)
        # A piece that only starts after this day may not be the first one:
        # windows opening on later local dates were not looked at yet.
        if index < len(ends) and starts[index] < (day + 1) * _DAY:
            start = max(now, starts[index])
            if start >= limit:
                return None
            end = ends[index]
            if end >= (day + 1) * _DAY:
                end = _true_close(zones_key, sets_key, end, limit)
            return _utc(start), _utc(end)
        day += 1
    return None


def cap_free_at(
    at: dt.datetime,
    calls: Sequence[dt.datetime],
    caps: FrequencyCaps,
    zone: str,
) -> dt.datetime | None:
    """Earliest instant >= at at which ONE more call would respect every cap,
    given the times of the calls already made (any order).

    per_day counts calendar days in `zone`; per_24h is rolling, so a call at
    t frees its slot at t + 24h. None when the lifetime cap is reached, or a
    cap is zero (never again). Calls later than `at` are treated as if `at`
    were the latest of them, which can only make the answer later. The result
    is in UTC.
    """
    _require_aware(at)
    made = sorted(calls)
    if made and made[-1] > at:
        at = made[-1]
    if _never_again(caps, len(made)):
        return None
    rolling_free = _rolling_free(at, made, caps.per_24h)
    day_free = _day_free(at, made, caps.per_day, _zone(zone))
    return max(at, rolling_free, day_free).astimezone(dt.UTC)


def _never_again(caps: FrequencyCaps, calls_made: int) -> bool:
    if caps.lifetime is not None and calls_made >= caps.lifetime:
        return True
    return caps.per_day == 0 or caps.per_24h == 0


def _rolling_free(
    at: dt.datetime, made: Sequence[dt.datetime], limit: int | None
) -> dt.datetime:
    if limit is None or len(made) < limit:
        return at
    # With `limit` calls still inside the last 24 hours, the next call waits
    # until the oldest of those leaves; older calls have left before it.
    return max(at, made[-limit] + _ROLLING)


def _day_free(
    at: dt.datetime, made: Sequence[dt.datetime], limit: int | None, zone: ZoneInfo
) -> dt.datetime:
    if limit is None:
        return at
    today = at.astimezone(zone).date()
    calls_today = sum(1 for call in made if call.astimezone(zone).date() == today)
    if calls_today < limit:
        return at
    tomorrow = today.toordinal() + 1 - _EPOCH_ORDINAL
    first_instant, _ = _wall_to_utc(zone, tomorrow * _DAY, (tomorrow + 1) * _DAY)[0]
    return _utc(first_instant)


def _cache_keys(
    zones: Sequence[str], hour_sets: Sequence[Sequence[CallingHours]]
) -> tuple[tuple[str, ...], tuple[tuple[CallingHours, ...], ...]]:
    zones_key = (zones,) if isinstance(zones, str) else tuple(zones)
    sets_key = tuple(tuple(hours) for hours in hour_sets)
    if not zones_key:
        raise ValueError("a calling window needs at least one zone")
    if not sets_key:
        raise ValueError("a calling window needs at least one set of hours")
    return zones_key, sets_key


def _true_close(
    zones: tuple[str, ...],
    hour_sets: tuple[tuple[CallingHours, ...], ...],
    end: int,
    limit: int,
) -> int:
    """Follow a window that reaches past its day to where it really closes."""
    while end < limit:
        starts, ends = _pieces_covering_day(zones, hour_sets, end // _DAY)
        index = bisect.bisect_right(ends, end)
        if index == len(ends) or starts[index] > end:
            return end
        end = ends[index]
    return end


@functools.lru_cache(maxsize=16_384)
def _pieces_covering_day(
    zones: tuple[str, ...],
    hour_sets: tuple[tuple[CallingHours, ...], ...],
    day: int,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where every zone and every hour set allows calls, as (starts, ends).

    Complete for UTC day number `day`; pieces reaching beyond it are right
    but may close later than they show.
    """
    allowed: tuple[Interval, ...] | None = None
    for name in zones:
        # One local date either side keeps windows that run over midnight.
        first = _local_ordinal(name, day * _DAY) - 1
        last = _local_ordinal(name, (day + 1) * _DAY - 1) + 1
        for hours in hour_sets:
            windows = _merge(
                window
                for ordinal in range(first, last + 1)
                for window in _windows_opening_on(name, ordinal, hours)
            )
            allowed = windows if allowed is None else _intersect(allowed, windows)
    pieces = allowed or ()
    return tuple(start for start, _ in pieces), tuple(end for _, end in pieces)


@functools.lru_cache(maxsize=65_536)
def _windows_opening_on(
    zone_name: str, ordinal: int, hours: tuple[CallingHours, ...]
) -> tuple[Interval, ...]:
    """The UTC spans of the windows in `hours` that open on one local date."""
    weekday = dt.date.fromordinal(ordinal).isoweekday()
    midnight = (ordinal - _EPOCH_ORDINAL) * _DAY
    zone = _zone(zone_name)
    spans: list[Interval] = []
    for window in hours:
        if weekday not in window.days:
            continue
        opens = midnight + _time_of_day(window.start)
        closes = midnight + _time_of_day(window.end)
        if closes <= opens:
            closes += _DAY
        spans.extend(_wall_to_utc(zone, opens, closes))
    return _merge(spans)


def _wall_to_utc(zone: ZoneInfo, opens: int, closes: int) -> tuple[Interval, ...]:
    """The UTC instants whose local clock in `zone` reads within [opens, closes).

    Both bounds are wall-clock readings as microseconds since 1970-01-01.
    The clock runs at one offset before a DST change and another after it;
    each side gives one span, so a fall-back hour inside the window yields two
    and a spring-forward gap yields none for the times it skips.
    """
    before = _offset_of_reading(zone, opens, fold=0)
    after = _offset_of_reading(zone, closes, fold=1)
    if before == after:
        return ((opens - before, closes - before),)
    change = _offset_change(
        zone, opens - max(before, after), closes - min(before, after), after
    )
    spans = (
        (opens - before, min(change, closes - before)),
        (max(change, opens - after), closes - after),
    )
    return tuple(span for span in spans if span[0] < span[1])


def _offset_change(zone: ZoneInfo, earliest: int, latest: int, after: int) -> int:
    """The instant in (earliest, latest] from which `zone` keeps offset `after`."""
    # Offsets change on whole seconds, so a search over seconds is exact.
    low, high = earliest // _SECOND, -(-latest // _SECOND)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle * _SECOND) == after:
            high = middle
        else:
            low = middle
    return high * _SECOND


def _offset_of_reading(zone: ZoneInfo, reading: int, fold: int) -> int:
    local = _NAIVE_EPOCH + dt.timedelta(microseconds=reading)
    offset = local.replace(tzinfo=zone, fold=fold).utcoffset()
    return (offset or dt.timedelta()) // _ONE_MICROSECOND


def _offset_at(zone: ZoneInfo, instant: int) -> int:
    offset = _utc(instant).astimezone(zone).utcoffset()
    return (offset or dt.timedelta()) // _ONE_MICROSECOND


def _merge(spans: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted spans with overlapping and touching ones joined."""
    merged: list[Interval] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


def _intersect(
    first: Sequence[Interval], second: Sequence[Interval]
) -> tuple[Interval, ...]:
    """The time covered by both sorted, merged span lists."""
    both: list[Interval] = []
    i = j = 0
    while i < len(first) and j < len(second):
        start = max(first[i][0], second[j][0])
        end = min(first[i][1], second[j][1])
        if start < end:
            both.append((start, end))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return tuple(both)


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_ordinal(zone_name: str, instant: int) -> int:
    return _utc(instant).astimezone(_zone(zone_name)).toordinal()


def _time_of_day(moment: dt.time) -> int:
    seconds = (moment.hour * 60 + moment.minute) * 60 + moment.second
    return seconds * _SECOND + moment.microsecond


def _require_aware(moment: dt.datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times must be timezone-aware")


def _microseconds(moment: dt.datetime) -> int:
    _require_aware(moment)
    return (moment - _EPOCH) // _ONE_MICROSECOND


def _utc(instant: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=instant)
