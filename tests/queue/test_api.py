"""The queue's HTTP surface over a real server, PostgreSQL and broker.

Every refused request is checked twice: for its status and problem code, and
for leaving the lead, the lease and the agent exactly as they were.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.events import Envelope, LeadQueued, LeadRecycled, decode
from tests.conftest import unique_phone
from tests.queue.conftest import Floor, next_local, unique

NEW_YORK = "America/New_York"
MONDAY_TO_SATURDAY = frozenset(range(1, 7))
DEFAULT_CADENCE = [0, 600, 3600, 14400, 86400, 172800, 345600, 604800]
MINUTE = dt.timedelta(minutes=1)


# --- helpers -----------------------------------------------------------------


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Asserts a problem-JSON refusal and returns its body."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def invalid_fields(answer: httpx.Response) -> list[str]:
    body = problem(answer, 422, "validation_failed")
    return [error["field"] for error in body["errors"]]


def moment(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


async def lease(floor: Floor, agent: str) -> dict[str, Any]:
    answer = await floor.next_lead(agent)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def no_lead(floor: Floor, agent: str) -> None:
    answer = await floor.next_lead(agent)
    assert answer.status_code == 204, answer.text
    assert answer.content == b""


async def called(floor: Floor, agent: str, disposition: str = "no_answer") -> str:
    """Leases the agent's next lead and records ``disposition``; the lead id."""
    leased = await lease(floor, agent)
    answer = await floor.outcome(leased["lease_id"], disposition)
    assert answer.status_code == 200, answer.text
    lead_id: str = leased["lead"]["lead_id"]
    return lead_id


async def lead_row(qdb: asyncpg.Connection, lead_id: uuid.UUID | str) -> dict[str, Any]:
    row = await qdb.fetchrow(
        "SELECT * FROM leads WHERE lead_id = $1", uuid.UUID(str(lead_id))
    )
    assert row is not None
    return dict(row)


async def agent_row(qdb: asyncpg.Connection, agent: str) -> dict[str, Any]:
    row = await qdb.fetchrow("SELECT * FROM agents WHERE agent_id = $1", agent)
    assert row is not None
    return dict(row)


async def traces(qdb: asyncpg.Connection, lead_id: uuid.UUID | str) -> tuple[int, ...]:
    """How many calls, leases and outbox events a lead has: a refusal adds none."""
    lead = uuid.UUID(str(lead_id))
    return (
        await qdb.fetchval("SELECT count(*) FROM calls WHERE lead_id = $1", lead),
        await qdb.fetchval("SELECT count(*) FROM leases WHERE lead_id = $1", lead),
        await qdb.fetchval(
            "SELECT count(*) FROM outbox WHERE key = $1", str(lead).encode()
        ),
    )


async def events(qdb: asyncpg.Connection, lead_id: uuid.UUID | str) -> list[Envelope]:
    rows = await qdb.fetch(
        "SELECT payload FROM outbox WHERE key = $1 ORDER BY id", str(lead_id).encode()
    )
    return [decode(row["payload"]) for row in rows]


async def event_types(qdb: asyncpg.Connection, lead_id: uuid.UUID | str) -> list[str]:
    return [event.type for event in await events(qdb, lead_id)]


async def eligibility(floor: Floor, lead_id: uuid.UUID | str) -> dict[str, Any]:
    answer = await floor.api.get(f"/v1/leads/{lead_id}/eligibility")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ordered_id(first: bool) -> uuid.UUID:
    """A lead id that sorts first (or last), so a test can show that lead id,
    the last tie-break, is not what decided the order."""
    random_part = uuid.uuid4().int & ((1 << 120) - 1)
    return uuid.UUID(int=(0x0 if first else 0xF) << 124 | random_part)


# --- pools -------------------------------------------------------------------


async def test_pool_is_created_then_replaced(api: httpx.AsyncClient) -> None:
    name = unique("pool")

    created = await api.put(f"/v1/pools/{name}", json={"call_target": 5})
    replaced = await api.put(f"/v1/pools/{name}", json={"call_target": 10})

    assert created.status_code == 201, created.text
    assert replaced.status_code == 200, replaced.text
    read = (await api.get(f"/v1/pools/{name}")).json()
    assert read["rules"]["call_target"] == 10
    assert read["created_at"] == created.json()["created_at"]


async def test_new_pool_reads_back_with_defaults(api: httpx.AsyncClient) -> None:
    name = unique("pool")
    await api.put(f"/v1/pools/{name}", json={})

    answer = await api.get(f"/v1/pools/{name}")

    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == name
    assert answer.json()["rules"] == {
        "call_target": 8,
        "cadence": DEFAULT_CADENCE,
        "calling_hours": {
            "weekdays": {"start": "08:00:00", "end": "21:00:00"},
            "saturday": {"start": "08:00:00", "end": "21:00:00"},
            "sunday": None,
        },
        "timezone": NEW_YORK,
        "lease_seconds": 120,
        "source_weights": {},
        "agent_attempt_limit": 3,
        "recycle_to": None,
        "exhausted_to": None,
        "callback_hold_seconds": 900,
        "caps": {"lifetime": None, "per_day": None, "per_24h": None},
        "nurture_while_calling": True,
    }


@pytest.mark.parametrize(
    "cadence", ["0m 10m 1h", ["0m", "10m", "1h"], [0, 600, 3600], "0s 600 60m"]
)
async def test_cadence_is_accepted_as_a_string_or_a_list(
    api: httpx.AsyncClient, cadence: object
) -> None:
    name = unique("pool")

    answer = await api.put(f"/v1/pools/{name}", json={"cadence": cadence})

    assert answer.status_code == 201, answer.text
    read = (await api.get(f"/v1/pools/{name}")).json()
    assert read["rules"]["cadence"] == [0, 600, 3600]


NEVER_OPEN = {"weekdays": None, "saturday": None, "sunday": None}


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"cadence": "0m -10m 1h"}, "cadence.1"),
        ({"cadence": [0, -600]}, "cadence.1"),
        ({"cadence": "0m soon"}, "cadence.1"),
        ({"cadence": ""}, "cadence"),
        ({"call_target": 0}, "call_target"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        (
            {"calling_hours": {"weekdays": {"start": "21:00", "end": "08:00"}}},
            "calling_hours.weekdays",
        ),
        (
            {"calling_hours": {"saturday": {"start": "09:00", "end": "09:00"}}},
            "calling_hours.saturday",
        ),
        ({"calling_hours": NEVER_OPEN}, "calling_hours"),
        ({"favourite_colour": "blue"}, "favourite_colour"),
        ({"recycle_to": "no-such-pool-at-all"}, "recycle_to"),
        ({"exhausted_to": "no-such-pool-at-all"}, "exhausted_to"),
        ({"lease_seconds": 1}, "lease_seconds"),
    ],
)
async def test_invalid_pool_rules_are_refused_naming_the_field(
    api: httpx.AsyncClient, rules: dict[str, Any], field: str
) -> None:
    name = unique("pool")

    answer = await api.put(f"/v1/pools/{name}", json=rules)

    assert invalid_fields(answer) == [field]
    problem(await api.get(f"/v1/pools/{name}"), 404, "unknown_pool")


