"""Regression tests for the queue's review findings, one test per finding.

Each test's docstring says what went wrong before the fix. Like the rest of
the queue's tests they run over real HTTP on the real PostgreSQL; where a
finding only shows when no scheduler pass runs between two requests, the test
runs the pass itself and then moves the clock by less than ``tick_seconds``,
so neither next-lead nor the background loop runs another.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pydantic
import pytest

from services.queue.settings import QueueSettings
from shared.events import LeadRecycled, decode
from shared.settings import Environment
from tests.conftest import unique_phone
from tests.queue.conftest import Floor, unique

#: Longer than the one-second scheduler tick: the next next-lead runs a pass.
PASS = dt.timedelta(seconds=2)
#: The year a lead held off the queue is "due".
NEVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


# --- helpers -----------------------------------------------------------------


async def lease(floor: Floor, agent: str) -> dict[str, Any]:
    answer = await floor.next_lead(agent)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def no_lead(floor: Floor, agent: str) -> None:
    answer = await floor.next_lead(agent)
    assert answer.status_code == 204, answer.text


async def record(floor: Floor, lease_id: str, disposition: str, **extra: Any) -> None:
    answer = await floor.outcome(lease_id, disposition, **extra)
    assert answer.status_code == 200, answer.text


async def called(floor: Floor, agent: str, disposition: str = "no_answer") -> str:
    """Leases the agent's next lead and records ``disposition``; the lead id."""
    leased = await lease(floor, agent)
    await record(floor, leased["lease_id"], disposition)
    lead_id: str = leased["lead"]["lead_id"]
    return lead_id


