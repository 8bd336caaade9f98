"""Calling hours, caps and the do-not-call list, through the real queue.

Each test moves the queue's clock to the local time it needs and asks for
leads over HTTP, so the scheduler pass, the lease query and the stored plan
are all exercised together on the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import random
import urllib.parse
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from tests.conftest import unique_phone
from tests.queue.conftest import WEEKDAYS, Floor

NEW_YORK = "America/New_York"
LOS_ANGELES = "America/Los_Angeles"
CHICAGO = "America/Chicago"
SECOND = dt.timedelta(seconds=1)
EVERY_DAY_OPEN = {
    "weekdays": {"start": "08:00", "end": "21:00"},
    "saturday": {"start": "08:00", "end": "21:00"},
    "sunday": {"start": "08:00", "end": "21:00"},
}
MONDAY_TO_THURSDAY = frozenset(range(1, 5))


def utc(value: str | None) -> dt.datetime:
    assert value is not None
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC)


def local(day: dt.date, hour: int, minute: int, zone: str) -> dt.datetime:
    """``day`` at HH:MM on the wall clock in ``zone``, as UTC."""
    wall = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=ZoneInfo(zone))
    return wall.astimezone(dt.UTC)


def local_date(instant: dt.datetime, zone: str) -> dt.date:
    return instant.astimezone(ZoneInfo(zone)).date()


async def eligibility(floor: Floor, lead_id: uuid.UUID) -> dict[str, Any]:
    answer = await floor.api.get(f"/v1/leads/{lead_id}/eligibility")
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def blocked_until(floor: Floor, lead_id: uuid.UUID, code: str) -> dt.datetime:
    """When the eligibility reason ``code`` stops holding the lead."""
    document = await eligibility(floor, lead_id)
    reasons = {reason["code"]: reason for reason in document["reasons"]}
    assert code in reasons, document
    return utc(reasons[code]["until"])


async def next_due(floor: Floor, lead_id: uuid.UUID) -> dt.datetime:
    return utc((await floor.lead(lead_id))["next_due_at"])


async def nothing_for(floor: Floor, agent: str) -> None:
    answer = await floor.next_lead(agent)
    assert answer.status_code == 204, answer.text


async def call(floor: Floor, agent: str, disposition: str = "no_answer") -> str:
    """Leases the agent's next lead and records a call; returns the lead id."""
    answer = await floor.next_lead(agent)
    assert answer.status_code == 200, answer.text
    lease = answer.json()
    recorded = await floor.outcome(lease["lease_id"], disposition)
    assert recorded.status_code == 200, recorded.text
    lead_id: str = lease["lead"]["lead_id"]
    return lead_id


async def one_lead(floor: Floor, pool: str, **fields: Any) -> uuid.UUID:
    (lead_id,) = await floor.leads(pool, 1, **fields)
    return lead_id


def next_dst_change(after: dt.datetime, zone: str, *, forward: bool) -> dt.date:
    """The local date of the next change of UTC offset in ``zone`` (clocks
    going forward or back) whose eve starts after ``after``."""
    local_zone = ZoneInfo(zone)
    day = local_date(after, zone) + dt.timedelta(days=2)
    while True:
        before = dt.datetime.combine(day, dt.time(0), tzinfo=local_zone)
        later = dt.datetime.combine(day, dt.time(12), tzinfo=local_zone)
        offset, new_offset = before.utcoffset(), later.utcoffset()
        assert offset is not None
        assert new_offset is not None
        if new_offset != offset and (new_offset > offset) == forward:
            return day
        day += dt.timedelta(days=1)


# --- the window -----------------------------------------------------------


async def test_lead_before_its_local_opening_is_served_once_the_window_opens(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool])
    early = floor.to_local(LOS_ANGELES, 7, 30, weekdays=WEEKDAYS)
    opening = local(local_date(early, LOS_ANGELES), 8, 0, LOS_ANGELES)
    lead_id = await one_lead(floor, pool, timezone=LOS_ANGELES, timezones=[LOS_ANGELES])

    await nothing_for(floor, agent)
    assert await blocked_until(floor, lead_id, "outside_calling_hours") == opening
    assert await next_due(floor, lead_id) == opening
    floor.at(opening - SECOND)
    await nothing_for(floor, agent)
    floor.at(opening)
    answer = await floor.next_lead(agent)

    assert answer.status_code == 200, answer.text
    assert answer.json()["lead"]["lead_id"] == str(lead_id)


