"""Many agents, and two copies of the queue, drawing from shared pools at once.

Every test talks HTTP to real uvicorn servers on the real PostgreSQL: a lead is
never on two open leases at once, nor is a phone number; every due lead is
served; an expired lease is reaped exactly once even by two processes; a
recycled lead goes to other agents; a lead published on Kafka reaches its pool
once.

Lease intervals are checked from both ends. The dialer notes the inside of
each lease (from the moment the next-lead answer is in hand to the moment the
outcome is sent), which lies strictly within the time the lease was open, so
two such intervals that overlap prove a double lease. The ``leases`` rows are
checked with SQL as well; where a lead cannot legitimately change hands within
one phase of a test, the clock is stepped by microseconds per request so those
rows carry distinct, ordered times.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import ssl
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.queue.app import create_app
from services.queue.service import QueueService
from shared.clock import ManualClock
from shared.events import (
    CONTENT_TYPE,
    Envelope,
    LeadQueued,
    LeadRecycled,
    decode,
    new_event,
)
from shared.kafka import make_producer
from shared.settings import LEAD_EVENTS_TOPIC
from tests.conftest import Server, Stack, unique_phone
from tests.queue.conftest import Floor, queue_settings

#: How far each request moves the clock when a test wants distinct lease times
#: (far below the one-second scheduler tick, so no extra pass is caused).
STEP = dt.timedelta(microseconds=50)
#: Tansu's consumer-group joins are slow; the queue's consumer may still be
#: joining when the test publishes.
KAFKA_WAIT_SECONDS = 60.0


# --- dialers ------------------------------------------------------------------


@dataclass
class HeldLease:
    """A lease as the dialer saw it (``time.perf_counter`` seconds): in hand
    from ``opened`` until ``closed``, when its outcome was about to be sent or
    the clock was moved past its expiry."""

    lease_id: str
    lead_id: str
    phone: str
    agent: str
    opened: float
    closed: float | None = None


@dataclass
class Dialer:
    """One agent's seat. Spreads its requests over the given servers' clients
    and writes down every lease and every status code."""

    agent: str
    clients: Sequence[httpx.AsyncClient]
    clock: ManualClock
    #: Step the clock before each request (see the module docstring).
    step: bool = True
    held: list[HeldLease] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    _turn: itertools.count[int] = field(
        default_factory=itertools.count, init=False, repr=False
    )

    def _client(self) -> httpx.AsyncClient:
        return self.clients[next(self._turn) % len(self.clients)]

    def _tick(self) -> None:
        if self.step:
            self.clock.advance(STEP)

    async def draw(self) -> HeldLease | None:
        """Asks for the next lead; the lease in hand, or None for any other
        answer (which is recorded in ``statuses``)."""
        self._tick()
        answer = await self._client().post(f"/v1/agents/{self.agent}/next-lead")
        opened = time.perf_counter()
        self.statuses.append(("next-lead", answer.status_code))
        if answer.status_code != 200:
            return None
        body = answer.json()
        lease = HeldLease(
            lease_id=body["lease_id"],
            lead_id=body["lead"]["lead_id"],
            phone=body["lead"]["phone"],
            agent=self.agent,
            opened=opened,
        )
        self.held.append(lease)
        return lease

    async def call(
        self, lease: HeldLease, disposition: str = "no_answer"
    ) -> httpx.Response:
        """Makes the call (yielding once so other seats run meanwhile) and
        records its outcome."""
        await asyncio.sleep(0)
        lease.closed = time.perf_counter()
        self._tick()
        answer = await self._client().post(
            f"/v1/leases/{lease.lease_id}/outcome", json={"disposition": disposition}
        )
        self.statuses.append(("outcome", answer.status_code))
        return answer

    async def work_until_empty(self) -> None:
        """next-lead → no_answer until the queue has nothing for this agent."""
        while (lease := await self.draw()) is not None:
            await self.call(lease)

    async def be_available(self) -> None:
        answer = await self._client().put(
            f"/v1/agents/{self.agent}/status", json={"status": "available"}
        )
        assert answer.status_code == 200, answer.text


@contextlib.asynccontextmanager
async def seated(
    agents: Sequence[str],
    servers: Sequence[Server],
    clock: ManualClock,
    *,
    step: bool = True,
) -> AsyncIterator[list[Dialer]]:
    """A dialer per agent, each with its own connection to every server, as
    real dialer seats have (one client shared by a hundred seats spends its
    time in its connection-pool bookkeeping rather than in the queue)."""
    # Plain HTTP, but httpx would build a TLS context per client (~50 ms each).
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as exits:
        dialers = []
        for agent in agents:
            clients = [
                await exits.enter_async_context(
                    httpx.AsyncClient(base_url=server.url, timeout=60, verify=tls)
                )
                for server in servers
            ]
            dialers.append(Dialer(agent, clients, clock, step=step))
        yield dialers


async def seat(floor: Floor, pool: str, count: int) -> list[str]:
    """``count`` available agents drawing from ``pool``, set up ten at a time."""
    setting_up = asyncio.Semaphore(10)

    async def one() -> str:
        async with setting_up:
            return await floor.agent([pool])

    return list(await asyncio.gather(*(one() for _ in range(count))))


def unanswered(dialers: Iterable[Dialer]) -> list[tuple[str, str, int]]:
    """Requests that got anything but the answers a healthy queue gives."""
    expected = {"next-lead": {200, 204}, "outcome": {200}}
    return [
        (dialer.agent, request, code)
        for dialer in dialers
        for request, code in dialer.statuses
        if code not in expected[request]
    ]


def clashes(
    held: Iterable[HeldLease], key: Callable[[HeldLease], str]
) -> list[tuple[HeldLease, HeldLease]]:
    """Pairs of leases with the same key that were in hand at the same time."""
    groups: dict[str, list[HeldLease]] = defaultdict(list)
    for lease in held:
        assert lease.closed is not None, f"lease {lease.lease_id} never closed"
        groups[key(lease)].append(lease)
    found = []
    for leases in groups.values():
        leases.sort(key=lambda lease: lease.opened)
        latest: HeldLease | None = None
        for lease in leases:
            if latest is not None and lease.opened < _closed(latest):
                found.append((latest, lease))
            if latest is None or _closed(lease) > _closed(latest):
                latest = lease
    return found


def _closed(lease: HeldLease) -> float:
    assert lease.closed is not None
    return lease.closed


# --- what the database says ---------------------------------------------------


async def overlapping_lease_rows(
    qdb: asyncpg.Connection, lead_ids: Sequence[uuid.UUID], *, by_phone: bool = False
) -> list[asyncpg.Record]:
    """Pairs of ``leases`` rows whose open periods intersect, for one lead or
    (``by_phone``) for leads sharing a number; an open row runs to infinity."""
    return await qdb.fetch(
        """
        SELECT a.lease_id AS first, b.lease_id AS second, la.phone
        FROM leases a
        JOIN leads la ON la.lead_id = a.lead_id
        JOIN leases b ON b.lease_id <> a.lease_id AND b.leased_at >= a.leased_at
        JOIN leads lb ON lb.lead_id = b.lead_id
        WHERE a.lead_id = ANY($1::uuid[]) AND b.lead_id = ANY($1::uuid[])
          AND (a.lead_id = b.lead_id OR ($2 AND la.phone = lb.phone))
          AND tstzrange(a.leased_at, a.ended_at) && tstzrange(b.leased_at, b.ended_at)
        """,
        list(lead_ids),
        by_phone,
    )


async def inconsistent_leads(
    qdb: asyncpg.Connection, lead_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """Leads whose state disagrees with their lease rows, their agent or their
    number: a leased lead has exactly one open lease row (its own), a busy
    agent and its number claimed until the lease expires; any other lead has
    no open lease row and no lease fields."""
    return await qdb.fetch(
        """
        SELECT l.lead_id, l.state, l.lease_id, l.leased_agent, a.status,
               p.leased_until, l.lease_expires_at,
               count(s.lease_id) FILTER (WHERE s.ended_at IS NULL) AS open_rows,
               count(s.lease_id) FILTER (
                   WHERE s.ended_at IS NULL AND s.lease_id = l.lease_id) AS own_open
        FROM leads l
        LEFT JOIN leases s ON s.lead_id = l.lead_id
        LEFT JOIN agents a ON a.agent_id = l.leased_agent
        LEFT JOIN phones p ON p.phone = l.phone
        WHERE l.lead_id = ANY($1::uuid[])
        GROUP BY l.lead_id, a.status, p.leased_until
        HAVING CASE WHEN l.state = 'leased' THEN
                   count(s.lease_id) FILTER (WHERE s.ended_at IS NULL) <> 1
                   OR count(s.lease_id) FILTER (
                       WHERE s.ended_at IS NULL AND s.lease_id = l.lease_id) <> 1
                   OR a.status IS DISTINCT FROM 'busy'
                   OR p.leased_until IS DISTINCT FROM l.lease_expires_at
               ELSE
                   count(s.lease_id) FILTER (WHERE s.ended_at IS NULL) <> 0
                   OR l.lease_id IS NOT NULL OR l.leased_agent IS NOT NULL
               END
        """,
        list(lead_ids),
    )


async def agents_on_two_leases(
    qdb: asyncpg.Connection, agents: Sequence[str]
) -> list[asyncpg.Record]:
    return await qdb.fetch(
        """
        SELECT leased_agent, count(*) AS leases FROM leads
        WHERE state = 'leased' AND leased_agent = ANY($1::text[])
        GROUP BY leased_agent HAVING count(*) > 1
        """,
        list(agents),
    )


async def events_about(
    qdb: asyncpg.Connection, lead_ids: Iterable[uuid.UUID | str], event_type: str
) -> list[Envelope]:
    """The outbox's events of one type about these leads, in write order."""
    rows = await qdb.fetch(
        "SELECT payload FROM outbox WHERE key = ANY($1::bytea[]) ORDER BY id",
        [str(lead_id).encode() for lead_id in lead_ids],
    )
    envelopes = [decode(row["payload"]) for row in rows]
    return [envelope for envelope in envelopes if envelope.type == event_type]


