"""When a lead is next called: cadence, callbacks, caps and calling hours.

Pure logic, no database. The property test plays whole call histories through
``plan`` the way the service does (re-plan after every call, call at the time
the plan allows or later, end the lead at its target) and checks the history
against the pool's rules and the law read independently.
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Sequence
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.queue.scheduling import (
    CALLBACK,
    EFFECTS,
    NEVER_CALLED,
    PRIORITY_SLOT_SECONDS,
    RECENT_CALLS_KEPT,
    RETRY,
    LeadFacts,
    cadence_due,
    plan,
    planned_at,
    recent,
    slot_of,
)
from services.queue.schemas import PoolRules
from shared.compliance import CallingHours, rules_for
from shared.events import Disposition

PROPERTIES = settings(max_examples=200, deadline=None, database=None)
ROLLING = dt.timedelta(hours=24)
ARRIVAL = dt.datetime(2026, 12, 2, 16, 0, tzinfo=dt.UTC)  # 11:00 in New York


def facts(**fields: typing.Any) -> LeadFacts:
    values: dict[str, typing.Any] = {
        "attempts": 0,
        "queued_at": ARRIVAL,
        "last_call_at": None,
        "recent_calls": [],
        "phone_calls": [],
        "phone_lifetime_calls": 0,
        "timezones": ["America/New_York"],
        "country": "US",
        "region": None,
    }
    values.update(fields)
    return LeadFacts(**values)


# --- the cadence --------------------------------------------------------------


def test_gap_before_follows_the_cadence_then_repeats_its_last_gap() -> None:
    rules = PoolRules(cadence="0m 10m 1h")

    gaps = [rules.gap_before(attempt) for attempt in range(1, 7)]

    assert gaps == [0, 600, 3600, 3600, 3600, 3600]
    assert rules.gap_before(100) == 3600


def test_default_cadence_is_the_documented_one() -> None:
    rules = PoolRules()

    gaps = [rules.gap_before(attempt) for attempt in range(1, 10)]

    day = 86400
    assert gaps == [0, 600, 3600, 14400, day, 2 * day, 4 * day, 7 * day, 7 * day]


def test_first_gap_counts_from_arrival_and_later_ones_from_the_last_call() -> None:
    rules = PoolRules(cadence="5m 1h")
    last_call = ARRIVAL + dt.timedelta(hours=3)

    first = cadence_due(facts(), rules)
    third = cadence_due(facts(attempts=2, last_call_at=last_call), rules)

    assert first == ARRIVAL + dt.timedelta(minutes=5)
    assert third == last_call + dt.timedelta(hours=1)


def test_planned_at_is_the_cadence_followed_from_arrival_without_delay() -> None:
    rules = PoolRules(cadence="0m 10m 1h")
    late_call = ARRIVAL + dt.timedelta(days=3)

    planned = [
        planned_at(facts(attempts=attempts, last_call_at=late_call), rules)
        for attempts in range(5)
    ]

    # Attempt n+1 is planned at the sum of the first n+1 gaps, whenever the
    # calls really happened: that is what "behind cadence" is measured from.
    minutes = [0, 10, 70, 130, 190]
    assert planned == [ARRIVAL + dt.timedelta(minutes=m) for m in minutes]


# --- priority -----------------------------------------------------------------


def test_priority_classes_put_new_leads_then_callbacks_then_retries() -> None:
    rules = PoolRules(cadence="0m 10m")
    now = ARRIVAL + dt.timedelta(hours=1)
    called = ARRIVAL + dt.timedelta(minutes=5)
    callback = ARRIVAL + dt.timedelta(minutes=30)

    new = plan(facts(), rules, now)
    retry = plan(facts(attempts=1, last_call_at=called), rules, now)
    asked = plan(
        facts(attempts=1, last_call_at=called, callback_at=callback), rules, now
    )

    assert (new.priority_class, asked.priority_class, retry.priority_class) == (
        NEVER_CALLED,
        CALLBACK,
        RETRY,
    )
    assert NEVER_CALLED < CALLBACK < RETRY
    assert asked.planned_at == callback
    assert retry.planned_at == ARRIVAL + dt.timedelta(minutes=10)
    assert retry.planned_slot == slot_of(retry.planned_at)


def test_priority_slot_groups_planned_times_into_equal_slots() -> None:
    start = dt.datetime(2027, 1, 4, 15, 0, tzinfo=dt.UTC)
    width = dt.timedelta(seconds=PRIORITY_SLOT_SECONDS)

    assert slot_of(start) == slot_of(start + width - dt.timedelta(microseconds=1))
    assert slot_of(start + width) == slot_of(start) + 1


# --- why a lead waits ---------------------------------------------------------


def test_a_lead_inside_its_gap_waits_for_the_cadence() -> None:
    rules = PoolRules(cadence="0m 1h")
    called = ARRIVAL + dt.timedelta(minutes=1)

    planned = plan(facts(attempts=1, last_call_at=called), rules, called)

    assert (planned.state, planned.wait_reason) == ("waiting", "cadence")
    assert planned.due_at == called + dt.timedelta(hours=1)


def test_a_callback_later_than_the_cadence_sets_the_time() -> None:
    rules = PoolRules(cadence="0m 10m")
    callback = ARRIVAL + dt.timedelta(hours=2)

    planned = plan(
        facts(attempts=1, last_call_at=ARRIVAL, callback_at=callback), rules, ARRIVAL
    )

    assert (planned.state, planned.wait_reason) == ("waiting", "callback")
    assert planned.due_at == callback


def test_a_callback_earlier_than_the_cadence_still_waits_for_the_gap() -> None:
    rules = PoolRules(cadence="0m 1h")
    callback = ARRIVAL + dt.timedelta(minutes=5)

    planned = plan(
        facts(attempts=1, last_call_at=ARRIVAL, callback_at=callback), rules, ARRIVAL
    )

    assert planned.due_at == ARRIVAL + dt.timedelta(hours=1)
    assert planned.priority_class == CALLBACK


def test_a_florida_lead_called_three_times_waits_for_the_cap() -> None:
    rules = PoolRules(cadence="0m")
    calls = [ARRIVAL + dt.timedelta(hours=hour) for hour in range(3)]
    lead = facts(
        attempts=3,
        last_call_at=calls[-1],
        recent_calls=calls,
        phone_calls=calls,
        phone_lifetime_calls=3,
        region="FL",
    )

    planned = plan(lead, rules, calls[-1])

    assert (planned.state, planned.wait_reason) == ("waiting", "cap")
    assert planned.due_at == calls[0] + ROLLING


def test_a_lead_outside_its_hours_waits_for_the_opening() -> None:
    rules = PoolRules()
    night = dt.datetime(2026, 12, 3, 3, 0, tzinfo=dt.UTC)  # 22:00 in New York

    planned = plan(facts(queued_at=night), rules, night)

    assert (planned.state, planned.wait_reason) == ("waiting", "calling_hours")
    assert planned.due_at == dt.datetime(2026, 12, 3, 13, 0, tzinfo=dt.UTC)


def test_a_due_lead_inside_its_hours_is_ready_until_the_window_closes() -> None:
    planned = plan(facts(), PoolRules(), ARRIVAL)

    assert (planned.state, planned.wait_reason) == ("ready", None)
    assert planned.due_at == ARRIVAL
    assert planned.closes_at == dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.UTC)


def test_a_number_at_its_lifetime_cap_exhausts_the_lead() -> None:
    rules = PoolRules(caps={"lifetime": 2})

    planned = plan(facts(attempts=1, phone_lifetime_calls=2), rules, ARRIVAL)

    assert (planned.state, planned.wait_reason) == ("exhausted", "lifetime_cap")


def test_zones_whose_hours_never_overlap_make_the_lead_not_callable() -> None:
    rules = PoolRules(
        calling_hours={
            "weekdays": {"start": "08:00", "end": "10:00"},
            "saturday": None,
        }
    )
    lead = facts(timezones=["America/New_York", "Pacific/Honolulu"])

    planned = plan(lead, rules, ARRIVAL)

    assert (planned.state, planned.wait_reason) == ("not_callable", "no_window")


def test_recent_keeps_sorted_calls_of_the_last_fifty_hours() -> None:
    now = ARRIVAL + dt.timedelta(days=5)
    kept = [
        now - dt.timedelta(hours=1),
        now - RECENT_CALLS_KEPT + dt.timedelta(seconds=1),
    ]
    dropped = [now - RECENT_CALLS_KEPT, now - dt.timedelta(days=4)]

    assert recent([*kept, *dropped], now) == sorted(kept)


def test_every_disposition_has_an_effect_and_only_endings_end() -> None:
    endings = {name: effect.ends for name, effect in EFFECTS.items() if effect.ends}

    assert set(EFFECTS) == set(typing.get_args(Disposition))
    assert endings == {
        "appointment": "converted",
        "converted": "converted",
        "wrong_number": "invalid",
        "dnc": "opted_out",
    }
    assert [name for name, effect in EFFECTS.items() if effect.exclude_agent] == [
        "not_interested"
    ]


# --- whole histories, property-tested ----------------------------------------

ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
)
GAPS = (0, 60, 600, 3600, 4 * 3600, 86400, 2 * 86400)
CONTINUING = ("no_answer", "busy", "voicemail", "contacted", "not_interested")
ENDING = ("appointment", "converted", "wrong_number", "dnc")
#: US daylight-saving changes the histories are started near.
DST_CHANGES = tuple(
    dt.datetime(*day, 7, 0, tzinfo=dt.UTC)
    for day in ((2026, 11, 1), (2027, 3, 14), (2027, 11, 7), (2028, 3, 12))
)


@dataclass(frozen=True)
class Step:
    disposition: str
    #: How long after the lead fell due the call is made (agents are busy).
    lateness: dt.timedelta
    #: For a callback: how far after the call the lead asks to be called.
    callback_in: dt.timedelta


def _window(start: int, end: int) -> dict[str, str]:
    return {"start": f"{start:02d}:00", "end": f"{end:02d}:00"}


@st.composite
def pool_rules(draw: st.DrawFn) -> PoolRules:
    def maybe_window() -> dict[str, str] | None:
        if draw(st.booleans()):
            return None
        return _window(draw(st.integers(6, 12)), draw(st.integers(15, 23)))

    hours = {
        "weekdays": _window(draw(st.integers(6, 12)), draw(st.integers(15, 23))),
        "saturday": maybe_window(),
        "sunday": maybe_window(),
    }
    caps = {
        "lifetime": draw(st.none() | st.integers(2, 12)),
        "per_day": draw(st.none() | st.integers(1, 3)),
        "per_24h": draw(st.none() | st.integers(1, 4)),
    }
    return PoolRules(
        call_target=draw(st.integers(1, 10)),
        cadence=tuple(draw(st.lists(st.sampled_from(GAPS), min_size=1, max_size=6))),
        calling_hours=hours,
        caps=caps,
    )


steps = st.builds(
    Step,
    disposition=st.sampled_from(
        # Weighted by repetition: mostly calls that go on, some callbacks and
        # now and then one that ends the lead.
        CONTINUING * 3 + ("callback",) * 4 + ENDING
    ),
    lateness=st.one_of(
        st.just(dt.timedelta(0)),
        st.timedeltas(dt.timedelta(0), dt.timedelta(days=3)),
    ),
    callback_in=st.timedeltas(dt.timedelta(minutes=1), dt.timedelta(days=14)),
)

arrivals = st.one_of(
    st.datetimes(
        dt.datetime(2026, 1, 1), dt.datetime(2028, 12, 31), timezones=st.just(dt.UTC)
    ),
    st.builds(
        lambda change, offset: change + offset,
        st.sampled_from(DST_CHANGES),
        st.timedeltas(-dt.timedelta(days=3), dt.timedelta(days=2)),
    ),
)


def _open_in(hours: Sequence[CallingHours], instant: dt.datetime, zone: str) -> bool:
    """Whether the lead's local clock at ``instant`` reads inside ``hours``."""
    local = instant.astimezone(ZoneInfo(zone))
    return any(
        local.isoweekday() in window.days
        and window.start <= local.time().replace(tzinfo=None) < window.end
        for window in hours
    )