async def test_window_that_closes_on_a_ready_lead_replans_it_to_the_next_opening(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool])
    floor.to_local(NEW_YORK, 20, 59, weekdays=MONDAY_TO_THURSDAY)
    lead_id = await one_lead(floor, pool)
    assert (await floor.lead(lead_id))["state"] == "ready"
    closing = floor.to_local(NEW_YORK, 21, 0)

    await nothing_for(floor, agent)
    document = await floor.lead(lead_id)

    tomorrow = local_date(closing, NEW_YORK) + dt.timedelta(days=1)
    assert document["state"] == "waiting"
    assert utc(document["next_due_at"]) == local(tomorrow, 8, 0, NEW_YORK)
    assert document["attempts"] == 0


async def test_pool_closed_on_saturday_makes_no_saturday_calls(floor: Floor) -> None:
    closed = await floor.pool(calling_hours={"saturday": None})
    open_pool = await floor.pool()
    agent = await floor.agent([closed])
    control = await floor.agent([open_pool])
    saturday = floor.to_local(NEW_YORK, 11, 0, weekdays=frozenset({6}))
    lead_id = await one_lead(floor, closed)
    await one_lead(floor, open_pool)
    monday = local(
        local_date(saturday, NEW_YORK) + dt.timedelta(days=2), 8, 0, NEW_YORK
    )

    await nothing_for(floor, agent)
    assert (await floor.next_lead(control)).status_code == 200
    assert await blocked_until(floor, lead_id, "outside_calling_hours") == monday
    floor.to_local(NEW_YORK, 20, 59)
    await nothing_for(floor, agent)
    floor.at(monday)

    assert await call(floor, agent) == str(lead_id)


# --- daylight saving time ---------------------------------------------------


async def test_spring_forward_moves_the_utc_opening_an_hour_earlier(
    floor: Floor,
) -> None:
    """Before the change 08:00 in New York is 13:00 UTC, after it 12:00 UTC,
    and a daily call made at 20:30 on the eve would land at 21:30 local."""
    pool = await floor.pool(cadence="0m 1d", calling_hours=EVERY_DAY_OPEN)
    agent = await floor.agent([pool])
    sunday = next_dst_change(floor.clock.now(), NEW_YORK, forward=True)
    saturday, monday = sunday - dt.timedelta(days=1), sunday + dt.timedelta(days=1)

    floor.at(local(saturday, 7, 30, NEW_YORK))
    morning = await one_lead(floor, pool)
    assert await next_due(floor, morning) == local(saturday, 13, 0, "UTC")
    await nothing_for(floor, agent)
    floor.at(local(saturday, 13, 0, "UTC"))
    assert await call(floor, agent) == str(morning)
    assert await next_due(floor, morning) == local(sunday, 13, 0, "UTC")

    floor.at(local(saturday, 20, 30, NEW_YORK))
    evening = await one_lead(floor, pool)
    assert await call(floor, agent) == str(evening)
    # 24 hours on is 21:30 daylight time: closed, so the next morning.
    assert await next_due(floor, evening) == local(monday, 12, 0, "UTC")

    floor.at(local(sunday, 7, 30, NEW_YORK))
    early = await one_lead(floor, pool)
    assert await next_due(floor, early) == local(sunday, 12, 0, "UTC")
    await nothing_for(floor, agent)
    floor.at(local(sunday, 12, 0, "UTC"))
    assert await call(floor, agent) == str(early)
    await nothing_for(floor, agent)
    floor.at(local(sunday, 13, 0, "UTC"))
    assert await call(floor, agent) == str(morning)

    floor.at(local(monday, 12, 0, "UTC") - SECOND)
    await nothing_for(floor, agent)
    floor.at(local(monday, 12, 0, "UTC"))
    served = {await call(floor, agent), await call(floor, agent)}
    assert served == {str(evening), str(early)}