async def test_invalid_replacement_leaves_the_pool_as_it_was(
    api: httpx.AsyncClient,
) -> None:
    name = unique("pool")
    await api.put(f"/v1/pools/{name}", json={"call_target": 5})
    before = (await api.get(f"/v1/pools/{name}")).json()

    answer = await api.put(f"/v1/pools/{name}", json={"call_target": 0})

    assert invalid_fields(answer) == ["call_target"]
    assert (await api.get(f"/v1/pools/{name}")).json() == before


@pytest.mark.parametrize("name", ["bad%20name", "-leading-dash", "x" * 65, "dot%21"])
async def test_bad_pool_name_in_the_url_is_refused(
    api: httpx.AsyncClient, name: str
) -> None:
    answer = await api.put(f"/v1/pools/{name}", json={})

    assert invalid_fields(answer) == ["path.pool"]


async def test_unknown_pool_is_404(api: httpx.AsyncClient) -> None:
    name = unique("pool")

    problem(await api.get(f"/v1/pools/{name}"), 404, "unknown_pool")
    problem(await api.get(f"/v1/pools/{name}/stats"), 404, "unknown_pool")


# --- routing -----------------------------------------------------------------


async def test_routing_reads_back_what_was_put(
    floor: Floor, api: httpx.AsyncClient
) -> None:
    pool = await floor.pool()
    routing = (await api.get("/v1/routing")).json()
    source = unique("src")
    routing["routes"] += [
        {"source": source, "campaign": None, "pool": pool},
        {"source": source, "campaign": "spring", "pool": pool},
    ]

    answer = await api.put("/v1/routing", json=routing)

    assert answer.status_code == 200, answer.text
    read = (await api.get("/v1/routing")).json()
    assert read["default_pool"] == routing["default_pool"]
    key = lambda route: (route["source"], route["campaign"] or "")  # noqa: E731
    assert sorted(read["routes"], key=key) == sorted(routing["routes"], key=key)


async def test_route_to_an_unknown_pool_is_refused_naming_it(
    floor: Floor, api: httpx.AsyncClient
) -> None:
    pool = await floor.pool()
    before = (await api.get("/v1/routing")).json()
    routes = [
        *before["routes"],
        {"source": unique("src"), "campaign": None, "pool": pool},
        {"source": unique("src"), "campaign": None, "pool": unique("missing")},
    ]

    answer = await api.put(
        "/v1/routing", json={"default_pool": before["default_pool"], "routes": routes}
    )

    assert invalid_fields(answer) == [f"routes[{len(routes) - 1}].pool"]
    assert (await api.get("/v1/routing")).json() == before


async def test_default_pool_that_does_not_exist_is_refused(
    api: httpx.AsyncClient,
) -> None:
    before = (await api.get("/v1/routing")).json()

    answer = await api.put(
        "/v1/routing",
        json={"default_pool": unique("missing"), "routes": before["routes"]},
    )

    assert invalid_fields(answer) == ["default_pool"]
    assert (await api.get("/v1/routing")).json() == before


async def test_duplicate_route_is_refused(floor: Floor, api: httpx.AsyncClient) -> None:
    pool = await floor.pool()
    before = (await api.get("/v1/routing")).json()
    route = {"source": unique("src"), "campaign": "spring", "pool": pool}
    routes = [*before["routes"], route, route]

    answer = await api.put(
        "/v1/routing", json={"default_pool": before["default_pool"], "routes": routes}
    )

    assert invalid_fields(answer) == [f"routes[{len(routes) - 1}]"]
    assert (await api.get("/v1/routing")).json() == before


async def test_lead_lands_in_the_pool_its_route_names(floor: Floor) -> None:
    pool = await floor.pool()
    source = unique("src")
    await floor.route(source, pool)

    [lead_id] = await floor.receive(floor.snapshot(source, campaign="anything"))

    lead = await floor.lead(lead_id)
    assert lead["pool"] == pool
    assert lead["state"] == "ready"
    assert moment(lead["next_due_at"]) == floor.clock.now()


async def test_unrouted_lead_lands_in_the_default_pool(
    floor: Floor, api: httpx.AsyncClient
) -> None:
    fallback = await floor.pool()
    routing = (await api.get("/v1/routing")).json()
    answer = await api.put("/v1/routing", json={**routing, "default_pool": fallback})
    assert answer.status_code == 200, answer.text
    try:
        [lead_id] = await floor.receive(floor.snapshot(unique("unrouted")))
    finally:
        await api.put("/v1/routing", json=routing)

    assert (await floor.lead(lead_id))["pool"] == fallback


async def test_campaign_route_beats_the_source_wide_route(floor: Floor) -> None:
    source_wide, spring_only = await floor.pool(), await floor.pool()
    source = unique("src")
    await floor.route(source, source_wide)
    await floor.route(source, spring_only, campaign="spring")

    spring, autumn, none = await floor.receive(
        floor.snapshot(source, campaign="spring"),
        floor.snapshot(source, campaign="autumn"),
        floor.snapshot(source),
    )

    assert (await floor.lead(spring))["pool"] == spring_only
    assert (await floor.lead(autumn))["pool"] == source_wide
    assert (await floor.lead(none))["pool"] == source_wide


# --- agents ------------------------------------------------------------------


async def test_agent_is_created_then_updated(
    floor: Floor, api: httpx.AsyncClient
) -> None:
    first, second = await floor.pool(), await floor.pool()
    name = unique("agent")

    created = await api.put(
        f"/v1/agents/{name}", json={"pools": [first], "team": "east"}
    )
    updated = await api.put(
        f"/v1/agents/{name}", json={"pools": [first, second], "team": "west"}
    )

    assert created.status_code == 201, created.text
    assert updated.status_code == 200, updated.text
    read = (await api.get(f"/v1/agents/{name}")).json()
    assert read["pools"] == [first, second]
    assert read["team"] == "west"
    assert read["status"] == "offline"
    assert (read["leases"], read["releases"], read["expired_leases"]) == (0, 0, 0)
    assert read["open_lease"] is None


async def test_agent_with_an_unknown_pool_is_refused_naming_it(
    floor: Floor, api: httpx.AsyncClient
) -> None:
    pool = await floor.pool()
    name = unique("agent")

    answer = await api.put(
        f"/v1/agents/{name}", json={"pools": [pool, unique("missing")]}
    )

    assert invalid_fields(answer) == ["pools[1]"]
    problem(await api.get(f"/v1/agents/{name}"), 404, "unknown_agent")


async def test_update_with_an_unknown_pool_leaves_the_agent_as_it_was(
    floor: Floor, api: httpx.AsyncClient, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool])
    before = await agent_row(qdb, agent)

    answer = await api.put(f"/v1/agents/{agent}", json={"pools": [unique("missing")]})

    assert invalid_fields(answer) == ["pools[0]"]
    assert await agent_row(qdb, agent) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pools": []}, "pools"),
        ({}, "pools"),
        ({"pools": ["bad name"]}, "pools.0"),
        ({"pools": ["p"], "shift": "late"}, "shift"),
    ],
)
async def test_malformed_agent_is_refused_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    name = unique("agent")

    answer = await api.put(f"/v1/agents/{name}", json=body)

    assert invalid_fields(answer) == [field]
    problem(await api.get(f"/v1/agents/{name}"), 404, "unknown_agent")


