"""Penetration figures of a scripted day, every one worked out by hand.

One pool, one source, target 4, cadence ``0 1h 4h 1d`` (slots at arrival,
+1 h, +5 h and +29 h). Ten leads arrive on the test's business day D (New
York); the reports are read at 23:00 that day. Agents: a and c are team-a,
b is team-b.

lead          queued  calls (local time, agent, disposition)  slots due    a  s  min
------------  ------  --------------------------------------  -----------  -  -  ---
capped        07:00   07:10 a no_answer, 08:10 a no_answer;   07 08        2  2  2
                      exhausted 08:11 (lifetime cap 2 < 4)
late          08:00   12:00 a no_answer, 16:00 c busy         08 09 13     2  3  2
on_time       09:00   09:02 a no_answer, 10:05 a voicemail,   09 10 14     3  3  3
                      14:10 a contacted; a duplicate 12:00
converted     09:30   09:31 a no_answer, 10:31 a appointment; 09:30 10:30  2  2  2
                      converted 10:32 (14:30 cancelled)
over_called   10:00   10:01 a no_answer, 10:20 a busy,        10 11 15     4  3  3
                      11:05 a voicemail, 15:30 b
                      not_interested; exhausted 15:31
never         11:00   none                                    11 12 16     0  3  0
opted_out     13:00   13:03 a dnc; opted out 13:04            13           1  1  1
second_agent  15:00   15:04 b no_answer, 16:02 b contacted    15 16 20     2  3  2
invalid       17:00   17:01 c wrong_number; invalid 17:02     17           1  1  1
dnc           22:58   none (the number is on the DNC list:    none         0  0  -
                      nothing of its round falls due)
                                                              total       17 21 16

Pool (= source = day) for D: nine leads with attempts due, penetration
16/21, uncapped 17/21; leads with a contact: on_time, converted,
over_called, opted_out, second_agent (5/9; a wrong number is no contact);
with a conversion: converted (1/9).

Speed to lead (s): capped 600, late 14400, on_time 120, converted 60,
over_called 60, opted_out 180, second_agent 240, invalid 60; never is
uncalled, and dnc (not to be called) is left out of speed to lead. Sorted
60 60 60 120 180 240 600 14400: p50 at position 3.5 = (120 + 180) / 2 = 150;
p90 at 6.3 = 600 + 0.3 x 13800 = 4740. Called within 300 s: 6 of the 9
arrivals.

The agent and team groups (the leads each called, with everyone's figures):

group      leads                                       own   a   s   min  ctc
---------  ------------------------------------------  ----  --  --  ---  ---
agent-a    capped late on_time converted over opted     12    14  14  13   4
agent-b    over_called second_agent                     3     6   6   5    2
agent-c    late invalid                                 2     3   4   3    0
team-a     a's and c's: 7 leads                         14    15  15  14   4
team-b     as agent-b                                   3     6   6   5    2

Speed per first-calling agent: a 60 60 120 180 600 14400 (p50 150, p90 at 4.5
= 7500, 4 within 300 s); b 240; c 60; team-a adds c's 60 to a's (p50 120, p90
at 5.4 = 600 + 0.4 x 13800 = 6120, 5 of 7 within); leads nobody called have
no first-calling agent, so no agent or team group.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

import httpx
import pytest

from services.metrics.folding import DISPOSITIONS, planned_attempts
from shared.clock import ManualClock
from shared.events import Envelope, LeadDuplicate, LeadReceived
from tests.conftest import Server
from tests.metrics.conftest import ZONE, Script

AGENT_A = ("agent-a", "team-a")
AGENT_B = ("agent-b", "team-b")
AGENT_C = ("agent-c", "team-a")
EXACT = 1e-12

# --- the scripted day ----------------------------------------------------------


def write_day(script: Script) -> dict[str, uuid.UUID]:
    """Writes the events of the module's table; returns the leads by story."""
    at = script.local
    leads: dict[str, uuid.UUID] = {}

    def call(
        name: str,
        time: tuple[int, int],
        disposition: str,
        attempt: int,
        worker: tuple[str, str] = AGENT_A,
    ) -> None:
        agent, team = worker
        script.call(
            leads[name], at(*time), disposition, attempt=attempt, agent=agent, team=team
        )

    leads["capped"] = script.lead(at(7))
    call("capped", (7, 10), "no_answer", 1)
    call("capped", (8, 10), "no_answer", 2)
    script.exhausted(leads["capped"], at(8, 11), attempts=2)

    leads["late"] = script.lead(at(8))
    call("late", (12, 0), "no_answer", 1)
    call("late", (16, 0), "busy", 2, AGENT_C)

    leads["on_time"] = script.lead(at(9))
    call("on_time", (9, 2), "no_answer", 1)
    call("on_time", (10, 5), "voicemail", 2)
    script.duplicate(leads["on_time"], at(12))
    call("on_time", (14, 10), "contacted", 3)

    leads["converted"] = script.lead(at(9, 30))
    call("converted", (9, 31), "no_answer", 1)
    call("converted", (10, 31), "appointment", 2)
    script.converted(leads["converted"], at(10, 32), attempt=2)

    leads["over_called"] = script.lead(at(10))
    call("over_called", (10, 1), "no_answer", 1)
    call("over_called", (10, 20), "busy", 2)
    call("over_called", (11, 5), "voicemail", 3)
    call("over_called", (15, 30), "not_interested", 4, AGENT_B)
    script.exhausted(leads["over_called"], at(15, 31), attempts=4)

    leads["never"] = script.lead(at(11))

    leads["opted_out"] = script.lead(at(13))
    call("opted_out", (13, 3), "dnc", 1)
    script.opted_out(leads["opted_out"], at(13, 4))

    leads["second_agent"] = script.lead(at(15))
    call("second_agent", (15, 4), "no_answer", 1, AGENT_B)
    call("second_agent", (16, 2), "contacted", 2, AGENT_B)

    leads["invalid"] = script.lead(at(17))
    call("invalid", (17, 1), "wrong_number", 1, AGENT_C)
    script.invalid(leads["invalid"], at(17, 2))

    leads["dnc"] = script.received(at(22, 58), dnc=True)
    script.queued(leads["dnc"], at(22, 58))
    return leads