async def test_fall_back_moves_the_utc_opening_an_hour_later(floor: Floor) -> None:
    """Before the change 08:00 in New York is 12:00 UTC, after it 13:00 UTC;
    a daily call made at 08:00 on the eve would land at 07:00 local."""
    pool = await floor.pool(cadence="0m 1d", calling_hours=EVERY_DAY_OPEN)
    agent = await floor.agent([pool])
    sunday = next_dst_change(floor.clock.now(), NEW_YORK, forward=False)
    saturday, monday = sunday - dt.timedelta(days=1), sunday + dt.timedelta(days=1)

    floor.at(local(saturday, 7, 30, NEW_YORK))
    morning = await one_lead(floor, pool)
    assert await next_due(floor, morning) == local(saturday, 12, 0, "UTC")
    await nothing_for(floor, agent)
    floor.at(local(saturday, 12, 0, "UTC"))
    assert await call(floor, agent) == str(morning)
    # 24 hours on is 07:00 standard time: closed until 08:00 = 13:00 UTC.
    assert await next_due(floor, morning) == local(sunday, 13, 0, "UTC")

    floor.at(local(saturday, 20, 30, NEW_YORK))
    evening = await one_lead(floor, pool)
    assert await call(floor, agent) == str(evening)
    # 24 hours on is 19:30 standard time: open.
    assert await next_due(floor, evening) == local(monday, 0, 30, "UTC")
    floor.at(local(saturday, 21, 0, NEW_YORK))
    late = await one_lead(floor, pool)
    assert await next_due(floor, late) == local(sunday, 13, 0, "UTC")
    await nothing_for(floor, agent)

    floor.at(local(sunday, 13, 0, "UTC") - SECOND)
    await nothing_for(floor, agent)
    floor.at(local(sunday, 13, 0, "UTC"))
    served = {await call(floor, agent), await call(floor, agent)}
    assert served == {str(morning), str(late)}

    # 20:30 standard time is 01:30 UTC: still open after the change.
    floor.at(local(monday, 1, 30, "UTC"))
    assert await call(floor, agent) == str(evening)
    await nothing_for(floor, agent)


# --- state law --------------------------------------------------------------


async def test_florida_lead_gets_no_call_at_20_30_local(floor: Floor) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool])
    evening = floor.to_local(NEW_YORK, 20, 30, weekdays=MONDAY_TO_THURSDAY)
    florida = await one_lead(floor, pool, region="FL")
    tomorrow = local_date(evening, NEW_YORK) + dt.timedelta(days=1)

    await nothing_for(floor, agent)
    assert await blocked_until(floor, florida, "outside_calling_hours") == local(
        tomorrow, 8, 0, NEW_YORK
    )
    # The pool's and the federal hours alone would allow it.
    elsewhere = await one_lead(floor, pool, region="NY")
    assert await call(floor, agent) == str(elsewhere)
    await nothing_for(floor, agent)


async def test_florida_lead_gets_no_fourth_call_inside_24_hours(floor: Floor) -> None:
    # One agent makes every call, so it must not hand the lead on after three.
    pool = await floor.pool(cadence="0m", agent_attempt_limit=None)
    agent = await floor.agent([pool])
    lead_id = await one_lead(floor, pool, region="FL")
    first_call = floor.clock.now()

    for hour in range(3):
        floor.at(first_call + dt.timedelta(hours=hour))
        assert await call(floor, agent) == str(lead_id)
    await nothing_for(floor, agent)

    free = first_call + dt.timedelta(hours=24)
    assert await blocked_until(floor, lead_id, "cap_reached") == free
    assert await next_due(floor, lead_id) == free
    floor.at(free - SECOND)
    await nothing_for(floor, agent)
    floor.at(free)
    answer = await floor.next_lead(agent)
    assert answer.status_code == 200, answer.text
    assert answer.json()["attempt"] == 4


async def test_florida_cap_counts_every_lead_with_the_same_number(
    floor: Floor,
) -> None:
    pool = await floor.pool(cadence="0m", agent_attempt_limit=None)
    agent = await floor.agent([pool])
    phone = unique_phone()
    first = await one_lead(floor, pool, region="FL", phone=phone)
    first_call = floor.clock.now()
    for hour in range(3):
        floor.at(first_call + dt.timedelta(hours=hour))
        assert await call(floor, agent) == str(first)

    second = await one_lead(floor, pool, region="FL", phone=phone)
    await nothing_for(floor, agent)
    assert await blocked_until(floor, second, "cap_reached") == (
        first_call + dt.timedelta(hours=24)
    )
    floor.at(first_call + dt.timedelta(hours=24))
    assert await call(floor, agent) == str(second)  # never called: goes first
    # The number's calls at +1 h, +2 h and +24 h fill its next 24 hours.
    await nothing_for(floor, agent)
    floor.at(first_call + dt.timedelta(hours=25) - SECOND)
    await nothing_for(floor, agent)
    floor.at(first_call + dt.timedelta(hours=25))
    assert await call(floor, agent) == str(first)