@pytest.mark.parametrize("status", ["available", "busy", "away", "offline"])
async def test_agent_takes_each_presence_status(floor: Floor, status: str) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool], available=status != "available")

    answer = await floor.api.put(f"/v1/agents/{agent}/status", json={"status": status})

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == status
    assert (await floor.api.get(f"/v1/agents/{agent}")).json()["status"] == status


async def test_unknown_presence_status_is_refused(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    agent = await floor.agent([await floor.pool()])
    before = await agent_row(qdb, agent)

    answer = await floor.api.put(f"/v1/agents/{agent}/status", json={"status": "lunch"})

    assert invalid_fields(answer) == ["status"]
    assert await agent_row(qdb, agent) == before


async def test_unknown_agent_is_404_for_status_and_next_lead(floor: Floor) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    name = unique("agent")

    status = await floor.api.put(
        f"/v1/agents/{name}/status", json={"status": "available"}
    )
    leased = await floor.next_lead(name)

    problem(status, 404, "unknown_agent")
    problem(leased, 404, "unknown_agent")
    problem(await floor.api.get(f"/v1/agents/{name}"), 404, "unknown_agent")
    assert (await floor.lead(lead_id))["state"] == "ready"


@pytest.mark.parametrize("status", ["offline", "away", "busy"])
async def test_agent_who_is_not_available_gets_no_lead(
    floor: Floor, qdb: asyncpg.Connection, status: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool], available=False)
    await floor.status(agent, status)
    lead_before, agent_before = (
        await lead_row(qdb, lead_id),
        await agent_row(qdb, agent),
    )

    answer = await floor.next_lead(agent)

    body = problem(answer, 409, "agent_not_available")
    assert body["agent_status"] == status
    assert await lead_row(qdb, lead_id) == lead_before
    assert await agent_row(qdb, agent) == agent_before


async def test_new_agent_is_offline_until_it_says_otherwise(floor: Floor) -> None:
    pool = await floor.pool()
    await floor.leads(pool)
    agent = await floor.agent([pool], available=False)

    problem(await floor.next_lead(agent), 409, "agent_not_available")
    await floor.status(agent, "available")
    assert (await floor.next_lead(agent)).status_code == 200