def _callable_at(
    instant: dt.datetime, zones: Sequence[str], rules: PoolRules, region: str | None
) -> bool:
    legal_hours, _, _ = rules_for("US", region)
    pool_hours = rules.calling_hours.as_calling_hours()
    return all(
        _open_in(pool_hours, instant, zone) and _open_in(legal_hours, instant, zone)
        for zone in zones
    )


def _simulate(
    rules: PoolRules,
    zones: list[str],
    region: str | None,
    arrival: dt.datetime,
    history: list[Step],
) -> tuple[list[dt.datetime], list[dt.datetime]]:
    """Plays the history as the service would; returns the call times and
    every due time a plan gave."""
    lead = facts(queued_at=arrival, timezones=zones, region=region)
    now, calls, due_times = arrival, [], []
    for step in history:
        planned = plan(lead, rules, now)
        if planned.state in ("exhausted", "not_callable"):
            break
        assert planned.due_at >= now
        assert (planned.state == "ready") == (planned.due_at <= now)
        # An agent takes it when it falls due, or later; a lead whose window
        # closed meanwhile is re-planned and taken at its next opening.
        taken = plan(lead, rules, planned.due_at + step.lateness)
        if taken.state in ("exhausted", "not_callable"):
            break
        due_times += [planned.due_at, taken.due_at]
        now = taken.due_at
        calls.append(now)
        attempts = lead.attempts + 1
        kept = recent(calls, now)
        lead = replace(
            lead,
            attempts=attempts,
            last_call_at=now,
            recent_calls=kept,
            phone_calls=kept,
            phone_lifetime_calls=attempts,
            callback_at=(
                now + step.callback_in if step.disposition == "callback" else None
            ),
        )
        # The service's rule: the call that reaches the target exhausts the lead.
        if EFFECTS[step.disposition].ends or attempts >= rules.call_target:  # type: ignore[index]
            break
    return calls, due_times


