"""When the law lets a lead be called: hours per state, windows across zones and
DST changes, and frequency caps.

Pure logic, no database. The properties check the window search and the cap
arithmetic against a plain reading of each lead's local clock.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.compliance import (
    FEDERAL_HOURS,
    US_RULES,
    CallingHours,
    FrequencyCaps,
    callable_window,
    cap_free_at,
    rules_for,
)

NEW_YORK = ZoneInfo("America/New_York")
CHICAGO = ZoneInfo("America/Chicago")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
EVERY_DAY = frozenset(range(1, 8))
HOUR = dt.timedelta(hours=1)
PROPERTIES = settings(max_examples=150, deadline=None, database=None)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def daily(start: dt.time, end: dt.time) -> tuple[CallingHours, ...]:
    return (CallingHours(start, end, EVERY_DAY),)


def open_in(hours: tuple[CallingHours, ...], local: dt.datetime) -> bool:
    """Whether a local clock reading falls inside any of `hours`."""
    reading = local.replace(tzinfo=None)
    for window in hours:
        if window.start < window.end:
            if reading.isoweekday() in window.days and (
                window.start <= reading.time() < window.end
            ):
                return True
            continue
        yesterday = (reading - dt.timedelta(days=1)).isoweekday()
        if reading.isoweekday() in window.days and reading.time() >= window.start:
            return True
        if yesterday in window.days and reading.time() < window.end:
            return True
    return False


def open_everywhere(
    instant: dt.datetime, zones: list[str], hour_sets: list[tuple[CallingHours, ...]]
) -> bool:
    return all(
        open_in(hours, instant.astimezone(ZoneInfo(zone)))
        for zone in zones
        for hours in hour_sets
    )


# Legal tables


def test_florida_lead_is_not_called_at_half_past_eight_in_the_evening() -> None:
    hours, caps, rule = rules_for("US", "FL")
    evening = dt.datetime(2026, 1, 5, 20, 30, tzinfo=NEW_YORK)

    window = callable_window(evening, ["America/New_York"], hours)

    assert rule is not None
    assert caps.per_24h == 3
    assert window is not None
    start, end = window
    assert start == dt.datetime(2026, 1, 6, 8, 0, tzinfo=NEW_YORK)
    assert end == dt.datetime(2026, 1, 6, 20, 0, tzinfo=NEW_YORK)


def test_texas_sunday_morning_is_closed_until_noon() -> None:
    hours, _, _ = rules_for("US", "TX")
    sunday_morning = dt.datetime(2026, 3, 15, 10, 0, tzinfo=CHICAGO)

    window = callable_window(sunday_morning, ["America/Chicago"], hours)

    assert window is not None
    assert window[0] == dt.datetime(2026, 3, 15, 12, 0, tzinfo=CHICAGO)


def test_alabama_has_no_calls_on_sunday() -> None:
    hours, _, _ = rules_for("US", "AL")
    sunday = dt.datetime(2026, 3, 15, 9, 0, tzinfo=CHICAGO)

    window = callable_window(sunday, ["America/Chicago"], hours)

    assert window is not None
    assert window[0] == dt.datetime(2026, 3, 16, 8, 0, tzinfo=CHICAGO)


def test_unknown_country_gets_the_federal_hours_and_no_caps() -> None:
    assert rules_for(None, None) == (FEDERAL_HOURS, FrequencyCaps(), None)
    assert rules_for(None, "FL") == (FEDERAL_HOURS, FrequencyCaps(), None)


def test_state_without_stricter_rules_gets_the_federal_hours() -> None:
    assert rules_for("US", "NY") == (FEDERAL_HOURS, FrequencyCaps(), None)


def test_codes_are_read_in_any_case_and_spacing() -> None:
    assert rules_for(" us ", "fl") == rules_for("US", "FL")


def test_every_state_rule_is_at_least_as_strict_as_federal_law() -> None:
    for code, rule in US_RULES.items():
        hours, _, found = rules_for("US", code)

        assert found is rule
        assert rule.source
        for window in hours:
            assert dt.time(8) <= window.start < window.end <= dt.time(21), code


def test_stricter_caps_take_the_lower_limit_and_keep_one_sided_ones() -> None:
    pool = FrequencyCaps(lifetime=10, per_day=2)
    law = FrequencyCaps(per_day=5, per_24h=3)

    assert pool.stricter(law) == FrequencyCaps(lifetime=10, per_day=2, per_24h=3)


# Calling windows


def test_window_open_now_starts_now() -> None:
    at = utc(2026, 1, 5, 15, 7, 3)

    assert callable_window(at, ["America/New_York"], FEDERAL_HOURS) == (
        at,
        utc(2026, 1, 6, 2, 0),
    )


def test_new_york_and_los_angeles_share_only_the_overlap() -> None:
    coasts = ["America/New_York", "America/Los_Angeles"]

    window = callable_window(utc(2026, 1, 5, 12), coasts, FEDERAL_HOURS)

    assert window is not None
    start, end = window
    assert start.astimezone(LOS_ANGELES).time() == dt.time(8)
    assert end.astimezone(NEW_YORK).time() == dt.time(21)
    assert (start, end) == (utc(2026, 1, 5, 16), utc(2026, 1, 6, 2))


def test_every_hour_set_must_hold_at_once() -> None:
    pool = (CallingHours(dt.time(7), dt.time(12), frozenset({1, 2, 3, 4, 5})),)
    law, _, _ = rules_for("US", "KY")

    window = callable_window(utc(2026, 1, 5, 11), ["America/New_York"], pool, law)

    assert window == (utc(2026, 1, 5, 15), utc(2026, 1, 5, 17))


def test_zones_whose_windows_never_overlap_give_none() -> None:
    mornings = daily(dt.time(9), dt.time(12))

    window = callable_window(
        utc(2026, 1, 5), ["Asia/Tokyo", "America/New_York"], mornings
    )

    assert window is None


def test_window_opening_after_the_horizon_gives_none() -> None:
    mondays = (CallingHours(dt.time(9), dt.time(17), frozenset({1})),)
    tuesday = utc(2026, 1, 6, 12)

    assert callable_window(tuesday, ["UTC"], mondays, horizon_days=5) is None
    assert callable_window(tuesday, ["UTC"], mondays, horizon_days=7) == (
        utc(2026, 1, 12, 9),
        utc(2026, 1, 12, 17),
    )


def test_window_running_past_midnight_stays_open_across_it() -> None:
    nights = (CallingHours(dt.time(22), dt.time(2), frozenset({5})),)  # Friday

    window = callable_window(utc(2026, 1, 9, 23, 30), ["UTC"], nights)

    assert window == (utc(2026, 1, 9, 23, 30), utc(2026, 1, 10, 2))


def test_federal_hours_on_spring_forward_day_follow_the_new_offset() -> None:
    window = callable_window(utc(2026, 3, 8, 5), ["America/New_York"], FEDERAL_HOURS)

    assert window == (utc(2026, 3, 8, 12), utc(2026, 3, 9, 1))


def test_federal_hours_on_fall_back_day_follow_the_new_offset() -> None:
    window = callable_window(utc(2026, 11, 1, 5), ["America/New_York"], FEDERAL_HOURS)

    assert window == (utc(2026, 11, 1, 13), utc(2026, 11, 2, 2))


def test_hours_around_two_am_lose_the_skipped_hour_in_spring() -> None:
    small_hours = daily(dt.time(1), dt.time(3))

    window = callable_window(utc(2026, 3, 8, 4), ["America/New_York"], small_hours)

    # 01:00 EST to 01:59:59 EST; the clock then reads 03:00 EDT, past the end.
    assert window == (utc(2026, 3, 8, 6), utc(2026, 3, 8, 7))


def test_hours_opening_inside_the_spring_gap_open_when_the_clock_jumps() -> None:
    from_half_past_two = daily(dt.time(2, 30), dt.time(4))

    window = callable_window(
        utc(2026, 3, 8, 4), ["America/New_York"], from_half_past_two
    )

    assert window == (utc(2026, 3, 8, 7), utc(2026, 3, 8, 8))


def test_hours_around_two_am_gain_the_repeated_hour_in_autumn() -> None:
    small_hours = daily(dt.time(1), dt.time(3))

    window = callable_window(utc(2026, 11, 1, 4), ["America/New_York"], small_hours)

    # 01:00 EDT through the repeated hour to 03:00 EST: three real hours.
    assert window == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 8))


def test_hours_inside_the_repeated_hour_open_twice_in_autumn() -> None:
    quarter = daily(dt.time(1, 30), dt.time(1, 45))
    zones = ["America/New_York"]

    first = callable_window(utc(2026, 11, 1, 5, 40), zones, quarter)
    second = callable_window(utc(2026, 11, 1, 5, 50), zones, quarter)

    assert first == (utc(2026, 11, 1, 5, 40), utc(2026, 11, 1, 5, 45))
    assert second == (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 6, 45))


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        callable_window(dt.datetime(2026, 1, 5, 12), ["UTC"], FEDERAL_HOURS)


def test_window_without_zones_or_hours_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        callable_window(utc(2026, 1, 5), [], FEDERAL_HOURS)
    with pytest.raises(ValueError, match="hours"):
        callable_window(utc(2026, 1, 5), ["UTC"])


# Frequency caps


def test_per_day_cap_resets_at_local_midnight_not_utc_midnight() -> None:
    # 16:30 in Los Angeles is already the next day in UTC.
    call = dt.datetime(2026, 1, 5, 16, 30, tzinfo=LOS_ANGELES)
    at = dt.datetime(2026, 1, 5, 17, 0, tzinfo=LOS_ANGELES)

    free = cap_free_at(at, [call], FrequencyCaps(per_day=1), "America/Los_Angeles")

    assert free == dt.datetime(2026, 1, 6, 0, 0, tzinfo=LOS_ANGELES)


def test_rolling_cap_frees_a_slot_24_hours_after_the_oldest_call() -> None:
    calls = [utc(2026, 1, 5, 11), utc(2026, 1, 5, 9), utc(2026, 1, 5, 10)]

    free = cap_free_at(utc(2026, 1, 5, 12), calls, FrequencyCaps(per_24h=3), "UTC")

    assert free == utc(2026, 1, 6, 9)


def test_calls_below_every_cap_leave_the_lead_free_now() -> None:
    caps = FrequencyCaps(lifetime=5, per_day=2, per_24h=3)

    free = cap_free_at(utc(2026, 1, 5, 12), [utc(2026, 1, 5, 9)], caps, "UTC")

    assert free == utc(2026, 1, 5, 12)


def test_lifetime_cap_reached_means_never_again() -> None:
    calls = [utc(2026, 1, 1), utc(2026, 1, 2)]
    caps = FrequencyCaps(lifetime=2)

    assert cap_free_at(utc(2026, 1, 9), calls, caps, "UTC") is None


def test_per_day_cap_on_spring_forward_eve_frees_at_the_real_midnight() -> None:
    # Santiago moves its clocks at midnight; the first instant of 2026-09-06
    # there reads 01:00, and that is when a new day's count starts.
    zone = "America/Santiago"
    at = dt.datetime(2026, 9, 5, 20, 0, tzinfo=ZoneInfo(zone))

    free = cap_free_at(at, [at - HOUR], FrequencyCaps(per_day=1), zone)

    assert free is not None
    assert free.astimezone(ZoneInfo(zone)).date() == dt.date(2026, 9, 6)
    assert (free - dt.timedelta(seconds=1)).astimezone(
        ZoneInfo(zone)
    ).date() == dt.date(2026, 9, 5)


# Properties

ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "America/Phoenix",
    "America/St_Johns",
    "America/Santiago",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "UTC",
]
QUARTER = dt.timedelta(minutes=15)
EPOCH = utc(1970, 1, 1)

quarter_hours = st.integers(0, 95).map(
    lambda quarter: dt.time(quarter // 4, quarter % 4 * 15)
)
windows = st.builds(
    CallingHours,
    start=quarter_hours,
    end=quarter_hours,
    days=st.frozensets(st.integers(1, 7), min_size=1),
)
hour_sets = st.lists(
    st.lists(windows, min_size=1, max_size=3).map(tuple), min_size=1, max_size=3
)
any_moment = st.datetimes(
    min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2027, 12, 31)
).map(lambda moment: moment.replace(tzinfo=dt.UTC))
#: Clock changes in the sampled zones (New York, London, Santiago), where
#: uniform sampling would rarely land.
CLOCK_CHANGES = [
    utc(2026, 3, 8, 7),
    utc(2026, 11, 1, 6),
    utc(2026, 3, 29, 1),
    utc(2026, 10, 25, 1),
    utc(2026, 4, 5, 3),
    utc(2026, 9, 6, 4),
]
near_a_change = st.builds(
    lambda change, seconds: change + dt.timedelta(seconds=seconds),
    st.sampled_from(CLOCK_CHANGES),
    st.integers(-2 * 86400, 86400),
)
moments = st.one_of(any_moment, near_a_change)


def quarters_between(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Every quarter-hour boundary in (start, end), where openness can change.

    Every zone sampled has offsets in whole quarter hours, and the windows
    open and close on quarter hours, so nothing changes between two marks.
    """
    first = EPOCH + ((start - EPOCH) // QUARTER + 1) * QUARTER
    marks = []
    while first < end:
        marks.append(first)
        first += QUARTER
    return marks


@PROPERTIES
@given(
    at=moments,
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=2, unique=True),
    sets=hour_sets,
    horizon=st.integers(1, 10),
)
def test_window_is_open_throughout_and_nothing_earlier_was_open(
    at: dt.datetime,
    zones: list[str],
    sets: list[tuple[CallingHours, ...]],
    horizon: int,
) -> None:
    limit = at + dt.timedelta(days=horizon)

    window = callable_window(at, zones, *sets, horizon_days=horizon)

    closed_until = limit if window is None else window[0]
    for instant in [at, *quarters_between(at, closed_until)]:
        if instant < closed_until:
            assert not open_everywhere(instant, zones, sets), instant
    if window is None:
        return
    start, end = window
    assert at <= start < end
    assert start < limit
    assert start.tzinfo is dt.UTC
    assert end.tzinfo is dt.UTC
    last = end - dt.timedelta(microseconds=1)
    inside = [start, *quarters_between(start, end), last]
    for instant in inside:
        assert open_everywhere(instant, zones, sets), instant
    if end < limit:
        assert not open_everywhere(end, zones, sets)