async def test_agent_with_an_open_lease_is_busy_and_gets_no_second_lead(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    first, second = await floor.leads(pool, 2)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    other = second if leased["lead"]["lead_id"] == str(first) else first
    other_before = await lead_row(qdb, other)

    answer = await floor.next_lead(agent)

    body = problem(answer, 409, "agent_not_available")
    assert body["agent_status"] == "busy"
    assert body["lease_id"] == leased["lease_id"]
    read = (await floor.api.get(f"/v1/agents/{agent}")).json()
    assert (read["status"], read["open_lease"]) == ("busy", leased["lease_id"])
    assert read["leases"] == 1
    assert await lead_row(qdb, other) == other_before


@pytest.mark.parametrize("status", ["available", "away", "offline"])
async def test_agent_holding_a_lease_cannot_change_presence(
    floor: Floor, qdb: asyncpg.Connection, status: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    lead_before, agent_before = (
        await lead_row(qdb, lead_id),
        await agent_row(qdb, agent),
    )

    answer = await floor.api.put(f"/v1/agents/{agent}/status", json={"status": status})

    body = problem(answer, 409, "lease_open")
    assert body["lease_id"] == leased["lease_id"]
    assert await agent_row(qdb, agent) == agent_before
    assert await lead_row(qdb, lead_id) == lead_before


# --- next lead ---------------------------------------------------------------


async def test_next_lead_is_204_when_nothing_is_due(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    agent = await floor.agent([pool])
    before = await agent_row(qdb, agent)

    await no_lead(floor, agent)

    assert await agent_row(qdb, agent) == before


async def test_agent_draws_only_from_its_own_pools(floor: Floor) -> None:
    mine, theirs = await floor.pool(), await floor.pool()
    await floor.leads(theirs)
    agent = await floor.agent([mine])

    await no_lead(floor, agent)


async def test_next_lead_carries_contact_data_attempt_pool_and_expiry(
    floor: Floor,
) -> None:
    pool = await floor.pool(lease_seconds=90)
    source = unique("src")
    await floor.route(source, pool)
    snapshot = floor.snapshot(
        source, campaign="spring", last_name="Lovelace", email="ada@example.org"
    )
    await floor.receive(snapshot)
    agent = await floor.agent([pool])

    leased = await lease(floor, agent)

    now = floor.clock.now()
    assert uuid.UUID(leased["lease_id"])
    assert moment(leased["expires_at"]) == now + dt.timedelta(seconds=90)
    assert (leased["pool"], leased["attempt"], leased["call_target"]) == (pool, 1, 8)
    assert leased["lead"] == {
        "lead_id": str(snapshot.lead_id),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": snapshot.phone,
        "email": "ada@example.org",
        "source": source,
        "campaign": "spring",
        "timezones": [NEW_YORK],
        "region": None,
    }
    assert leased["reason"]["code"] == "new_lead"
    assert leased["reason"]["waiting_seconds"] == 0


async def test_new_lead_reason_says_how_long_it_waited(floor: Floor) -> None:
    pool = await floor.pool()
    await floor.leads(pool)
    agent = await floor.agent([pool])
    floor.clock.advance(dt.timedelta(seconds=45))

    leased = await lease(floor, agent)

    assert leased["reason"]["code"] == "new_lead"
    assert leased["reason"]["waiting_seconds"] == 45
    assert "45 s" in leased["reason"]["message"]


async def test_late_retry_is_explained_as_behind_cadence(floor: Floor) -> None:
    pool = await floor.pool()
    await floor.leads(pool)
    agent = await floor.agent([pool])
    await called(floor, agent)
    floor.clock.advance(dt.timedelta(minutes=30))

    leased = await lease(floor, agent)

    # Attempt 2 was planned 10 minutes after arrival: 20 minutes ago.
    assert leased["attempt"] == 2
    assert leased["reason"]["code"] == "behind_cadence"
    assert leased["reason"]["behind_seconds"] == 20 * 60
    assert "behind cadence by 20 minutes" in leased["reason"]["message"]


async def test_retry_on_time_is_explained_as_due_by_cadence(floor: Floor) -> None:
    pool = await floor.pool()
    await floor.leads(pool)
    agent = await floor.agent([pool])
    await called(floor, agent)
    floor.clock.advance(dt.timedelta(minutes=10))

    leased = await lease(floor, agent)

    assert leased["reason"]["code"] == "cadence_due"
    assert leased["attempt"] == 2


async def test_never_called_lead_comes_before_a_due_retry(floor: Floor) -> None:
    pool = await floor.pool()
    [retry] = await floor.leads(pool, lead_id=ordered_id(first=True))
    agent = await floor.agent([pool])
    await called(floor, agent)
    floor.clock.advance(dt.timedelta(hours=2))
    [new] = await floor.leads(pool, lead_id=ordered_id(first=False))

    served = [await called(floor, agent), await called(floor, agent)]

    assert served == [str(new), str(retry)]


async def test_retry_further_behind_cadence_comes_first(floor: Floor) -> None:
    """The lead called late is further behind its cadence, though the other
    lead's retry fell due earlier."""
    pool = await floor.pool()
    [late] = await floor.leads(pool, lead_id=ordered_id(first=False))
    floor.clock.advance(dt.timedelta(minutes=20))
    [prompt] = await floor.leads(pool, lead_id=ordered_id(first=True))
    await log_call(floor, prompt)  # on time: attempt 2 planned and due at +30 min
    floor.clock.advance(dt.timedelta(minutes=20))
    await log_call(floor, late)  # late: attempt 2 planned at +10, due at +50 min
    floor.clock.advance(dt.timedelta(minutes=20))
    agent = await floor.agent([pool])

    first, second = await lease(floor, agent), None
    await floor.outcome(first["lease_id"], "no_answer")
    second = await lease(floor, agent)

    assert first["lead"]["lead_id"] == str(late)
    assert first["reason"]["behind_seconds"] == 50 * 60
    assert second["lead"]["lead_id"] == str(prompt)
    assert second["reason"]["behind_seconds"] == 30 * 60


async def test_higher_source_weight_wins_within_the_same_slot(floor: Floor) -> None:
    pool = await floor.pool(source_weights={"hot-leads": 5})
    await floor.route("hot-leads", pool)
    cold_source = unique("cold")
    await floor.route(cold_source, pool)
    [cold] = await floor.receive(
        floor.snapshot(cold_source, lead_id=ordered_id(first=True))
    )
    floor.clock.advance(dt.timedelta(seconds=60))
    [hot] = await floor.receive(
        floor.snapshot("hot-leads", lead_id=ordered_id(first=False))
    )
    agent = await floor.agent([pool])

    served = [await called(floor, agent), await called(floor, agent)]

    assert served == [str(hot), str(cold)]


async def test_source_weight_does_not_beat_a_lead_further_behind(
    floor: Floor,
) -> None:
    pool = await floor.pool(source_weights={"hot-leads": 5})
    await floor.route("hot-leads", pool)
    cold_source = unique("cold")
    await floor.route(cold_source, pool)
    [cold] = await floor.receive(floor.snapshot(cold_source))
    floor.clock.advance(dt.timedelta(minutes=6))  # into the next priority slot
    [hot] = await floor.receive(floor.snapshot("hot-leads"))
    agent = await floor.agent([pool])

    served = [await called(floor, agent), await called(floor, agent)]

    assert served == [str(cold), str(hot)]


async def test_oldest_due_lead_wins_among_equals(floor: Floor) -> None:
    pool = await floor.pool()
    [older] = await floor.leads(pool, lead_id=ordered_id(first=False))
    floor.clock.advance(dt.timedelta(seconds=60))
    [younger] = await floor.leads(pool, lead_id=ordered_id(first=True))
    agent = await floor.agent([pool])

    served = [await called(floor, agent), await called(floor, agent)]

    assert served == [str(older), str(younger)]


async def test_one_lead_goes_to_one_agent(floor: Floor) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    first, second = await floor.agent([pool]), await floor.agent([pool])

    leased = await lease(floor, first)

    assert leased["lead"]["lead_id"] == str(lead_id)
    await no_lead(floor, second)


# --- outcomes ----------------------------------------------------------------


async def log_call(
    floor: Floor, lead_id: uuid.UUID | str, disposition: str = "no_answer", **extra: Any
) -> httpx.Response:
    answer = await floor.api.post(
        f"/v1/leads/{lead_id}/calls", json={"disposition": disposition, **extra}
    )
    assert answer.status_code == 201, answer.text
    return answer


@pytest.mark.parametrize("disposition", ["no_answer", "busy", "voicemail", "contacted"])
async def test_call_without_an_end_counts_an_attempt_and_waits_the_cadence_gap(
    floor: Floor, disposition: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    call_time = floor.clock.now()

    answer = await floor.outcome(leased["lease_id"], disposition, duration_seconds=42)

    assert answer.status_code == 200, answer.text
    lead = await floor.lead(lead_id)
    assert answer.json()["attempts"] == lead["attempts"] == 1
    assert lead["state"] == "waiting"
    assert lead["wait_reason"] == "cadence"
    assert moment(lead["next_due_at"]) == call_time + dt.timedelta(seconds=600)
    assert moment(lead["last_call_at"]) == call_time
    [call] = lead["history"]["calls"]
    assert (call["disposition"], call["duration_seconds"]) == (disposition, 42)
    read = (await floor.api.get(f"/v1/agents/{agent}")).json()
    assert (read["status"], read["open_lease"]) == ("available", None)


async def test_each_attempt_waits_its_own_gap_and_a_short_cadence_repeats_its_last(
    floor: Floor,
) -> None:
    pool = await floor.pool(
        cadence="0m 5m 20m", call_target=5, agent_attempt_limit=None
    )
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    gaps = []

    for _ in range(4):
        await called(floor, agent)
        due = moment((await floor.lead(lead_id))["next_due_at"])
        assert due is not None
        gaps.append(due - floor.clock.now())
        await no_lead(floor, agent)
        floor.at(due)

    assert gaps == [dt.timedelta(minutes=5)] + [dt.timedelta(minutes=20)] * 3


async def test_callback_without_a_time_is_refused(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Regression: a model-level check named the field ``body``."""
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)

    answer = await floor.outcome(leased["lease_id"], "callback")

    assert invalid_fields(answer) == ["callback_at"]
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


@pytest.mark.parametrize(
    "callback_at",
    [
        lambda now: now.isoformat(),
        lambda now: (now - MINUTE).isoformat(),
        lambda now: (now + dt.timedelta(days=91)).isoformat(),
        lambda now: (now + MINUTE).replace(tzinfo=None).isoformat(),
    ],
    ids=["now", "past", "beyond-90-days", "no-offset"],
)
async def test_callback_at_a_time_that_cannot_be_kept_is_refused(
    floor: Floor, qdb: asyncpg.Connection, callback_at: Any
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)

    answer = await floor.outcome(
        leased["lease_id"], "callback", callback_at=callback_at(floor.clock.now())
    )

    assert invalid_fields(answer) == ["callback_at"]
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


async def test_callback_is_scheduled_and_held_for_the_agent_who_took_it(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    taker, other = await floor.agent([pool]), await floor.agent([pool])
    leased = await lease(floor, taker)
    callback_at = floor.clock.now() + dt.timedelta(hours=1)

    answer = await floor.outcome(
        leased["lease_id"], "callback", callback_at=callback_at.isoformat()
    )

    assert answer.status_code == 200, answer.text
    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"]) == ("waiting", 1)
    assert moment(lead["next_due_at"]) == moment(lead["callback_at"]) == callback_at
    floor.at(callback_at)
    await no_lead(floor, other)
    again = await lease(floor, taker)
    assert again["lead"]["lead_id"] == str(lead_id)
    assert again["reason"]["code"] == "callback_due"
    assert moment(again["reason"]["callback_at"]) == callback_at


async def test_callback_goes_to_other_agents_once_the_hold_ends(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool(callback_hold_seconds=600)
    [lead_id] = await floor.leads(pool)
    taker, other = await floor.agent([pool]), await floor.agent([pool])
    leased = await lease(floor, taker)
    callback_at = floor.clock.now() + dt.timedelta(hours=1)
    await floor.outcome(
        leased["lease_id"], "callback", callback_at=callback_at.isoformat()
    )
    floor.at(callback_at + dt.timedelta(seconds=599))
    await no_lead(floor, other)

    floor.at(callback_at + dt.timedelta(seconds=600))
    again = await lease(floor, other)

    assert again["lead"]["lead_id"] == str(lead_id)
    stale = [
        event.data
        for event in await events(qdb, lead_id)
        if isinstance(event.data, LeadRecycled)
    ]
    assert [(e.reason, e.from_agent_id) for e in stale] == [("stale", taker)]


@pytest.mark.parametrize("disposition", ["appointment", "converted"])
async def test_appointment_or_conversion_ends_the_lead_converted(
    floor: Floor, qdb: asyncpg.Connection, disposition: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])

    await called(floor, agent, disposition)

    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["next_due_at"]) == (
        "converted",
        1,
        None,
    )
    assert moment(lead["ended_at"]) == floor.clock.now()
    converted = (await events(qdb, lead_id))[-1]
    assert converted.type == "lead.converted.v1"
    assert converted.data.model_dump(
        include={"agent_id", "attempt", "disposition"}
    ) == {
        "agent_id": agent,
        "attempt": 1,
        "disposition": disposition,
    }
    floor.clock.advance(dt.timedelta(days=1))
    await no_lead(floor, agent)


async def test_not_interested_lead_is_never_served_to_that_agent_again(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    quitter, colleague = await floor.agent([pool]), await floor.agent([pool])

    await called(floor, quitter, "not_interested")

    recycled = [e for e in await events(qdb, lead_id) if e.type == "lead.recycled.v1"]
    assert [
        e.data.model_dump(include={"reason", "from_agent_id"}) for e in recycled
    ] == [{"reason": "not_interested", "from_agent_id": quitter}]
    floor.clock.advance(dt.timedelta(minutes=10))
    await no_lead(floor, quitter)
    assert await called(floor, colleague) == str(lead_id)
    floor.clock.advance(dt.timedelta(hours=1))
    await no_lead(floor, quitter)
    assert (await eligibility(floor, lead_id))["excluded_agents"] == [quitter]


async def test_wrong_number_invalidates_the_lead(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])

    await called(floor, agent, "wrong_number")

    assert (await floor.lead(lead_id))["state"] == "invalid"
    invalid = (await events(qdb, lead_id))[-1]
    assert invalid.type == "lead.invalid.v1"
    assert invalid.data.reason == "wrong_number"  # type: ignore[attr-defined]


async def test_dnc_outcome_opts_the_lead_out_and_lists_its_number(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    phone = unique_phone()
    [lead_id] = await floor.leads(pool, phone=phone)
    agent = await floor.agent([pool])

    await called(floor, agent, "dnc")

    assert (await floor.lead(lead_id))["state"] == "opted_out"
    listed = await floor.api.get(f"/v1/dnc/{phone}")
    assert listed.status_code == 200, listed.text
    assert listed.json()["phone"] == phone
    opted_out = (await events(qdb, lead_id))[-1]
    assert opted_out.type == "lead.opted_out.v1"
    assert opted_out.data.phone == phone  # type: ignore[attr-defined]


async def test_dnc_outcome_keeps_other_leads_with_the_number_from_being_called(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    phone = unique_phone()
    leads = await floor.leads(pool, 2, phone=phone)
    agent = await floor.agent([pool])

    opted_out = await called(floor, agent, "dnc")

    [other] = [lead for lead in leads if str(lead) != opted_out]
    floor.clock.advance(dt.timedelta(hours=1))
    await no_lead(floor, agent)
    assert (await floor.lead(opted_out))["state"] == "opted_out"
    reasons = (await eligibility(floor, other))["reasons"]
    assert [reason["code"] for reason in reasons] == ["on_dnc"]


async def test_reaching_the_call_target_exhausts_the_lead(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool(call_target=2, cadence="0s")
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])

    await called(floor, agent)
    await called(floor, agent)

    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["next_due_at"]) == (
        "exhausted",
        2,
        None,
    )
    await no_lead(floor, agent)
    exhausted = (await events(qdb, lead_id))[-1]
    assert exhausted.type == "lead.exhausted.v1"
    assert exhausted.data.model_dump(include={"attempts", "call_target"}) == {
        "attempts": 2,
        "call_target": 2,
    }


async def test_exhausted_lead_moves_to_the_exhausted_to_pool(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    second_round = await floor.pool(call_target=3)
    first_round = await floor.pool(call_target=1, exhausted_to=second_round)
    [lead_id] = await floor.leads(first_round)
    first_agent = await floor.agent([first_round])
    second_agent = await floor.agent([second_round])

    await called(floor, first_agent)

    lead = await floor.lead(lead_id)
    assert (lead["pool"], lead["attempts"], lead["call_target"]) == (
        second_round,
        0,
        3,
    )
    assert lead["state"] in ("waiting", "ready")
    [call] = lead["history"]["calls"]
    assert (call["pool"], call["attempt"]) == (first_round, 1), (
        "the call was attempt 1 of the first round"
    )
    assert (await event_types(qdb, lead_id))[-3:] == [
        "call.logged.v1",
        "lead.exhausted.v1",
        "lead.queued.v1",
    ]
    await no_lead(floor, first_agent)
    floor.clock.advance(dt.timedelta(minutes=10))
    again = await lease(floor, second_agent)
    assert (again["lead"]["lead_id"], again["pool"]) == (str(lead_id), second_round)
    assert again["attempt"] == 1


async def test_lead_queued_tells_the_cadence_and_the_attempts_a_lead_brings(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """The metrics plan a round's attempts from lead.queued: a recycle to
    another pool keeps the lead's attempts, a new arrival brings none."""
    other = await floor.pool(call_target=5, cadence="0m 30m")
    pool = await floor.pool(call_target=5, cadence="0m 10m 1h", recycle_to=other)
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])

    await called(floor, agent, "not_interested")

    queued = [
        event.data
        for event in await events(qdb, lead_id)
        if isinstance(event.data, LeadQueued)
    ]
    assert [
        (data.pool, data.attempts, data.cadence_seconds, data.call_target)
        for data in queued
    ] == [(pool, 0, [0, 600, 3600], 5), (other, 1, [0, 1800], 5)]


async def test_lead_queued_tells_whether_nurture_may_take_a_lead_still_called(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Nurture enrols leads a pool still calls unless the pool says not to;
    it learns the pool's word from lead.queued."""
    holding = await floor.pool(nurture_while_calling=False)
    [held] = await floor.leads(holding)
    default = await floor.pool()
    [taken] = await floor.leads(default)

    flags = {
        lead_id: [
            event.data.nurture_while_calling
            for event in await events(qdb, lead_id)
            if isinstance(event.data, LeadQueued)
        ]
        for lead_id in (held, taken)
    }

    assert flags == {held: [False], taken: [True]}


async def test_second_outcome_for_a_lease_is_refused(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    await floor.outcome(leased["lease_id"], "no_answer")
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)

    answer = await floor.outcome(leased["lease_id"], "converted")

    body = problem(answer, 409, "lease_closed")
    assert (body["end_reason"], body["disposition"]) == ("outcome", "no_answer")
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


async def test_outcome_for_an_unknown_lease_is_404(floor: Floor) -> None:
    answer = await floor.outcome(str(uuid.uuid4()), "no_answer")

    problem(answer, 404, "unknown_lease")


async def test_outcome_for_a_lease_id_that_is_not_a_uuid_is_refused(
    floor: Floor,
) -> None:
    answer = await floor.outcome("not-a-lease", "no_answer")

    assert invalid_fields(answer) == ["path.lease"]


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "not-yet-reaped"])
async def test_outcome_after_the_lease_expired_is_refused_and_not_counted(
    floor: Floor, qdb: asyncpg.Connection, reaped: bool
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    expires_at = moment(leased["expires_at"])
    assert expires_at is not None
    floor.at(expires_at + dt.timedelta(seconds=1))
    if reaped:
        await floor.service.tick()

    answer = await floor.outcome(leased["lease_id"], "contacted")

    body = problem(answer, 409, "lease_expired")
    assert body["lead_id"] == str(lead_id)
    await floor.service.tick()
    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["history"]["calls"]) == (
        "ready",
        0,
        [],
    )
    [ended] = lead["history"]["leases"]
    assert ended["end_reason"] == "expired"
    read = (await floor.api.get(f"/v1/agents/{agent}")).json()
    assert read["expired_leases"] == 1


async def test_malformed_json_outcome_is_refused_and_changes_nothing(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)

    answer = await floor.api.post(
        f"/v1/leases/{leased['lease_id']}/outcome",
        content=b'{"disposition": "no_answer"',
        headers={"content-type": "application/json"},
    )

    problem(answer, 400, "malformed_json")
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"disposition": "hung_up"}, "disposition"),
        ({}, "disposition"),
        ({"disposition": "no_answer", "duration_seconds": -1}, "duration_seconds"),
        ({"disposition": "no_answer", "mood": "grumpy"}, "mood"),
    ],
)
async def test_invalid_outcome_is_refused_naming_the_field(
    floor: Floor, qdb: asyncpg.Connection, body: dict[str, Any], field: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)

    answer = await floor.api.post(f"/v1/leases/{leased['lease_id']}/outcome", json=body)

    assert invalid_fields(answer) == [field]
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