def _expected_gap(rules: PoolRules, attempt: int) -> dt.timedelta:
    """The cadence read on its own: one gap per attempt, the last repeated."""
    gaps = rules.cadence
    return dt.timedelta(seconds=gaps[attempt - 1] if attempt <= len(gaps) else gaps[-1])


@PROPERTIES
@given(
    rules=pool_rules(),
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=2, unique=True),
    region=st.sampled_from((None, "FL", "TX", "RI", "MD")),
    arrival=arrivals,
    history=st.lists(steps, min_size=3, max_size=14),
)
def test_any_history_keeps_target_cadence_hours_and_caps(
    rules: PoolRules,
    zones: list[str],
    region: str | None,
    arrival: dt.datetime,
    history: list[Step],
) -> None:
    calls, due_times = _simulate(rules, zones, region, arrival, history)

    _, legal_caps, _ = rules_for("US", region)
    caps = rules.caps.as_frequency_caps().stricter(legal_caps)
    assert len(calls) <= rules.call_target
    if caps.lifetime is not None:
        assert len(calls) <= caps.lifetime
    previous = arrival
    for attempt, called in enumerate(calls, start=1):
        assert called - previous >= _expected_gap(rules, attempt), attempt
        previous = called
    for due in due_times:
        assert _callable_at(due, zones, rules, region), due
    for called in calls:
        in_24h = [other for other in calls if called - ROLLING < other <= called]
        if caps.per_24h is not None:
            assert len(in_24h) <= caps.per_24h, called
        if caps.per_day is not None:
            zone = ZoneInfo(zones[0])
            day = called.astimezone(zone).date()
            same_day = [c for c in calls if c.astimezone(zone).date() == day]
            assert len(same_day) <= caps.per_day, called