def respects(
    caps: FrequencyCaps, earlier: list[dt.datetime], call: dt.datetime, zone: str
) -> bool:
    """Whether `call`, after the `earlier` ones, keeps every cap (counted plainly)."""
    made = [*earlier, call]
    if caps.lifetime is not None and len(made) > caps.lifetime:
        return False
    if caps.per_24h is not None:
        recent = [other for other in made if call - dt.timedelta(hours=24) < other]
        if len(recent) > caps.per_24h:
            return False
    if caps.per_day is not None:
        local = ZoneInfo(zone)
        day = call.astimezone(local).date()
        same_day = [other for other in made if other.astimezone(local).date() == day]
        if len(same_day) > caps.per_day:
            return False
    return True


limits = st.one_of(st.none(), st.integers(1, 4))


@PROPERTIES
@given(
    at=moments,
    ages=st.lists(st.integers(0, 72 * 3600), max_size=8),
    caps=st.builds(FrequencyCaps, lifetime=limits, per_day=limits, per_24h=limits),
    zone=st.sampled_from(ZONES),
)
def test_cap_free_time_is_the_first_moment_a_call_keeps_every_cap(
    at: dt.datetime, ages: list[int], caps: FrequencyCaps, zone: str
) -> None:
    calls = [at - dt.timedelta(seconds=age) for age in ages]

    free = cap_free_at(at, calls, caps, zone)

    if free is None:
        assert caps.lifetime is not None
        assert len(calls) >= caps.lifetime
        return
    assert free >= at
    assert free.tzinfo is dt.UTC
    assert respects(caps, calls, free, zone)
    if free > at:
        assert not respects(caps, calls, free - dt.timedelta(seconds=1), zone)