def invalid_fields(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "validation_failed"
    return [error["field"] for error in answer.json()["errors"]]


def moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


async def lead_row(qdb: asyncpg.Connection, lead_id: uuid.UUID | str) -> dict[str, Any]:
    row = await qdb.fetchrow(
        "SELECT * FROM leads WHERE lead_id = $1", uuid.UUID(str(lead_id))
    )
    assert row is not None
    return dict(row)


async def recycled_from(qdb: asyncpg.Connection, lead_id: uuid.UUID) -> list[str]:
    """The agents the lead's ``lead.recycled`` events name, in order."""
    rows = await qdb.fetch(
        "SELECT payload FROM outbox WHERE key = $1 ORDER BY id", str(lead_id).encode()
    )
    events = [decode(row["payload"]).data for row in rows]
    return [
        str(event.from_agent_id) for event in events if isinstance(event, LeadRecycled)
    ]


async def open_leases_by_number(
    qdb: asyncpg.Connection, phone: str
) -> list[asyncpg.Record]:
    return await qdb.fetch(
        """
        SELECT s.lease_id, s.lead_id, s.agent_id, s.expires_at
        FROM leases s JOIN leads l ON l.lead_id = s.lead_id
        WHERE l.phone = $1 AND s.ended_at IS NULL
        """,
        phone,
    )


# --- 1. a lead every agent is excluded from ----------------------------------


@pytest.mark.parametrize(
    ("limit", "callers", "recycled_by"),
    [(2, "AAAAA", ""), (1, "ABABA", "AA")],
    ids=["one-agent", "two-agents"],
)
async def test_lead_every_agent_is_excluded_from_is_called_until_its_target(
    floor: Floor,
    qdb: asyncpg.Connection,
    limit: int,
    callers: str,
    recycled_by: str,
) -> None:
    """Regression: once every agent of the pool had used its attempts on a lead
    (the only agent, or A and then B), the lead stayed ready with nobody
    allowed to take it, below its target, for ever. Now the exclusions lift
    when nobody else could call it, and the cadence goes on to the target."""
    pool = await floor.pool(call_target=5, cadence="0m", agent_attempt_limit=limit)
    [lead_id] = await floor.leads(pool)
    seats = {name: await floor.agent([pool]) for name in sorted(set(callers))}

    taken_by = ""
    for attempt in range(1, 6):
        for name, agent in seats.items():
            answer = await floor.next_lead(agent)
            if answer.status_code == 204:
                continue
            assert answer.status_code == 200, answer.text
            assert answer.json()["attempt"] == attempt
            await record(floor, answer.json()["lease_id"], "no_answer")
            taken_by += name
            break

    assert taken_by == callers
    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"]) == ("exhausted", 5)
    names = {agent: name for name, agent in seats.items()}
    assert "".join(names[a] for a in await recycled_from(qdb, lead_id)) == recycled_by
    for agent in seats.values():
        await no_lead(floor, agent)


# --- 2. ending a lease frees only its own number claim -----------------------


async def test_reaping_an_expired_lease_keeps_the_number_claimed_by_a_newer_lease(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: when A's lease on L1 expired and B then leased L2 (same
    number) before the reaper ran, reaping L1 cleared the number's claim that
    B's lease held, so C was given L1 while B was on L2: two open leases on
    one number. Ending a lease now frees the number only if its claim is
    that lease's own."""
    pool = await floor.pool(lease_seconds=30)
    phone = unique_phone()
    first_lead, second_lead = await floor.leads(pool, 2, phone=phone)
    first, second, third = [await floor.agent([pool]) for _ in range(3)]
    expired = await lease(floor, first)
    expires_at = moment(expired["expires_at"])

    # A pass just before the expiry, then a moment past it: less than a tick
    # later, so B's next-lead leases without reaping A's lease first.
    floor.at(expires_at - dt.timedelta(milliseconds=500))
    await floor.service.tick()
    floor.at(expires_at + dt.timedelta(milliseconds=200))
    taken = await lease(floor, second)
    assert taken["lead"]["lead_id"] != expired["lead"]["lead_id"]
    assert (await lead_row(qdb, expired["lead"]["lead_id"]))["state"] == "leased"

    floor.at(expires_at + dt.timedelta(milliseconds=1200))
    answer = await floor.next_lead(third)

    assert answer.status_code == 204, answer.text
    assert (await lead_row(qdb, expired["lead"]["lead_id"]))["state"] != "leased"
    open_leases = await open_leases_by_number(qdb, phone)
    assert [(row["lease_id"], row["agent_id"]) for row in open_leases] == [
        (uuid.UUID(taken["lease_id"]), second)
    ]
    claimed = await qdb.fetchval(
        "SELECT leased_until FROM phones WHERE phone = $1", phone
    )
    assert claimed == moment(taken["expires_at"])
    assert {first_lead, second_lead} == {
        uuid.UUID(expired["lead"]["lead_id"]),
        uuid.UUID(taken["lead"]["lead_id"]),
    }


# --- 3. a number's lifetime cap ----------------------------------------------


async def test_number_at_its_lifetime_cap_exhausts_every_lead_with_it(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: the third call to a number with a pool lifetime cap of 3
    blocked the number until the year 9999 while the leads on it were planned
    from the count before that call, so the next lead chosen was parked
    'waiting' until 9999 instead of being exhausted. Now the plan sees the
    call just made and the number-wide block follows the law's caps only."""
    pool = await floor.pool(call_target=5, cadence="0m", caps={"lifetime": 3})
    phone = unique_phone()
    lead_ids = await floor.leads(pool, 2, phone=phone)
    agent = await floor.agent([pool])

    for _ in range(3):
        floor.clock.advance(PASS)
        await called(floor, agent)
    floor.clock.advance(PASS)
    await no_lead(floor, agent)

    for lead_id in lead_ids:
        lead = await floor.lead(lead_id)
        assert (lead["state"], lead["wait_reason"]) == ("exhausted", "lifetime_cap")
        assert moment(lead["ended_at"]) < NEVER
    attempts = sorted([(await floor.lead(lead_id))["attempts"] for lead_id in lead_ids])
    assert attempts == [1, 2]
    number = await qdb.fetchrow("SELECT * FROM phones WHERE phone = $1", phone)
    assert number is not None
    assert (number["lifetime_calls"], number["blocked_until"]) == (3, None)
    parked = await qdb.fetchval(
        "SELECT count(*) FROM leads WHERE phone = $1 AND due_at >= $2", phone, NEVER
    )
    assert parked == 0


# --- 4. a callback from an agent at the attempt limit ------------------------


async def test_callback_booked_at_the_attempt_limit_goes_to_another_agent(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: an agent whose second call (of a limit of two) booked a
    callback still had the callback reserved, and their own-callback lookup
    ignored exclusions: at callback time A got the lead again and B waited
    out the hold. Now the callback is not reserved for an agent who may no
    longer get the lead."""
    pool = await floor.pool(cadence="0m", agent_attempt_limit=2)
    [lead_id] = await floor.leads(pool)
    first, second = await floor.agent([pool]), await floor.agent([pool])
    await called(floor, first)
    leased = await lease(floor, first)
    callback_at = floor.clock.now() + dt.timedelta(hours=1)

    await record(
        floor, leased["lease_id"], "callback", callback_at=callback_at.isoformat()
    )

    assert (await lead_row(qdb, lead_id))["reserved_agent"] is None
    floor.at(callback_at)
    await no_lead(floor, first)
    again = await lease(floor, second)
    assert (again["lead"]["lead_id"], again["attempt"]) == (str(lead_id), 3)
    assert again["reason"]["code"] == "callback_due"


# --- 5. a dnc disposition holds the number's other leads ---------------------


async def test_dnc_disposition_holds_other_leads_with_the_number_until_unlisted(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: a dnc disposition listed the number but left its other leads
    to be re-planned as ready (only the lease's DNC filter kept them from
    being called), and DELETE /v1/dnc did not know to plan them again. Now
    they wait off the queue, as PUT /v1/dnc holds them, until unlisted."""
    pool = await floor.pool()
    phone = unique_phone()
    lead_ids = await floor.leads(pool, 2, phone=phone)
    agent = await floor.agent([pool])

    opted_out = await called(floor, agent, "dnc")

    [other] = [lead_id for lead_id in lead_ids if str(lead_id) != opted_out]
    for wait in (dt.timedelta(hours=1), dt.timedelta(days=1)):
        floor.clock.advance(wait)
        await no_lead(floor, agent)
        held = await lead_row(qdb, other)
        assert (held["state"], held["wait_reason"], held["due_at"]) == (
            "waiting",
            "dnc",
            NEVER,
        )
    lead = await floor.lead(other)
    assert (lead["state"], lead["wait_reason"], lead["next_due_at"]) == (
        "waiting",
        "dnc",
        None,
    )
    leases = await qdb.fetchval("SELECT count(*) FROM leases WHERE lead_id = $1", other)
    assert leases == 0

    assert (await floor.api.delete(f"/v1/dnc/{phone}")).status_code == 204
    again = await lease(floor, agent)
    assert again["lead"]["lead_id"] == str(other)
    assert (await floor.lead(opted_out))["state"] == "opted_out"


# --- 6. pool rules that could never work -------------------------------------


async def test_pool_hours_outside_the_law_and_exhausted_to_cycles_are_refused(
    floor: Floor,
) -> None:
    """Regression: pool hours that never meet the federal 08:00-21:00 were
    accepted (every lead then ended not callable), and an exhausted_to chain
    that led back to its start was accepted (its leads were called round
    after round for ever). Both are now 422s naming the field."""
    name = unique("pool")
    late = {"weekdays": {"start": "21:30", "end": "23:00"}, "saturday": None}

    answer = await floor.api.put(f"/v1/pools/{name}", json={"calling_hours": late})

    assert invalid_fields(answer) == ["calling_hours"]
    assert (await floor.api.get(f"/v1/pools/{name}")).status_code == 404

    first = await floor.pool()
    second = await floor.pool(exhausted_to=first)
    answer = await floor.api.put(f"/v1/pools/{first}", json={"exhausted_to": second})

    assert invalid_fields(answer) == ["exhausted_to"]
    read = (await floor.api.get(f"/v1/pools/{first}")).json()
    assert read["rules"]["exhausted_to"] is None


# --- 7. what a pool change re-plans ------------------------------------------


async def test_pool_change_replans_only_on_new_rules_and_reaches_leased_leads(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: every PUT of an existing pool, even one that changed
    nothing, closed the windows of all its queued leads, so a ready lead was
    not served until the scheduler's next pass; and a lead on lease during a
    change of call_target kept the old target. Now an unchanged PUT re-plans
    nothing, a lower target exhausts a lead past it on the next pass, and a
    leased lead takes the new target."""
    rules = {"call_target": 5, "cadence": "0m"}
    pool = await floor.pool(**rules)
    agent = await floor.agent([pool])
    await floor.service.tick()
    [lead_id] = await floor.leads(pool)
    before = await lead_row(qdb, lead_id)

    unchanged = await floor.api.put(f"/v1/pools/{pool}", json=rules)

    assert unchanged.status_code == 200, unchanged.text
    assert await lead_row(qdb, lead_id) == before
    leased = await lease(floor, agent)
    assert leased["lead"]["lead_id"] == str(lead_id)

    # The clock stays put: a lead leased or called at the change's own clock
    # reading must take the new target too.
    retargeted = await floor.api.put(
        f"/v1/pools/{pool}", json={**rules, "call_target": 4}
    )
    assert retargeted.status_code == 200, retargeted.text
    await record(floor, leased["lease_id"], "no_answer")

    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["call_target"]) == ("ready", 1, 4)

    assert await called(floor, agent) == str(lead_id)
    lowered = await floor.api.put(f"/v1/pools/{pool}", json={**rules, "call_target": 1})
    assert lowered.status_code == 200, lowered.text
    floor.clock.advance(PASS)
    await no_lead(floor, agent)

    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["call_target"]) == (
        "exhausted",
        2,
        1,
    )
    assert lead["wait_reason"] == "call_target"


# --- 8. presence while a lease is open ---------------------------------------


async def test_agent_holding_a_lease_cannot_go_offline_even_in_a_race(
    floor: Floor,
) -> None:
    """Regression: set_status read the agent's open lease from the snapshot it
    took before waiting for the agent's lock, so a status change racing a
    next-lead could set an agent offline while it held the lease just given.
    The status change now reads the lease again under the lock."""
    pool = await floor.pool()
    await floor.leads(pool, 12)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)

    refused = await floor.api.put(
        f"/v1/agents/{agent}/status", json={"status": "offline"}
    )

    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "lease_open"
    seat = (await floor.api.get(f"/v1/agents/{agent}")).json()
    assert (seat["status"], seat["open_lease"]) == ("busy", leased["lease_id"])
    await record(floor, leased["lease_id"], "no_answer")

    for _ in range(10):
        await floor.status(agent, "available")
        drawn, offline = await asyncio.gather(
            floor.next_lead(agent),
            floor.api.put(f"/v1/agents/{agent}/status", json={"status": "offline"}),
        )
        seat = (await floor.api.get(f"/v1/agents/{agent}")).json()
        if drawn.status_code == 200:
            assert offline.status_code == 409, offline.text
            assert (seat["status"], seat["open_lease"]) == (
                "busy",
                drawn.json()["lease_id"],
            )
            await record(floor, drawn.json()["lease_id"], "no_answer")
        else:
            assert (drawn.status_code, offline.status_code) == (409, 200)
            assert (seat["status"], seat["open_lease"]) == ("offline", None)


# --- 9. inline scheduler passes ----------------------------------------------


def test_inline_scheduler_passes_are_refused_in_production() -> None:
    """Regression: every next-lead ran a scheduler pass itself when the last
    one was a tick old, in production too, so a request could wait behind a
    whole pass. Inline passes are now a test setting that production
    refuses."""
    with pytest.raises(pydantic.ValidationError, match="QUEUE_SCHEDULER_INLINE"):
        QueueSettings(environment=Environment.PRODUCTION, scheduler_inline=True)

    assert not QueueSettings(environment=Environment.PRODUCTION).scheduler_inline


async def test_call_logged_for_an_unknown_agent_is_refused(floor: Floor) -> None:
    """Regression: a call logged from outside accepted any agent id, so a typo
    made a phantom agent in every report."""
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)

    answer = await floor.api.post(
        f"/v1/leads/{lead_id}/calls",
        json={"disposition": "no_answer", "agent_id": "nobody-here"},
    )

    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == ["agent_id"]
    assert (await floor.lead(lead_id))["attempts"] == 0


async def test_call_logged_on_a_converted_lead_keeps_it_converted(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: a call logged after conversion re-ended the lead (a
    wrong_number turned a sale into an invalid lead). It now counts and leaves
    the lead finished; a dnc still lists the number."""
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    await called(floor, agent, "converted")
    phone = await qdb.fetchval("SELECT phone FROM leads WHERE lead_id = $1", lead_id)

    for disposition in ("wrong_number", "dnc"):
        answer = await floor.api.post(
            f"/v1/leads/{lead_id}/calls", json={"disposition": disposition}
        )
        assert answer.status_code == 201, answer.text

    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"]) == ("converted", 3)
    assert (await floor.api.get(f"/v1/dnc/{phone}")).status_code == 200


async def test_lead_recycled_past_a_lower_target_goes_on_to_its_exhausted_to(
    floor: Floor,
) -> None:
    """Regression: a lead recycled into a pool whose target it had already
    reached ended exhausted there, never reaching that pool's exhausted_to."""
    aged = await floor.pool()
    second = await floor.pool(call_target=2, exhausted_to=aged)
    first = await floor.pool(cadence="0m", recycle_to=second, agent_attempt_limit=None)
    [lead_id] = await floor.leads(first)
    agents = [await floor.agent([first]) for _ in range(2)]
    await called(floor, agents[0])
    await called(floor, agents[0])

    await called(floor, agents[0], "not_interested")

    lead = await floor.lead(lead_id)
    assert (lead["pool"], lead["state"], lead["attempts"]) == (aged, "ready", 0)


async def test_pool_change_reaches_a_lead_that_was_locked_at_that_moment(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: re-planning after a pool change skipped leads another
    transaction held at that moment, so they kept the old plan for good."""
    pool = await floor.pool()
    lead_ids = await floor.leads(pool, 3)
    before = await qdb.fetchval(
        "SELECT closes_at FROM leads WHERE lead_id = $1", lead_ids[0]
    )
    shorter = {"weekdays": {"start": "08:00", "end": "20:00"}}
    async with qdb.transaction():
        await qdb.execute(
            "SELECT 1 FROM leads WHERE lead_id = $1 FOR UPDATE", lead_ids[0]
        )
        change = asyncio.create_task(
            floor.api.put(f"/v1/pools/{pool}", json={"calling_hours": shorter})
        )
        await asyncio.sleep(0.3)  # the change waits for this lock
        assert not change.done()
    answer = await change

    assert answer.status_code == 200, answer.text
    # Each lead is marked for re-planning (a closed window) or, if a scheduler
    # pass ran since, re-planned into the shorter hours: none keeps 21:00.
    closes = await qdb.fetch(
        "SELECT closes_at FROM leads WHERE lead_id = ANY($1::uuid[])", lead_ids
    )
    assert before not in {row["closes_at"] for row in closes}