@PROPERTIES
@given(rules=pool_rules(), arrival=arrivals, history=st.lists(steps, max_size=14))
def test_a_lead_that_does_not_end_gets_exactly_its_target(
    rules: PoolRules, arrival: dt.datetime, history: list[Step]
) -> None:
    """With no ending disposition and no pool caps, a lead is called until its
    target and not once more."""
    rules = rules.model_copy(update={"caps": PoolRules().caps})
    going_on = [
        replace(step, disposition="no_answer")
        if EFFECTS[step.disposition].ends  # type: ignore[index]
        else step
        for step in history
    ]
    padding = Step("no_answer", dt.timedelta(0), dt.timedelta(minutes=1))
    going_on += [padding] * (rules.call_target + 1)

    calls, _ = _simulate(rules, ["America/New_York"], None, arrival, going_on)

    assert len(calls) == rules.call_target


@pytest.mark.parametrize("zone", ["America/New_York", "America/Los_Angeles"])
@pytest.mark.parametrize("change", DST_CHANGES)
def test_daily_cadence_across_a_dst_change_keeps_local_hours(
    zone: str, change: dt.datetime
) -> None:
    """A lead called every evening at 20:30 local keeps being called inside
    08:00-21:00 local on both sides of the change (24 hours later is 19:30 or
    21:30 local on the day of the change)."""
    rules = PoolRules(
        cadence="0m 1d",
        call_target=6,
        calling_hours={"sunday": _window(8, 21)},
    )
    local = ZoneInfo(zone)
    evening = dt.datetime.combine(
        change.astimezone(local).date() - dt.timedelta(days=2),
        dt.time(20, 30),
        tzinfo=local,
    ).astimezone(dt.UTC)
    history = [Step("no_answer", dt.timedelta(0), dt.timedelta(minutes=1))] * 6

    calls, due_times = _simulate(rules, [zone], None, evening, history)

    assert len(calls) == 6
    for due in due_times:
        assert _callable_at(due, [zone], rules, None), due
    readings = [call.astimezone(local).time() for call in calls]
    assert all(dt.time(8) <= reading < dt.time(21) for reading in readings)