async def test_pool_cap_per_number_counts_calls_to_leads_of_other_pools(
    floor: Floor,
) -> None:
    """A number called for a lead in one pool is not called again for a new
    lead in a pool that allows one call per 24 hours."""
    uncapped = await floor.pool()
    capped = await floor.pool(caps={"per_24h": 1})
    caller = await floor.agent([uncapped])
    agent = await floor.agent([capped])
    phone = unique_phone()
    await one_lead(floor, uncapped, phone=phone)
    called_at = floor.clock.now()
    await call(floor, caller)

    floor.at(called_at + dt.timedelta(minutes=30))
    later = await one_lead(floor, capped, phone=phone)
    await nothing_for(floor, agent)

    free = called_at + dt.timedelta(hours=24)
    assert await blocked_until(floor, later, "cap_reached") == free
    floor.at(free)
    assert await call(floor, agent) == str(later)


async def test_pool_cap_per_number_holds_a_lead_queued_before_the_call(
    floor: Floor,
) -> None:
    """Regression: a call blocked its number only by the calling lead's caps,
    so a lead with the same number already queued in a stricter pool kept its
    old plan and was leased anyway. A call now re-plans the number's other
    leads."""
    uncapped = await floor.pool()
    capped = await floor.pool(caps={"per_24h": 1})
    caller = await floor.agent([uncapped])
    agent = await floor.agent([capped])
    phone = unique_phone()
    await one_lead(floor, uncapped, phone=phone)
    waiting = await one_lead(floor, capped, phone=phone)
    await call(floor, caller)

    floor.at(floor.clock.now() + dt.timedelta(minutes=30))
    await nothing_for(floor, agent)
    assert (await floor.lead(waiting))["attempts"] == 0


async def test_lead_in_two_zones_is_called_only_when_both_are_open(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool])
    both = [NEW_YORK, LOS_ANGELES]
    morning = floor.to_local(NEW_YORK, 10, 30, weekdays=WEEKDAYS)  # 07:30 in LA
    lead_id = await one_lead(floor, pool, timezones=both)
    new_york_only = await one_lead(floor, pool)

    assert await call(floor, agent) == str(new_york_only)
    await nothing_for(floor, agent)
    assert await blocked_until(floor, lead_id, "outside_calling_hours") == local(
        local_date(morning, NEW_YORK), 8, 0, LOS_ANGELES
    )
    floor.to_local(NEW_YORK, 11, 30)
    assert await call(floor, agent) == str(lead_id)


async def test_lead_in_two_zones_is_not_called_after_the_first_one_closes(
    floor: Floor,
) -> None:
    pool = await floor.pool(cadence="0m")
    agent = await floor.agent([pool])
    evening = floor.to_local(NEW_YORK, 20, 30, weekdays=MONDAY_TO_THURSDAY)
    lead_id = await one_lead(floor, pool, timezones=[NEW_YORK, LOS_ANGELES])

    assert await call(floor, agent) == str(lead_id)
    floor.to_local(NEW_YORK, 21, 0)  # 18:00 in Los Angeles
    await nothing_for(floor, agent)

    tomorrow = local_date(evening, NEW_YORK) + dt.timedelta(days=1)
    assert await next_due(floor, lead_id) == local(tomorrow, 8, 0, LOS_ANGELES)