# --- releases ----------------------------------------------------------------


async def test_released_lead_is_ready_again_without_an_attempt(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    picker, colleague = await floor.agent([pool]), await floor.agent([pool])
    leased = await lease(floor, picker)

    answer = await floor.api.post(f"/v1/leases/{leased['lease_id']}/release")

    assert answer.status_code == 200, answer.text
    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["lease"]) == ("ready", 0, None)
    assert lead["history"]["calls"] == []
    assert lead["history"]["leases"][0]["end_reason"] == "released"
    read = (await floor.api.get(f"/v1/agents/{picker}")).json()
    assert (read["releases"], read["status"], read["open_lease"]) == (
        1,
        "available",
        None,
    )
    again = await lease(floor, colleague)
    assert (again["lead"]["lead_id"], again["attempt"]) == (str(lead_id), 1)
    recycled = (await events(qdb, lead_id))[-2]
    assert recycled.type == "lead.recycled.v1"
    assert recycled.data.model_dump(include={"reason", "from_agent_id"}) == {
        "reason": "released",
        "from_agent_id": picker,
    }


async def test_release_twice_is_refused(floor: Floor, qdb: asyncpg.Connection) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    await floor.api.post(f"/v1/leases/{leased['lease_id']}/release")
    before = (
        await lead_row(qdb, lead_id),
        await traces(qdb, lead_id),
        await agent_row(qdb, agent),
    )

    second = await floor.api.post(f"/v1/leases/{leased['lease_id']}/release")
    outcome = await floor.outcome(leased["lease_id"], "no_answer")

    assert problem(second, 409, "lease_closed")["end_reason"] == "released"
    problem(outcome, 409, "lease_closed")
    after = (
        await lead_row(qdb, lead_id),
        await traces(qdb, lead_id),
        await agent_row(qdb, agent),
    )
    assert after == before
    assert after[2]["releases"] == 1