async def apply_as_it_happened(script: Script) -> None:
    """Each event on its own, with the clock at its time, then 23:00."""
    events, script.events = script.events, []
    for envelope in sorted(events, key=lambda envelope: envelope.time):
        await script.at(envelope.time)
        await script.apply([envelope])
    await script.at(script.local(23))


def _from_intake(envelope: Envelope) -> bool:
    return isinstance(envelope.data, LeadReceived | LeadDuplicate)


async def apply_late_and_out_of_order(script: Script) -> None:
    """All at 23:00, in batches of five: the leads interleaved at random, and
    each lead's intake events (arrival, duplicate) after the queue's (its
    round, calls and end), as when intake's events reach the topic late.

    A round's slots are all counted as soon as it is folded, so an end that
    comes in a later batch has to take counted slots back out.
    """
    events, script.events = script.events, []
    by_lead: dict[str, list[Envelope]] = {}
    for envelope in events:
        by_lead.setdefault(envelope.subject, []).append(envelope)
    queues = [sorted(story, key=_from_intake) for story in by_lead.values()]
    shuffler = random.Random(20261202)
    ordered: list[Envelope] = []
    while queues:
        story = shuffler.choice(queues)
        ordered.append(story.pop(0))
        if not story:
            queues.remove(story)
    assert ordered != sorted(events, key=lambda envelope: envelope.time)

    await script.at(script.local(23))
    for start in range(0, len(ordered), 5):
        await script.apply(ordered[start : start + 5])


# --- what the reports must say -----------------------------------------------------

#: Per lead: attempts, slots due, contacts, conversions, state, speed to lead,
#: first contact and conversion attempt, round attempts, and the next slot
#: (attempt, local hour, minute, days after D) or None.
LEADS: dict[str, tuple[Any, ...]] = {
    "capped": (2, 2, 0, 0, "exhausted", 600.0, None, None, 2, None),
    "late": (2, 3, 0, 0, "open", 14400.0, None, None, 2, (4, 13, 0, 1)),
    "on_time": (3, 3, 1, 0, "open", 120.0, 3, None, 3, (4, 14, 0, 1)),
    "converted": (2, 2, 1, 1, "converted", 60.0, 2, 2, 2, None),
    "over_called": (4, 3, 1, 0, "exhausted", 60.0, 4, None, 4, None),
    "never": (0, 3, 0, 0, "open", None, None, None, 0, (4, 16, 0, 1)),
    "opted_out": (1, 1, 1, 0, "opted_out", 180.0, 1, None, 1, None),
    "second_agent": (2, 3, 1, 0, "open", 240.0, 2, None, 2, (4, 20, 0, 1)),
    "invalid": (1, 1, 0, 0, "invalid", 60.0, None, None, 1, None),
    "dnc": (0, 0, 0, 0, "open", None, None, None, 0, None),
}