async def recycled(
    qdb: asyncpg.Connection, lead_ids: Iterable[uuid.UUID | str]
) -> list[LeadRecycled]:
    envelopes = await events_about(qdb, lead_ids, LeadRecycled.event_type)
    events = [envelope.data for envelope in envelopes]
    assert all(isinstance(event, LeadRecycled) for event in events)
    return events  # type: ignore[return-value]


async def agent_view(floor: Floor, agent: str) -> dict[str, object]:
    answer = await floor.api.get(f"/v1/agents/{agent}")
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


# --- many agents, one pool ----------------------------------------------------


async def test_hundred_agents_serve_every_due_lead_exactly_once(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    lead_ids = await floor.leads(pool, 300)
    agents = await seat(floor, pool, 100)

    async with seated(agents, [floor.server], floor.clock) as dialers:
        await asyncio.gather(*(dialer.work_until_empty() for dialer in dialers))

    held = [lease for dialer in dialers for lease in dialer.held]
    assert unanswered(dialers) == []
    assert clashes(held, key=lambda lease: lease.lead_id) == []
    assert Counter(lease.lead_id for lease in held) == Counter(map(str, lead_ids))
    rows = await qdb.fetch(
        """
        SELECT lead_id, count(*) AS leases,
               count(*) FILTER (WHERE end_reason = 'outcome') AS called
        FROM leases WHERE lead_id = ANY($1::uuid[]) GROUP BY lead_id
        """,
        lead_ids,
    )
    assert {row["lead_id"] for row in rows} == set(lead_ids)
    assert {(row["leases"], row["called"]) for row in rows} == {(1, 1)}
    assert await overlapping_lease_rows(qdb, lead_ids) == []
    assert await inconsistent_leads(qdb, lead_ids) == []
    states = await qdb.fetch(
        "SELECT state, attempts, count(*) FROM leads WHERE lead_id = ANY($1::uuid[])"
        " GROUP BY state, attempts",
        lead_ids,
    )
    assert [(row["state"], row["attempts"]) for row in states] == [("waiting", 1)]


@pytest.mark.parametrize("leads", [1, 2, 3])
async def test_agents_racing_for_a_few_leads_never_share_one(
    floor: Floor, qdb: asyncpg.Connection, leads: int
) -> None:
    pool = await floor.pool()
    lead_ids = await floor.leads(pool, leads)
    agents = await seat(floor, pool, 100)

    async with seated(agents, [floor.server], floor.clock) as dialers:
        drawn = await asyncio.gather(*(dialer.draw() for dialer in dialers))

    assert unanswered(dialers) == []
    statuses = Counter(code for dialer in dialers for _, code in dialer.statuses)
    assert statuses == {200: leads, 204: 100 - leads}
    assert sorted(lease.lead_id for lease in drawn if lease) == sorted(
        map(str, lead_ids)
    )
    open_rows = await qdb.fetchval(
        "SELECT count(*) FROM leases"
        " WHERE lead_id = ANY($1::uuid[]) AND ended_at IS NULL",
        lead_ids,
    )
    assert open_rows == leads
    assert await inconsistent_leads(qdb, lead_ids) == []
    assert await agents_on_two_leases(qdb, agents) == []


async def test_leads_sharing_a_number_are_never_on_open_leases_together(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    """Three leads on each of four numbers, thirty agents racing round after
    round: each number is on at most one open lease at any moment."""
    pool = await floor.pool(lease_seconds=60)
    numbers = [unique_phone() for _ in range(4)]
    lead_ids = [
        lead_id
        for number in numbers
        for lead_id in await floor.leads(pool, 3, phone=number)
    ]
    agents = await seat(floor, pool, 30)

    async with seated(agents, [floor.server], floor.clock) as dialers:
        for _ in range(8):
            drawn = await asyncio.gather(*(dialer.draw() for dialer in dialers))
            pairs = zip(dialers, drawn, strict=True)
            in_hand = [(dialer, lease) for dialer, lease in pairs if lease]
            if not in_hand:
                break
            phones = [lease.phone for _, lease in in_hand]
            assert len(phones) == len(set(phones)), phones
            assert await inconsistent_leads(qdb, lead_ids) == []
            await asyncio.gather(*(dialer.call(lease) for dialer, lease in in_hand))
            # A lead held back for its busy number waits out the lease length.
            floor.clock.advance(dt.timedelta(seconds=61))

    held = [lease for dialer in dialers for lease in dialer.held]
    assert unanswered(dialers) == []
    assert clashes(held, key=lambda lease: lease.phone) == []
    assert Counter(lease.lead_id for lease in held) == Counter(map(str, lead_ids))
    assert await overlapping_lease_rows(qdb, lead_ids, by_phone=True) == []
    assert await inconsistent_leads(qdb, lead_ids) == []


async def test_lead_whose_number_is_on_a_lease_is_not_served_until_it_is_free(
    floor: Floor,
) -> None:
    pool = await floor.pool(lease_seconds=60)
    number = unique_phone()
    first_lead, second_lead = await floor.leads(pool, 2, phone=number)
    first, second = await seat(floor, pool, 2)

    answer = await floor.next_lead(first)
    assert answer.status_code == 200, answer.text
    taken = answer.json()["lead"]["lead_id"]
    other = str(second_lead if taken == str(first_lead) else first_lead)
    assert (await floor.next_lead(second)).status_code == 204
    eligibility = (await floor.api.get(f"/v1/leads/{other}/eligibility")).json()
    assert "number_on_lease" in [reason["code"] for reason in eligibility["reasons"]]

    outcome = await floor.outcome(answer.json()["lease_id"], "no_answer")
    assert outcome.status_code == 200, outcome.text
    floor.clock.advance(dt.timedelta(seconds=61))
    answer = await floor.next_lead(second)

    assert answer.status_code == 200, answer.text
    assert answer.json()["lead"]["lead_id"] == other


# --- expiry and recycling -----------------------------------------------------


async def test_expired_lease_returns_lead_to_pool_for_another_agent(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool(lease_seconds=30)
    [lead_id] = await floor.leads(pool)
    first, second = await seat(floor, pool, 2)
    answer = await floor.next_lead(first)
    assert answer.status_code == 200, answer.text
    expired_lease = answer.json()["lease_id"]
    assert (await floor.next_lead(second)).status_code == 204

    floor.clock.advance(dt.timedelta(seconds=31))
    answer = await floor.next_lead(second)

    assert answer.status_code == 200, answer.text
    assert answer.json()["lead"]["lead_id"] == str(lead_id)
    assert answer.json()["lease_id"] != expired_lease
    [event] = await recycled(qdb, [lead_id])
    assert (event.reason, event.from_agent_id, event.pool) == (
        "lease_expired",
        first,
        pool,
    )
    seat_view = await agent_view(floor, first)
    assert (seat_view["status"], seat_view["expired_leases"]) == ("away", 1)
    late = await floor.outcome(expired_lease, "no_answer")
    assert late.status_code == 409, late.text
    assert late.json()["code"] == "lease_expired"
    refused = await floor.next_lead(first)
    assert refused.status_code == 409
    assert refused.json()["code"] == "agent_not_available"
    lead = await floor.lead(lead_id)
    assert (lead["state"], lead["attempts"], lead["lease"]["agent_id"]) == (
        "leased",
        0,
        second,
    )
    ends = {row["lease_id"]: row["end_reason"] for row in lead["history"]["leases"]}
    assert ends == {expired_lease: "expired", answer.json()["lease_id"]: None}


async def test_agent_who_heard_not_interested_never_gets_the_lead_again(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool(cadence="0m")
    [lead_id] = await floor.leads(pool)
    first, second = await seat(floor, pool, 2)
    answer = await floor.next_lead(first)
    assert answer.status_code == 200, answer.text

    outcome = await floor.outcome(answer.json()["lease_id"], "not_interested")

    assert outcome.status_code == 200, outcome.text
    for _ in range(2):
        assert (await floor.next_lead(first)).status_code == 204
        answer = await floor.next_lead(second)
        assert answer.status_code == 200, answer.text
        assert answer.json()["lead"]["lead_id"] == str(lead_id)
        outcome = await floor.outcome(answer.json()["lease_id"], "no_answer")
        assert outcome.status_code == 200, outcome.text
    assert (await floor.next_lead(first)).status_code == 204
    [event] = await recycled(qdb, [lead_id])
    assert (event.reason, event.from_agent_id) == ("not_interested", first)
    eligibility = (await floor.api.get(f"/v1/leads/{lead_id}/eligibility")).json()
    assert eligibility["excluded_agents"] == [first]


async def test_lead_goes_to_other_agents_after_one_agent_uses_its_attempts(
    floor: Floor, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool(cadence="0m", agent_attempt_limit=2)
    [lead_id] = await floor.leads(pool)
    first, second = await seat(floor, pool, 2)

    for attempt in (1, 2):
        answer = await floor.next_lead(first)
        assert answer.status_code == 200, answer.text
        assert answer.json()["attempt"] == attempt
        outcome = await floor.outcome(answer.json()["lease_id"], "no_answer")
        assert outcome.status_code == 200, outcome.text

    assert (await floor.next_lead(first)).status_code == 204
    answer = await floor.next_lead(second)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["lead"]["lead_id"], answer.json()["attempt"]) == (
        str(lead_id),
        3,
    )
    [event] = await recycled(qdb, [lead_id])
    assert (event.reason, event.from_agent_id) == ("agent_attempt_limit", first)


# --- the Kafka path -----------------------------------------------------------


async def _publish(producer: AIOKafkaProducer, envelope: Envelope) -> None:
    await producer.send_and_wait(
        LEAD_EVENTS_TOPIC,
        value=envelope.to_json(),
        key=envelope.key,
        headers=[("content-type", CONTENT_TYPE.encode())],
    )


async def _wait_for_lead(floor: Floor, lead_id: uuid.UUID) -> dict[str, object]:
    deadline = time.monotonic() + KAFKA_WAIT_SECONDS
    while True:
        answer = await floor.api.get(f"/v1/leads/{lead_id}")
        if answer.status_code == 200:
            body: dict[str, object] = answer.json()
            return body
        assert answer.status_code == 404, answer.text
        assert time.monotonic() < deadline, "the lead never reached the queue"
        await asyncio.sleep(0.2)


async def _wait_until_processed(qdb: asyncpg.Connection, event_id: uuid.UUID) -> None:
    deadline = time.monotonic() + KAFKA_WAIT_SECONDS
    while not await qdb.fetchval(
        "SELECT EXISTS (SELECT 1 FROM processed_events"
        " WHERE consumer = 'queue' AND event_id = $1)",
        event_id,
    ):
        assert time.monotonic() < deadline, f"event {event_id} was never consumed"
        await asyncio.sleep(0.2)


async def test_lead_received_on_kafka_is_queued_once_in_its_routed_pool(
    floor: Floor, stack: Stack, qdb: asyncpg.Connection
) -> None:
    pool = await floor.pool()
    source = f"src-{pool}"
    await floor.route(source, pool)
    lead = floor.snapshot(source)
    received = new_event(
        lead,
        source="redial/intake",
        subject=str(lead.lead_id),
        time=floor.clock.now(),
    )
    # Intake sending the same lead again under a new event id (a retry that
    # lost its first acknowledgement) must not queue it twice either.
    resent = new_event(
        lead,
        source="redial/intake",
        subject=str(lead.lead_id),
        time=floor.clock.now(),
    )
    producer = make_producer(queue_settings(stack), client_id="test-intake")
    await producer.start()
    try:
        await _publish(producer, received)
        await _publish(producer, received)
        view = await _wait_for_lead(floor, lead.lead_id)
        # Same key, same partition: once the resent copy is processed, both
        # copies of the first are too.
        await _publish(producer, resent)
        await _wait_until_processed(qdb, resent.id)
    finally:
        await producer.stop()

    assert (view["pool"], view["state"], view["attempts"]) == (pool, "ready", 0)
    queued = await events_about(qdb, [lead.lead_id], LeadQueued.event_type)
    assert [envelope.data for envelope in queued] == [
        LeadQueued(
            lead_id=lead.lead_id,
            pool=pool,
            source=source,
            call_target=8,
            cadence_seconds=[0, 600, 3600, 14400, 86400, 172800, 345600, 604800],
            due_at=floor.clock.now(),
            queued_at=floor.clock.now(),
        )
    ]
    stored = await qdb.fetchval(
        "SELECT count(*) FROM leads WHERE lead_id = $1", lead.lead_id
    )
    assert stored == 1


# --- two queue processes ------------------------------------------------------


@pytest.fixture
async def second_copy(
    stack: Stack, queue: Server, queue_clock: ManualClock
) -> AsyncIterator[Server]:
    """A second queue process on the same database, broker and clock."""
    server = Server(
        create_app(queue_settings(stack), queue_clock, configure_logging=False)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_two_queue_processes_reap_each_expired_lease_exactly_once(
    floor: Floor, second_copy: Server, qdb: asyncpg.Connection
) -> None:
    """Both copies serve agents and reap at the same time, round after round:
    half the agents abandon their lease each round, and while both copies'
    schedulers reap, the other half keep leasing through both."""
    pool = await floor.pool(lease_seconds=30)
    lead_ids = await floor.leads(pool, 150)
    agents = await seat(floor, pool, 30)
    services = [floor.service, second_copy.app.state.queue]
    abandoned: Counter[tuple[str, str]] = Counter()

    # Reaped leads change hands within one clock reading here, so the clock is
    # not stepped (the server's rows would order wrongly).
    servers = [floor.server, second_copy]
    async with seated(agents, servers, floor.clock, step=False) as dialers:
        callers, leavers = dialers[::2], dialers[1::2]
        for _ in range(3):
            await asyncio.gather(*(dialer.be_available() for dialer in leavers))
            drawn = await asyncio.gather(*(dialer.draw() for dialer in dialers))
            left = [lease for lease in drawn[1::2] if lease]
            assert len(left) == len(leavers)
            pairs = zip(callers, drawn[::2], strict=True)
            await asyncio.gather(*(seat.call(lease) for seat, lease in pairs if lease))
            assert await inconsistent_leads(qdb, lead_ids) == []

            for lease in left:
                lease.closed = time.perf_counter()
                abandoned[(lease.lead_id, lease.agent)] += 1
            floor.clock.advance(dt.timedelta(seconds=31))
            await asyncio.gather(
                _reap_together(services, rounds=10),
                *(_draw_and_call(dialer) for dialer in callers),
            )

            assert await inconsistent_leads(qdb, lead_ids) == []
            assert await agents_on_two_leases(qdb, agents) == []

    held = [lease for dialer in dialers for lease in dialer.held]
    assert unanswered(dialers) == []
    assert clashes(held, key=lambda lease: lease.lead_id) == []
    assert await overlapping_lease_rows(qdb, lead_ids) == []
    events = await recycled(qdb, lead_ids)
    assert {event.reason for event in events} == {"lease_expired"}
    reaped = Counter((str(event.lead_id), event.from_agent_id) for event in events)
    assert reaped == abandoned
    assert sum(abandoned.values()) == 3 * len(leavers)
    expired_rows = await qdb.fetchval(
        "SELECT count(*) FROM leases"
        " WHERE lead_id = ANY($1::uuid[]) AND end_reason = 'expired'",
        lead_ids,
    )
    assert expired_rows == sum(abandoned.values())
    per_agent = Counter(agent for _, agent in abandoned.elements())
    for dialer in dialers:
        view = await agent_view(floor, dialer.agent)
        assert view["expired_leases"] == per_agent[dialer.agent], dialer.agent
        assert view["leases"] == len(dialer.held), dialer.agent


async def test_pool_created_through_one_copy_leases_for_its_length_through_another(
    floor: Floor, second_copy: Server
) -> None:
    """Regression: the lease statement took the lease length from the serving
    copy's cached rules, so a pool created through one copy leased for the
    default 120 s through the other until that copy's next scheduler pass."""
    pool = await floor.pool(lease_seconds=30)
    await floor.leads(pool)
    [agent] = await seat(floor, pool, 1)

    async with httpx.AsyncClient(base_url=second_copy.url) as client:
        answer = await client.post(f"/v1/agents/{agent}/next-lead")

    assert answer.status_code == 200, answer.text
    expires_at = dt.datetime.fromisoformat(answer.json()["expires_at"])
    assert expires_at == floor.clock.now() + dt.timedelta(seconds=30)


async def _draw_and_call(dialer: Dialer) -> None:
    lease = await dialer.draw()
    if lease is not None:
        await dialer.call(lease)


async def _reap_together(services: Sequence[QueueService], *, rounds: int) -> None:
    """Scheduler passes on every copy at once, ``rounds`` times over."""
    for _ in range(rounds):
        await asyncio.gather(*(service.tick() for service in services))