async def test_release_after_the_lease_expired_is_refused(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    floor.clock.advance(dt.timedelta(seconds=121))
    await floor.service.tick()
    before = await lead_row(qdb, lead_id), await agent_row(qdb, agent)

    answer = await floor.api.post(f"/v1/leases/{leased['lease_id']}/release")

    problem(answer, 409, "lease_expired")
    assert (await lead_row(qdb, lead_id), await agent_row(qdb, agent)) == before
    assert before[1]["releases"] == 0


async def test_release_of_an_unknown_lease_is_404(floor: Floor) -> None:
    answer = await floor.api.post(f"/v1/leases/{uuid.uuid4()}/release")

    problem(answer, 404, "unknown_lease")


# --- calls logged from outside ------------------------------------------------


async def test_call_logged_from_outside_counts_as_an_attempt(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    called_at = floor.clock.now() + dt.timedelta(minutes=2)
    floor.clock.advance(dt.timedelta(minutes=5))

    answer = await log_call(
        floor,
        lead_id,
        "voicemail",
        called_at=called_at.isoformat(),
        agent_id=agent,
        duration_seconds=30,
    )

    assert answer.json()["attempts"] == 1
    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"]) == ("waiting", 1)
    assert moment(lead["next_due_at"]) == called_at + dt.timedelta(minutes=10)
    [call] = lead["history"]["calls"]
    assert call["via_queue"] is False
    assert (call["lease_id"], call["agent_id"], call["disposition"]) == (
        None,
        agent,
        "voicemail",
    )
    assert moment(call["called_at"]) == called_at
    logged = (await events(qdb, lead_id))[-1]
    assert logged.type == "call.logged.v1"
    assert logged.data.model_dump(
        include={"via_queue", "attempt", "agent_id", "duration_seconds"}
    ) == {"via_queue": False, "attempt": 1, "agent_id": agent, "duration_seconds": 30}


async def test_outside_call_is_refused_while_the_lead_is_leased(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)

    answer = await floor.api.post(
        f"/v1/leads/{lead_id}/calls", json={"disposition": "no_answer"}
    )

    assert problem(answer, 409, "lead_leased")["lease_id"] == leased["lease_id"]
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


async def test_outside_call_in_the_future_is_refused(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    before = await lead_row(qdb, lead_id), await traces(qdb, lead_id)
    later = floor.clock.now() + MINUTE

    answer = await floor.api.post(
        f"/v1/leads/{lead_id}/calls",
        json={"disposition": "no_answer", "called_at": later.isoformat()},
    )

    assert invalid_fields(answer) == ["called_at"]
    assert (await lead_row(qdb, lead_id), await traces(qdb, lead_id)) == before


async def test_outside_call_for_an_unknown_lead_is_404(floor: Floor) -> None:
    answer = await floor.api.post(
        f"/v1/leads/{uuid.uuid4()}/calls", json={"disposition": "no_answer"}
    )

    problem(answer, 404, "unknown_lead")


# --- do-not-call -------------------------------------------------------------


async def test_number_is_listed_read_and_unlisted(api: httpx.AsyncClient) -> None:
    """Regression: every DNC insert failed with a 500, as ``SELECT DISTINCT``
    typed the untyped ``listed_at`` parameter as text."""
    phone = unique_phone()

    first = await api.put(f"/v1/dnc/{phone}", json={"reason": "asked on the phone"})
    again = await api.put(f"/v1/dnc/{phone}")
    read = await api.get(f"/v1/dnc/{phone}")
    removed = await api.delete(f"/v1/dnc/{phone}")
    removed_again = await api.delete(f"/v1/dnc/{phone}")

    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert read.status_code == 200, read.text
    assert (read.json()["phone"], read.json()["reason"]) == (
        phone,
        "asked on the phone",
    )
    assert removed.status_code == 204, removed.text
    problem(removed_again, 404, "not_found")
    problem(await api.get(f"/v1/dnc/{phone}"), 404, "not_found")


async def test_number_is_listed_in_e164_whatever_its_spelling(
    api: httpx.AsyncClient,
) -> None:
    phone = unique_phone()
    national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"

    answer = await api.put(f"/v1/dnc/{national}")

    assert answer.status_code == 201, answer.text
    assert answer.json()["phone"] == phone
    assert (await api.get(f"/v1/dnc/{phone}")).status_code == 200


async def test_invalid_number_on_the_dnc_path_is_refused(
    api: httpx.AsyncClient,
) -> None:
    """Regression: the path's one number was named ``phones[0]``."""
    answer = await api.put("/v1/dnc/12345")

    assert invalid_fields(answer) == ["phone"]


async def test_bulk_dnc_with_one_invalid_number_lists_none(
    api: httpx.AsyncClient,
) -> None:
    good, also_good = unique_phone(), unique_phone()

    answer = await api.post(
        "/v1/dnc", json={"phones": [good, "not a phone", also_good]}
    )

    assert invalid_fields(answer) == ["phones[1]"]
    for phone in (good, also_good):
        problem(await api.get(f"/v1/dnc/{phone}"), 404, "not_found")


async def test_bulk_dnc_lists_every_number_once(api: httpx.AsyncClient) -> None:
    listed, fresh = unique_phone(), unique_phone()
    await api.put(f"/v1/dnc/{listed}")

    answer = await api.post("/v1/dnc", json={"phones": [listed, fresh, fresh]})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"listed": 1, "already_listed": 1}
    read = await api.get(f"/v1/dnc/{fresh}")
    assert read.json()["reason"] == "bulk"


async def test_bulk_dnc_counts_two_spellings_of_a_number_once(
    api: httpx.AsyncClient,
) -> None:
    """Regression: ``already_listed`` was counted over the numbers as sent,
    so two spellings of one new number reported one as already listed."""
    phone = unique_phone()
    national = f"({phone[2:5]}) {phone[5:8]}-{phone[8:]}"

    answer = await api.post("/v1/dnc", json={"phones": [phone, national]})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"listed": 1, "already_listed": 0}


async def test_listed_number_is_never_leased_until_unlisted(floor: Floor) -> None:
    pool = await floor.pool()
    phone = unique_phone()
    [lead_id] = await floor.leads(pool, phone=phone)
    agent = await floor.agent([pool])

    answer = await floor.api.put(f"/v1/dnc/{phone}")

    assert answer.status_code == 201, answer.text
    await no_lead(floor, agent)
    reasons = (await eligibility(floor, lead_id))["reasons"]
    assert [reason["code"] for reason in reasons] == ["on_dnc"]
    floor.clock.advance(dt.timedelta(days=1))
    await no_lead(floor, agent)
    assert (await floor.api.delete(f"/v1/dnc/{phone}")).status_code == 204
    assert (await lease(floor, agent))["lead"]["lead_id"] == str(lead_id)


async def test_lead_arriving_with_a_listed_number_is_not_leased(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    phone = unique_phone()
    await floor.api.put(f"/v1/dnc/{phone}")
    agent = await floor.agent([pool])

    [lead_id] = await floor.leads(pool, phone=phone)

    await no_lead(floor, agent)
    assert (await floor.lead(lead_id))["next_due_at"] is None
    assert [r["code"] for r in (await eligibility(floor, lead_id))["reasons"]] == [
        "on_dnc"
    ]


# --- reading a lead ----------------------------------------------------------


async def test_lead_view_shows_state_attempts_next_due_and_history(
    floor: Floor,
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    released = await lease(floor, agent)
    await floor.api.post(f"/v1/leases/{released['lease_id']}/release")
    leased = await lease(floor, agent)
    now = floor.clock.now()

    during = await floor.lead(lead_id)
    await floor.outcome(
        leased["lease_id"],
        "busy",
        duration_seconds=5,
        note="asked to ring after five",
    )
    after = await floor.lead(lead_id)

    assert during["state"] == "leased"
    assert during["lease"] == {
        "lease_id": leased["lease_id"],
        "agent_id": agent,
        "expires_at": during["lease"]["expires_at"],
    }
    assert moment(during["lease"]["expires_at"]) == now + dt.timedelta(seconds=120)
    assert (after["state"], after["attempts"], after["call_target"]) == (
        "waiting",
        1,
        8,
    )
    assert moment(after["next_due_at"]) == now + dt.timedelta(minutes=10)
    assert [
        (row["lease_id"], row["attempt"], row["end_reason"], row["disposition"])
        for row in after["history"]["leases"]
    ] == [
        (released["lease_id"], 1, "released", None),
        (leased["lease_id"], 1, "outcome", "busy"),
    ]
    [call] = after["history"]["calls"]
    assert call == {
        "call_id": call["call_id"],
        "lease_id": leased["lease_id"],
        "agent_id": agent,
        "pool": pool,
        "attempt": 1,
        "disposition": "busy",
        "duration_seconds": 5,
        "called_at": call["called_at"],
        "via_queue": True,
        "callback_at": None,
        "note": "asked to ring after five",
    }
    assert moment(call["called_at"]) == now


async def test_unknown_lead_is_404(api: httpx.AsyncClient) -> None:
    lead_id = uuid.uuid4()

    problem(await api.get(f"/v1/leads/{lead_id}"), 404, "unknown_lead")
    problem(await api.get(f"/v1/leads/{lead_id}/eligibility"), 404, "unknown_lead")


async def test_ready_lead_is_eligible_with_no_reasons(floor: Floor) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)

    answer = await eligibility(floor, lead_id)

    assert (answer["eligible"], answer["reasons"], answer["state"]) == (
        True,
        [],
        "ready",
    )


async def test_eligibility_explains_a_cadence_gap(floor: Floor) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    await called(floor, agent)

    answer = await eligibility(floor, lead_id)

    assert answer["eligible"] is False
    [reason] = answer["reasons"]
    assert reason["code"] == "cadence_gap"
    assert moment(reason["until"]) == floor.clock.now() + dt.timedelta(minutes=10)


async def test_eligibility_explains_a_lease(floor: Floor) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)

    answer = await eligibility(floor, lead_id)

    [reason] = answer["reasons"]
    assert (reason["code"], reason["agent_id"]) == ("leased", agent)
    assert moment(reason["until"]) == moment(leased["expires_at"])


async def test_eligibility_explains_calling_hours(floor: Floor) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    evening = floor.to_local(NEW_YORK, 22)

    answer = await eligibility(floor, lead_id)

    [reason] = answer["reasons"]
    assert reason["code"] == "outside_calling_hours"
    opens = next_local(evening, NEW_YORK, 8, 0, MONDAY_TO_SATURDAY)
    assert moment(reason["until"]) == opens
    await no_lead(floor, agent)
    floor.at(opens)
    assert (await lease(floor, agent))["lead"]["lead_id"] == str(lead_id)


@pytest.mark.parametrize(
    ("disposition", "state"),
    [
        ("converted", "converted"),
        ("wrong_number", "invalid"),
        ("dnc", "opted_out"),
    ],
)
async def test_eligibility_names_the_terminal_state(
    floor: Floor, disposition: str, state: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    await called(floor, agent, disposition)

    answer = await eligibility(floor, lead_id)

    assert (answer["state"], answer["eligible"]) == (state, False)
    assert [(r["code"], r["until"]) for r in answer["reasons"]] == [(state, None)]


async def test_eligibility_names_an_exhausted_lead(floor: Floor) -> None:
    pool = await floor.pool(call_target=1)
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    await called(floor, agent)

    answer = await eligibility(floor, lead_id)

    assert [(r["code"], r["until"]) for r in answer["reasons"]] == [("exhausted", None)]


# --- pool statistics ---------------------------------------------------------


async def test_pool_stats_count_leads_by_state_and_source(floor: Floor) -> None:
    pool = await floor.pool()
    first_source, second_source = unique("src"), unique("src")
    await floor.route(first_source, pool)
    await floor.route(second_source, pool)
    await floor.receive(*(floor.snapshot(first_source) for _ in range(3)))
    floor.clock.advance(dt.timedelta(seconds=60))
    await floor.receive(floor.snapshot(second_source))
    caller, holder = await floor.agent([pool]), await floor.agent([pool])
    await called(floor, caller)
    await lease(floor, holder)

    answer = await floor.api.get(f"/v1/pools/{pool}/stats")

    assert answer.status_code == 200, answer.text
    stats = answer.json()
    assert (stats["pool"], stats["queued"], stats["due_now"], stats["leased"]) == (
        pool,
        3,
        2,
        1,
    )
    assert stats["by_state"] == {
        "waiting": 1,
        "ready": 2,
        "leased": 1,
        "converted": 0,
        "exhausted": 0,
        "invalid": 0,
        "opted_out": 0,
        "not_callable": 0,
    }
    assert stats["by_source"] == {
        first_source: {"waiting": 1, "ready": 1, "leased": 1},
        second_source: {"ready": 1},
    }


async def test_pool_stats_of_an_empty_pool_are_zero(floor: Floor) -> None:
    pool = await floor.pool()

    stats = (await floor.api.get(f"/v1/pools/{pool}/stats")).json()

    assert (stats["queued"], stats["due_now"], stats["leased"]) == (0, 0, 0)
    assert set(stats["by_state"].values()) == {0}
    assert stats["by_source"] == {}


# --- events and metrics ------------------------------------------------------


async def test_lead_life_to_exhaustion_writes_its_events_in_order(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool(call_target=2, cadence="0s")
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool], team="east")

    for disposition, seconds in (("no_answer", 20), ("voicemail", 35)):
        leased = await lease(floor, agent)
        await floor.outcome(leased["lease_id"], disposition, duration_seconds=seconds)

    written = await events(qdb, lead_id)
    assert [event.type for event in written] == [
        "lead.queued.v1",
        "lead.leased.v1",
        "call.logged.v1",
        "lead.leased.v1",
        "call.logged.v1",
        "lead.exhausted.v1",
    ]
    assert {event.subject for event in written} == {str(lead_id)}
    assert {event.source for event in written} == {"redial/queue"}
    calls = [event.data for event in written if event.type == "call.logged.v1"]
    fields = {"attempt", "disposition", "agent_id", "team", "duration_seconds"}
    assert [call.model_dump(include=fields) for call in calls] == [
        {
            "attempt": 1,
            "disposition": "no_answer",
            "agent_id": agent,
            "team": "east",
            "duration_seconds": 20,
        },
        {
            "attempt": 2,
            "disposition": "voicemail",
            "agent_id": agent,
            "team": "east",
            "duration_seconds": 35,
        },
    ]
    leases = [event.data for event in written if event.type == "lead.leased.v1"]
    assert [lease.attempt for lease in leases] == [1, 2]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("disposition", "last"),
    [
        ("converted", "lead.converted.v1"),
        ("appointment", "lead.converted.v1"),
        ("dnc", "lead.opted_out.v1"),
        ("wrong_number", "lead.invalid.v1"),
    ],
)
async def test_ending_call_writes_call_logged_then_the_ending(
    floor: Floor, qdb: asyncpg.Connection, disposition: str, last: str
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])

    await called(floor, agent, disposition)

    assert await event_types(qdb, lead_id) == [
        "lead.queued.v1",
        "lead.leased.v1",
        "call.logged.v1",
        last,
    ]