async def test_texas_lead_is_not_called_before_noon_on_sunday(floor: Floor) -> None:
    """Tex. Bus. & Com. Code § 301.051: 09:00-21:00, Sundays from 12:00."""
    pool = await floor.pool(calling_hours=EVERY_DAY_OPEN)
    agent = await floor.agent([pool])
    zone = {"timezone": CHICAGO, "timezones": [CHICAGO], "region": "TX"}
    saturday = floor.to_local(CHICAGO, 8, 30, weekdays=frozenset({6}))
    early = await one_lead(floor, pool, **zone)

    await nothing_for(floor, agent)
    assert await next_due(floor, early) == local(
        local_date(saturday, CHICAGO), 9, 0, CHICAGO
    )
    floor.to_local(CHICAGO, 9, 0)
    assert await call(floor, agent) == str(early)

    sunday = floor.to_local(CHICAGO, 11, 0, weekdays=frozenset({7}))
    texan = await one_lead(floor, pool, **zone)
    noon = local(local_date(sunday, CHICAGO), 12, 0, CHICAGO)
    # The pool's and the federal hours alone would allow a call now.
    other_pool = await floor.pool(calling_hours=EVERY_DAY_OPEN)
    other_agent = await floor.agent([other_pool])
    elsewhere = await one_lead(floor, other_pool, timezone=CHICAGO, timezones=[CHICAGO])

    assert await call(floor, other_agent) == str(elsewhere)
    await nothing_for(floor, agent)
    assert await blocked_until(floor, texan, "outside_calling_hours") == noon
    floor.at(noon - SECOND)
    await nothing_for(floor, agent)
    floor.at(noon)
    assert await call(floor, agent) == str(texan)


async def test_rhode_island_lead_keeps_short_saturdays_and_no_sundays(
    floor: Floor,
) -> None:
    """R.I. Gen. Laws § 5-61-3.6: weekdays 09:00-18:00, Saturdays 10:00-17:00,
    never on Sunday (even in a pool that calls on Sundays)."""
    pool = await floor.pool(cadence="0m", calling_hours=EVERY_DAY_OPEN)
    agent = await floor.agent([pool])
    saturday = floor.to_local(NEW_YORK, 9, 30, weekdays=frozenset({6}))
    lead_id = await one_lead(floor, pool, region="RI")
    day = local_date(saturday, NEW_YORK)

    await nothing_for(floor, agent)
    assert await next_due(floor, lead_id) == local(day, 10, 0, NEW_YORK)
    floor.at(local(day, 16, 59, NEW_YORK))
    assert await call(floor, agent) == str(lead_id)
    floor.at(local(day, 17, 0, NEW_YORK))
    await nothing_for(floor, agent)

    monday = day + dt.timedelta(days=2)
    assert await next_due(floor, lead_id) == local(monday, 9, 0, NEW_YORK)
    floor.at(local(day + dt.timedelta(days=1), 12, 0, NEW_YORK))
    await nothing_for(floor, agent)
    floor.at(local(monday, 9, 0, NEW_YORK))
    assert await call(floor, agent) == str(lead_id)


# --- do not call ------------------------------------------------------------


async def put_dnc(floor: Floor, phone: str) -> None:
    answer = await floor.api.put(f"/v1/dnc/{urllib.parse.quote(phone)}", json={})
    assert answer.status_code in (200, 201), answer.text


async def test_number_on_the_dnc_list_is_never_leased(floor: Floor) -> None:
    pool = await floor.pool(cadence="0m 1h")
    agent = await floor.agent([pool])
    phones = [unique_phone() for _ in range(4)]
    await put_dnc(floor, phones[0])
    arrived_listed = await one_lead(floor, pool, phone=phones[0])
    flagged_by_intake = await one_lead(floor, pool, phone=phones[1], dnc=True)
    callback = await one_lead(floor, pool, phone=phones[3])
    answer = await floor.next_lead(agent)
    assert answer.json()["lead"]["lead_id"] == str(callback)
    asked_for = floor.clock.now() + dt.timedelta(hours=1)
    recorded = await floor.outcome(
        answer.json()["lease_id"], "callback", callback_at=asked_for.isoformat()
    )
    assert recorded.status_code == 200, recorded.text
    listed_later = await one_lead(floor, pool, phone=phones[2])
    assert (await floor.lead(listed_later))["state"] == "ready"
    await put_dnc(floor, phones[2])
    await put_dnc(floor, phones[3])
    held = [arrived_listed, flagged_by_intake, listed_later, callback]

    await nothing_for(floor, agent)
    for lead_id in held:
        document = await eligibility(floor, lead_id)
        assert "on_dnc" in {reason["code"] for reason in document["reasons"]}
    floor.at(asked_for)  # the callback falls due for the agent who took it
    await nothing_for(floor, agent)
    floor.to_local(NEW_YORK, 11, 0, weekdays=WEEKDAYS)
    other = await floor.agent([pool])
    await nothing_for(floor, other)
    await nothing_for(floor, agent)

    unlisted = await floor.api.delete(f"/v1/dnc/{urllib.parse.quote(phones[2])}")
    assert unlisted.status_code == 204, unlisted.text
    assert await call(floor, other) == str(listed_later)
    await nothing_for(floor, agent)
    assert [(await floor.lead(lead_id))["attempts"] for lead_id in held] == [0, 0, 1, 1]