def when(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


async def get(api: httpx.AsyncClient, path: str, **params: Any) -> Any:
    answer = await api.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def check_leads(
    api: httpx.AsyncClient, script: Script, leads: dict[str, uuid.UUID]
) -> None:
    for name, expected in LEADS.items():
        (attempts, due, contacts, conversions, state, seconds) = expected[:6]
        (first_contact, converted, round_attempts, upcoming) = expected[6:]
        figures = await get(api, f"/v1/leads/{leads[name]}/penetration")

        assert figures["pool"] == script.pool, name
        assert figures["source"] == script.source, name
        assert (figures["attempts"], figures["attempts_due"]) == (attempts, due), name
        assert figures["penetration"] == (min(attempts, due) / due if due else None)
        assert figures["uncapped_penetration"] == (attempts / due if due else None)
        assert figures["state"] == state, name
        assert figures["speed_to_lead_seconds"] == seconds, name
        assert figures["first_contact_attempt"] == first_contact, name
        assert figures["converted_attempt"] == converted, name
        assert figures["round"]["attempts"] == round_attempts, name
        assert figures["round"]["target_penetration"] == round_attempts / 4, name
        assert figures["days"] == (
            [
                {
                    "day": script.day.isoformat(),
                    "pool": script.pool,
                    "attempts": attempts,
                    "attempts_due": due,
                    "penetration": min(attempts, due) / due,
                    "contacts": contacts,
                    "conversions": conversions,
                }
            ]
            if due
            else []
        ), name
        if upcoming is None:
            assert figures["next_attempt_due"] is None, name
        else:
            attempt, hour, minute, day = upcoming
            assert figures["next_attempt_due"]["attempt"] == attempt, name
            assert when(figures["next_attempt_due"]["at"]) == script.local(
                hour, minute, day=day
            ), name


def calls(**counts: int) -> dict[str, Any]:
    """Attempts by disposition: ``counts``, every other one 0."""
    return {"attempts_by_disposition": dict.fromkeys(DISPOSITIONS, 0) | counts}


def speed(
    arrived: int,
    called: int,
    p50: float | None,
    p90: float | None,
    within: float | None,
) -> dict[str, Any]:
    return {
        "new_leads": arrived,
        "new_leads_called": called,
        "speed_to_lead_seconds": {
            "p50": p50,
            "p90": None if p90 is None else pytest.approx(p90, rel=EXACT),
        },
        "called_within_seconds": 300.0,
        "share_called_within": within,
    }


#: The pool's (source's, day's) figures for D.
WHOLE_DAY = {
    "leads": 9,
    "attempts": 17,
    "attempts_due": 21,
    "penetration": 16 / 21,
    "uncapped_penetration": 17 / 21,
    "contact_rate": 5 / 9,
    "conversion_rate": 1 / 9,
}
WHOLE_DAY |= calls(
    no_answer=7,
    busy=2,
    voicemail=2,
    contacted=2,
    appointment=1,
    not_interested=1,
    wrong_number=1,
    dnc=1,
)
WHOLE_DAY |= speed(9, 8, 150.0, 4740.0, 6 / 9)
TEAM_B = {
    "leads": 2,
    "attempts": 6,
    "attempts_due": 6,
    "penetration": 5 / 6,
    "uncapped_penetration": 1.0,
    "contact_rate": 1.0,
    "conversion_rate": 0.0,
    "own_attempts": 3,
} | calls(no_answer=1, contacted=1, not_interested=1)
TEAM_B |= speed(1, 1, 240.0, 240.0, 1.0)
AGENTS = [
    {
        "agent": "agent-a",
        "leads": 6,
        "attempts": 14,
        "attempts_due": 14,
        "penetration": 13 / 14,
        "uncapped_penetration": 1.0,
        "contact_rate": 4 / 6,
        "conversion_rate": 1 / 6,
        "own_attempts": 12,
    }
    | calls(no_answer=6, busy=1, voicemail=2, contacted=1, appointment=1, dnc=1)
    | speed(6, 6, 150.0, 7500.0, 4 / 6),
    {"agent": "agent-b"} | TEAM_B,
    {
        "agent": "agent-c",
        "leads": 2,
        "attempts": 3,
        "attempts_due": 4,
        "penetration": 3 / 4,
        "uncapped_penetration": 3 / 4,
        "contact_rate": 0.0,
        "conversion_rate": 0.0,
        "own_attempts": 2,
    }
    | calls(busy=1, wrong_number=1)
    | speed(1, 1, 60.0, 60.0, 1.0),
]
TEAMS = [
    {
        "team": "team-a",
        "leads": 7,
        "attempts": 15,
        "attempts_due": 15,
        "penetration": 14 / 15,
        "uncapped_penetration": 1.0,
        "contact_rate": 4 / 7,
        "conversion_rate": 1 / 7,
        "own_attempts": 14,
    }
    | calls(
        no_answer=6,
        busy=2,
        voicemail=2,
        contacted=1,
        appointment=1,
        wrong_number=1,
        dnc=1,
    )
    | speed(7, 7, 120.0, 6120.0, 5 / 7),
    {"team": "team-b"} | TEAM_B,
]


async def check_groups(api: httpx.AsyncClient, script: Script) -> None:
    day = script.day
    keys = {"pool": script.pool, "source": script.source, "day": day.isoformat()}
    span = {"from": day.isoformat(), "to": day.isoformat(), "timezone": ZONE.key}
    around = f"{day - dt.timedelta(1)}..{day + dt.timedelta(1)}"
    for window in ("1d", around, f"{day}..{day}"):
        for group_by, key in keys.items():
            report = await get(
                api,
                "/v1/penetration",
                group_by=group_by,
                window=window,
                pool=script.pool,
            )
            assert report["groups"] == [{group_by: key} | WHOLE_DAY], (window, key)
        by_agent = await get(
            api, "/v1/penetration", group_by="agent", window=window, pool=script.pool
        )
        assert by_agent["groups"] == AGENTS, window
        by_team = await get(
            api, "/v1/penetration", group_by="team", window=window, pool=script.pool
        )
        assert by_team["groups"] == TEAMS, window

    today = await get(api, "/v1/penetration", window="1d", source=script.source)
    assert today["window"] == span
    assert today["filters"] == {"pool": None, "source": script.source}
    assert today["groups"] == [{"pool": script.pool} | WHOLE_DAY]
    after = f"{day + dt.timedelta(1)}..{day + dt.timedelta(2)}"
    later = await get(api, "/v1/penetration", window=after, pool=script.pool)
    assert later["groups"] == []


async def check_below_target(
    api: httpx.AsyncClient, script: Script, leads: dict[str, uuid.UUID]
) -> None:
    """Short on D: never 0/3 (penetration 0), then late and second_agent
    at 2/3 with one missing, by lead id. dnc has nothing due."""
    tied = sorted([leads["late"], leads["second_agent"]])
    expected = [
        (leads["never"], 0, 3, 3, 0.0),
        *((lead, 2, 3, 1, 2 / 3) for lead in tied),
    ]
    for limit in (1, 2, 3, 50):
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"day": script.day.isoformat(), "limit": limit}
            params |= {"pool": script.pool} | ({"cursor": cursor} if cursor else {})
            page = await get(api, "/v1/leads/below-target", **params)
            assert page["day"] == script.day.isoformat()
            assert len(page["leads"]) <= limit
            rows += page["leads"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == -(-len(expected) // limit), limit
        assert [
            (
                uuid.UUID(row["lead_id"]),
                row["attempts"],
                row["attempts_due"],
                row["missing"],
                row["penetration"],
            )
            for row in rows
        ] == expected, limit
        assert {(row["pool"], row["source"]) for row in rows} == {
            (script.pool, script.source)
        }

    other_day = await get(
        api,
        "/v1/leads/below-target",
        day=str(script.day - dt.timedelta(1)),
        pool=script.pool,
    )
    assert other_day["leads"] == []
    assert other_day["next_cursor"] is None


async def check_cohorts(api: httpx.AsyncClient, script: Script) -> None:
    """The ten leads as they stand at 23:00. Not dialable: capped and
    over_called exhausted, converted, invalid, opted_out, and dnc (open but on
    the list): 6. Attempted: 8. Lifetime target 4 each but dnc's (nothing is
    due on a listed number): Σ min(attempts, 4) = 17 of 36. Contacted and
    converted per lead attempted: 5/8 and 1/8."""
    cohort = {
        "leads": 10,
        "not_dialable": {
            "exhausted": 2,
            "converted": 1,
            "invalid": 1,
            "opted_out": 1,
            "dnc": 1,
        },
        "list_penetration": 6 / 10,
        "attempts": 17,
        "saturation": 17 / 10,
        "leads_attempted": 8,
        "unique_attempt_penetration": 8 / 10,
    }
    every = await get(api, "/v1/penetration/list", pool=script.pool)
    assert every["window"] is None
    assert every["groups"] == [{"pool": script.pool} | cohort]
    today = await get(
        api,
        "/v1/penetration/list",
        group_by="source",
        window="1d",
        source=script.source,
    )
    assert today["groups"] == [{"source": script.source} | cohort]

    scorecard = await get(api, "/v1/sources/scorecard", window="1d")
    ours = [row for row in scorecard["sources"] if row["source"] == script.source]
    assert ours == [
        {
            "source": script.source,
            "leads": 10,
            "duplicates": 1,
            "duplicate_rate": 1 / 11,
            "leads_attempted": 8,
            "attempts": 17,
            "target_penetration": 17 / 36,
            "saturation": 17 / 10,
            "contacted": 5,
            "converted": 1,
            "contact_rate": 5 / 8,
            "conversion_rate": 1 / 8,
            "conversion_rate_all_leads": 1 / 10,
        }
    ]


def attempt_row(
    attempt: int,
    contacted: int = 0,
    converted: int = 0,
    exhausted: int = 0,
    abandoned: int = 0,
) -> dict[str, int]:
    return {
        "attempt": attempt,
        "first_contacted": contacted,
        "converted": converted,
        "exhausted": exhausted,
        "abandoned": abandoned,
    }


async def check_attempts_distribution(api: httpx.AsyncClient, script: Script) -> None:
    """First contact at call 1 (opted_out), 2 (converted, second_agent), 3
    (on_time), 4 (over_called); conversion at 2; exhausted after 2 (capped)
    and 4 (over_called). Nothing is abandoned on D itself.

    Two days later, at D+2 12:00, the open leads not on the DNC list whose
    last call (or round start) + next gap + one day of grace has passed are
    abandoned: never (11:00 + 0 + 1 d), late (16:00 + 4 h + 1 d) and
    second_agent (16:02 + 4 h + 1 d); on_time (14:10 + 1 d + 1 d) is not yet.
    """
    today = await get(api, "/v1/attempts-distribution", window="1d", pool=script.pool)
    assert today["attempts"] == [
        attempt_row(1, contacted=1),
        attempt_row(2, contacted=2, converted=1, exhausted=1),
        attempt_row(3, contacted=1),
        attempt_row(4, contacted=1, exhausted=1),
    ]
    assert today["conversions"] == 1
    assert today["conversions_after_third_attempt"] == 0
    assert today["share_lost_if_stopped_at_three"] == 0.0

    await script.at(script.local(12, day=2))
    later = await get(
        api,
        "/v1/attempts-distribution",
        window=f"{script.day}..{script.day}",
        source=script.source,
    )
    assert later["attempts"] == [
        attempt_row(0, abandoned=1),
        attempt_row(1, contacted=1),
        attempt_row(2, contacted=2, converted=1, exhausted=1, abandoned=2),
        attempt_row(3, contacted=1),
        attempt_row(4, contacted=1, exhausted=1),
    ]


async def check_day(
    api: httpx.AsyncClient, script: Script, leads: dict[str, uuid.UUID]
) -> None:
    await check_leads(api, script, leads)
    await check_groups(api, script)
    await check_below_target(api, script, leads)
    await check_cohorts(api, script)
    await check_attempts_distribution(api, script)


# --- the tests ---------------------------------------------------------------------


def test_the_cadence_plans_the_slots_of_the_table() -> None:
    """The table's slot times, straight from the plan (the last gap repeats)."""
    start = dt.datetime(2026, 12, 3, 9, tzinfo=ZONE)
    plan = planned_attempts(start, (0, 3600, 14400, 86400), 4)
    assert [(attempt, due.astimezone(ZONE).time()) for attempt, due in plan] == [
        (1, dt.time(9)),
        (2, dt.time(10)),
        (3, dt.time(14)),
        (4, dt.time(14)),
    ]
    assert plan[3][1] - start == dt.timedelta(hours=29)
    assert planned_attempts(start, (600, 3600), 3)[2][1] - start == dt.timedelta(
        seconds=600 + 3600 + 3600
    )


async def test_a_scripted_day_gives_the_hand_worked_figures(
    script: Script, api: httpx.AsyncClient
) -> None:
    """The module's table, each event applied at its own time.

    Regression: speed to lead counted the uncalled never and dnc as called
    at once (greatest(0, NULL) is 0 in PostgreSQL, which skips NULLs), so
    the pool's p50 was 90 s, its p90 1980 s and 8 of 9 "within 5 minutes".
    """
    leads = write_day(script)
    await apply_as_it_happened(script)

    await check_day(api, script, leads)


async def test_the_same_day_applied_late_and_out_of_order_gives_the_same_figures(
    script: Script, api: httpx.AsyncClient
) -> None:
    """Calls, ends and rounds before their lead's arrival, leads interleaved,
    several per transaction, and every slot counted before the end that
    cancels it: the same table."""
    leads = write_day(script)
    await apply_late_and_out_of_order(script)

    await check_day(api, script, leads)


# --- business days -------------------------------------------------------------


def noon_offset(day: dt.date) -> dt.timedelta:
    return dt.datetime.combine(day, dt.time(12), ZONE).utcoffset() or dt.timedelta()


def next_spring_forward(after: dt.date) -> dt.date:
    """The first day after ``after`` on which New York's clocks go forward."""
    day = after + dt.timedelta(1)
    while noon_offset(day) <= noon_offset(day - dt.timedelta(1)):
        day += dt.timedelta(1)
    return day


def counted(figures: dict[str, Any]) -> tuple[Any, ...]:
    return (figures["attempts"], figures["attempts_due"], figures["penetration"])


async def test_calls_and_slots_land_on_their_business_day_across_a_dst_change(
    metrics: Server, metrics_clock: ManualClock, api: httpx.AsyncClient
) -> None:
    """X is the 23-hour day New York's clocks go forward. A lead queued at
    23:00 on X-1 with cadence ``30m 1d``, target 3, has slots at X-1 23:30
    and then 86 400 s later each: 00:30 on X+1 and on X+2 (a 23-hour day
    later, not 23:30 on X). Its calls at X-1 23:30 and at X 23:30 land on
    X-1 and X, the second an hour before the slot it answers. At X+1 01:00:

    ====  ========  ====  ===
    day   attempts  due   pen
    ====  ========  ====  ===
    X-1   1         1     1
    X     1         0     -
    X+1   0         1     0
    ====  ========  ====  ===

    Regression: the cadence's gaps were added to the round's start in the
    zone the event's time carried. For a time in a zone with DST (as handed
    over here) Python adds to the wall clock, so the 1-day gap put slot 2 at
    23:30 on X, 23 h later, instead of 24 h later.
    """
    # Two clear days ahead: the script starts on the day after the clock's.
    today = metrics_clock.now().astimezone(ZONE).date()
    spring = next_spring_forward(today + dt.timedelta(2))
    metrics_clock.set(dt.datetime.combine(spring - dt.timedelta(2), dt.time(), ZONE))
    script = Script(metrics, metrics_clock)
    assert script.day == spring - dt.timedelta(1)
    lead = script.lead(script.local(23), target=3, cadence=(1800, 86400))
    script.call(lead, script.local(23, 30), attempt=1)
    script.call(lead, script.local(23, 30, day=1), attempt=2)
    await script.at(script.local(1, day=2))
    await script.apply()
    days = [str(script.day + dt.timedelta(offset)) for offset in range(3)]
    by_day = [(days[0], 1, 1, 1.0), (days[1], 1, 0, None), (days[2], 0, 1, 0.0)]

    figures = await get(api, f"/v1/leads/{lead}/penetration")
    assert counted(figures) == (2, 2, 1.0)
    assert [(day["day"], *counted(day)) for day in figures["days"]] == by_day
    upcoming = figures["next_attempt_due"]
    assert upcoming["attempt"] == 3
    assert when(upcoming["at"]) == script.local(0, 30, day=3)

    span = f"{days[0]}..{days[2]}"
    report = await get(
        api, "/v1/penetration", group_by="day", window=span, pool=script.pool
    )
    assert [(group["day"], *counted(group)) for group in report["groups"]] == by_day
    report = await get(api, "/v1/penetration", window=span, pool=script.pool)
    assert [counted(group) for group in report["groups"]] == [(2, 2, 1.0)]
    report = await get(api, "/v1/penetration", window="1d", pool=script.pool)
    assert [counted(group) for group in report["groups"]] == [(0, 1, 0.0)]
    below = await get(api, "/v1/leads/below-target", pool=script.pool)
    assert below["day"] == days[2]
    assert [(row["lead_id"], row["missing"]) for row in below["leads"]] == [
        (str(lead), 1)
    ]