async def test_expired_lease_writes_a_recycled_event(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    await lease(floor, agent)
    floor.clock.advance(dt.timedelta(seconds=121))

    await floor.service.tick()

    recycled = (await events(qdb, lead_id))[-1]
    assert recycled.type == "lead.recycled.v1"
    assert recycled.data.model_dump(include={"reason", "from_agent_id"}) == {
        "reason": "lease_expired",
        "from_agent_id": agent,
    }
    read = (await floor.api.get(f"/v1/agents/{agent}")).json()
    assert (read["expired_leases"], read["status"]) == (1, "away")


async def test_refused_requests_write_no_events(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    [lead_id] = await floor.leads(pool)
    agent = await floor.agent([pool])
    leased = await lease(floor, agent)
    await floor.outcome(leased["lease_id"], "no_answer")
    written = await event_types(qdb, lead_id)

    await floor.outcome(leased["lease_id"], "converted")
    await floor.api.post(f"/v1/leases/{leased['lease_id']}/release")
    await floor.api.post(
        f"/v1/leads/{lead_id}/calls",
        json={
            "disposition": "no_answer",
            "called_at": (floor.clock.now() + MINUTE).isoformat(),
        },
    )

    assert await event_types(qdb, lead_id) == written


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def test_metrics_count_leases_and_outcomes(floor: Floor) -> None:
    pool = await floor.pool()
    await floor.leads(pool, 2)
    agent = await floor.agent([pool])

    await called(floor, agent, "no_answer")
    await called(floor, agent, "converted")

    text = (await floor.api.get("/metrics")).text
    assert _sample(text, "redial_queue_leases_total", {"pool": pool}) == 2
    for disposition in ("no_answer", "converted"):
        labels = {"pool": pool, "disposition": disposition}
        assert _sample(text, "redial_queue_outcomes_total", labels) == 1