# --- cadence and target on the real database ---------------------------------

CADENCE = "0m 10m 1h 4h 1d"
GAPS = [dt.timedelta(0), *(dt.timedelta(minutes=m) for m in (10, 60, 240, 1440))]
CONTINUING = ["no_answer", "busy", "voicemail", "contacted", "not_interested"]


async def test_random_outcomes_never_exceed_target_or_undercut_cadence(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """A seeded run of outcomes, the clock moved to each lead's next due time;
    the calls table must show the target and the cadence were kept."""
    chance = random.Random(20261202)
    target = 6
    pool = await floor.pool(call_target=target, cadence=CADENCE)
    agents = [await floor.agent([pool]) for _ in range(3)]
    lead_ids = await floor.leads(pool, 5)

    for _ in range(60):
        queued = [
            document
            for document in [await floor.lead(lead_id) for lead_id in lead_ids]
            if document["next_due_at"] is not None
        ]
        if not queued:
            break
        due = min(utc(document["next_due_at"]) for document in queued)
        floor.at(max(due, floor.clock.now() + SECOND))
        lease = await _lease_for_anyone(floor, agents, pool)
        if lease is None:
            # A callback held for its agent, or every agent excluded: later.
            floor.at(floor.clock.now() + dt.timedelta(minutes=16))
            continue
        roll = chance.random()
        extra: dict[str, Any] = {}
        if roll < 0.06:
            disposition = chance.choice(["converted", "wrong_number", "dnc"])
        elif roll < 0.3:
            disposition = "callback"
            ahead = dt.timedelta(minutes=chance.randint(1, 3 * 24 * 60))
            extra["callback_at"] = (floor.clock.now() + ahead).isoformat()
        else:
            disposition = chance.choice(CONTINUING)
        recorded = await floor.outcome(lease["lease_id"], disposition, **extra)
        assert recorded.status_code == 200, recorded.text
    else:
        raise AssertionError("the leads did not finish in 60 rounds")

    rows = await qdb.fetch(
        "SELECT lead_id, attempt, called_at FROM calls WHERE lead_id = ANY($1::uuid[])"
        " ORDER BY lead_id, called_at",
        lead_ids,
    )
    calls: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for row in rows:
        calls.setdefault(row["lead_id"], []).append(row)
    assert sum(len(made) for made in calls.values()) >= len(lead_ids)
    for lead_id, made in calls.items():
        document = await floor.lead(lead_id)
        assert [row["attempt"] for row in made] == list(range(1, len(made) + 1))
        assert len(made) <= target
        if document["state"] == "exhausted":
            assert len(made) == target
        previous = utc(document["queued_at"])
        for row in made:
            gap = GAPS[min(row["attempt"], len(GAPS)) - 1]
            assert row["called_at"] - previous >= gap, (lead_id, row["attempt"])
            previous = row["called_at"]
            reading = row["called_at"].astimezone(ZoneInfo(NEW_YORK))
            assert reading.isoweekday() <= 6  # the pool does not call on Sundays
            assert 8 <= reading.hour < 21


async def _lease_for_anyone(
    floor: Floor, agents: list[str], pool: str
) -> dict[str, Any] | None:
    """The first agent who gets a lead; a new agent joins when all the others
    are excluded from the leads that are due."""
    for agent in [*agents, None]:
        if agent is None:
            agent = await floor.agent([pool])
            agents.append(agent)
        answer = await floor.next_lead(agent)
        if answer.status_code == 200:
            lease: dict[str, Any] = answer.json()
            return lease
        assert answer.status_code == 204, answer.text
    return None
