"""The metrics service fed through Kafka: the session's service consumes
``lead-events`` as group ``metrics``, exactly as deployed.

Events are published keyed by lead id, as the services' outboxes do. The
tests wait for consumption by polling PostgreSQL (``processed_events``) or
the group's committed offsets, never by sleeping a fixed time; the slot
counter is run by the test after moving the clock.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.structs import RecordMetadata

from shared.kafka import make_producer
from shared.settings import LEAD_EVENTS_TOPIC, dlq_topic
from tests.conftest import Server, Stack
from tests.kafka_reader import read_until
from tests.metrics.conftest import Script, metrics_settings

DEADLINE = 30.0
EXACT = 1e-12


@pytest.fixture
async def producer(stack: Stack) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(metrics_settings(stack), client_id="metrics-tests")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def database(metrics: Server) -> asyncpg.Pool:
    pool: asyncpg.Pool = metrics.app.state.runtime.pool
    return pool


async def publish(
    producer: AIOKafkaProducer, records: Sequence[tuple[bytes, bytes]]
) -> list[RecordMetadata]:
    """Sends (key, value) records in order and waits for every acknowledgement."""
    sent = [
        await producer.send(LEAD_EVENTS_TOPIC, key=key, value=value)
        for key, value in records
    ]
    return [await future for future in sent]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)


async def wait_processed(metrics: Server, event_ids: Sequence[uuid.UUID]) -> None:
    async def all_recorded() -> bool:
        recorded = await database(metrics).fetchval(
            "SELECT count(*) FROM processed_events"
            " WHERE consumer = 'metrics' AND event_id = ANY($1::uuid[])",
            list(event_ids),
        )
        return bool(recorded == len(set(event_ids)))

    await eventually(all_recorded, f"{len(event_ids)} events processed")


async def wait_committed(stack: Stack, sent: Sequence[RecordMetadata]) -> None:
    """Waits until group ``metrics`` committed past every record of ``sent``:
    a replay changes no row, so the offsets are what show it was read."""
    last: dict[int, int] = {}
    for record in sent:
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    # A client of the group that never subscribes reads its offsets without
    # joining it, so the service's consumer keeps its partitions.
    reader = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        group_id="metrics",
        enable_auto_commit=False,
    )
    await reader.start()
    try:

        async def past_them() -> bool:
            for partition, offset in last.items():
                committed = await reader.committed(
                    TopicPartition(LEAD_EVENTS_TOPIC, partition)
                )
                if committed is None or committed <= offset:
                    return False
            return True

        await eventually(past_them, "the replay's offsets committed")
    finally:
        await reader.stop()


def records_of(script: Script) -> list[tuple[bytes, bytes]]:
    events, script.events = script.events, []
    return [(envelope.key, envelope.to_json()) for envelope in events]


def ids_of(records: Sequence[tuple[bytes, bytes]]) -> list[uuid.UUID]:
    return [uuid.UUID(orjson.loads(value)["id"]) for _, value in records]


async def get(api: httpx.AsyncClient, path: str, **params: Any) -> Any:
    answer = await api.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def stored_rows(metrics: Server, script: Script) -> dict[str, list[Any]]:
    """Every counter row of the test's pool and source, for exact comparison."""
    db = database(metrics)
    queries = {
        "leads": "SELECT * FROM leads WHERE source = $1 ORDER BY lead_id",
        "slots": "SELECT * FROM slots WHERE source = $1"
        " ORDER BY lead_id, round_started_at, attempt",
        "lead_days": "SELECT * FROM lead_days WHERE source = $1"
        " ORDER BY lead_id, day, pool",
        "lead_agent_days": "SELECT a.* FROM lead_agent_days AS a"
        " JOIN leads USING (lead_id) WHERE source = $1 ORDER BY lead_id, day, agent",
        "group_days": "SELECT * FROM group_days WHERE source = $1"
        " ORDER BY day, pool, team, agent",
    }
    return {
        table: [dict(row) for row in await db.fetch(query, script.source)]
        for table, query in queries.items()
    }


def write_morning(script: Script) -> dict[str, uuid.UUID]:
    """Four leads; the figures at 18:00 (cadence ``0 1h 4h 1d``, target 4):

    ====  ======  ==========================================  =========  ==  ==
    lead  queued  calls                                       slots due  a   s
    ====  ======  ==========================================  =========  ==  ==
    a     09:00   09:05 no_answer, 10:10 contacted            09 10 14   2   3
    b     09:30   09:31 appointment; converted 09:32          09:30      1   1
    c     10:00   none                                        10 11 15   0   3
    d     11:00   11:02 wrong_number; invalid 11:03           11         1   1
    ====  ======  ==========================================  =========  ==  ==

    Pool: (2 + 1 + 0 + 1) / 8 capped and uncapped; contacts a, b (2/4);
    conversion b (1/4); speed 300, 60, 120 s: p50 120, p90 at 1.8 = 120 +
    0.8 x 180 = 264; all three within 300 s of 4 leads.
    """
    at = script.local
    arrivals = {"a": at(9), "b": at(9, 30), "c": at(10), "d": at(11)}
    leads = {name: script.lead(arrival) for name, arrival in arrivals.items()}
    script.call(leads["a"], at(9, 5), attempt=1)
    script.call(leads["a"], at(10, 10), "contacted", attempt=2)
    script.call(leads["b"], at(9, 31), "appointment", attempt=1)
    script.converted(leads["b"], at(9, 32), attempt=1)
    script.call(leads["d"], at(11, 2), "wrong_number", attempt=1)
    script.invalid(leads["d"], at(11, 3))
    return leads


MORNING_POOL = {
    "leads": 4,
    "attempts": 4,
    "attempts_due": 8,
    "penetration": 4 / 8,
    "uncapped_penetration": 4 / 8,
    "contact_rate": 2 / 4,
    "conversion_rate": 1 / 4,
    "new_leads": 4,
    "new_leads_called": 3,
    "speed_to_lead_seconds": {"p50": 120.0, "p90": pytest.approx(264.0, rel=EXACT)},
    "called_within_seconds": 300.0,
    "share_called_within": 3 / 4,
}
MORNING_LEADS = {"a": (2, 3), "b": (1, 1), "c": (0, 3), "d": (1, 1)}


async def report(
    api: httpx.AsyncClient, script: Script, leads: dict[str, uuid.UUID]
) -> dict[str, Any]:
    """The figures of every report that covers the test's leads."""
    scorecard = await get(api, "/v1/sources/scorecard", window="1d")
    return {
        "pool": await get(api, "/v1/penetration", window="1d", pool=script.pool),
        "agents": await get(
            api, "/v1/penetration", group_by="agent", window="1d", pool=script.pool
        ),
        "leads": {
            name: await get(api, f"/v1/leads/{lead}/penetration")
            for name, lead in leads.items()
        },
        "below": await get(api, "/v1/leads/below-target", pool=script.pool),
        "list": await get(api, "/v1/penetration/list", pool=script.pool),
        "distribution": await get(
            api, "/v1/attempts-distribution", window="1d", pool=script.pool
        ),
        "scorecard": [s for s in scorecard["sources"] if s["source"] == script.source],
    }


async def test_events_through_kafka_count_once_and_a_replay_changes_nothing(
    script: Script,
    metrics: Server,
    stack: Stack,
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
) -> None:
    await script.at(script.local(18))
    leads = write_morning(script)
    records = records_of(script)

    await publish(producer, records)
    await wait_processed(metrics, ids_of(records))
    await script.service.count_due_slots()

    first = await report(api, script, leads)
    [pool] = first["pool"]["groups"]
    assert {name: pool[name] for name in MORNING_POOL} == MORNING_POOL
    for name, (attempts, due) in MORNING_LEADS.items():
        figures = first["leads"][name]
        assert (figures["attempts"], figures["attempts_due"]) == (attempts, due)
    assert [row["lead_id"] for row in first["below"]["leads"]] == [
        str(leads["c"]),
        str(leads["a"]),
    ]
    rows = await stored_rows(metrics, script)

    replay = await publish(producer, records)
    await wait_committed(stack, replay)
    await script.service.count_due_slots()

    assert await report(api, script, leads) == first
    assert await stored_rows(metrics, script) == rows


async def test_poison_events_are_dead_lettered_and_the_good_ones_counted(
    script: Script,
    metrics: Server,
    stack: Stack,
    api: httpx.AsyncClient,
    producer: AIOKafkaProducer,
) -> None:
    """Lead p is called at 09:01 and 10:00, lead q not at all; at 12:00 each
    has two slots due: (2 + 0) / 4. Among their events: a record that is not
    JSON, one that is no CloudEvent, and a call on q whose disposition is
    not one the schema knows. Had that call counted, q would be at 1/2."""
    await script.at(script.local(12))
    p = script.lead(script.local(9))
    q = script.lead(script.local(9))
    script.call(p, script.local(9, 1), attempt=1)
    script.call(p, script.local(10), "contacted", attempt=2)
    script.call(q, script.local(10, 5), attempt=1)
    *good, bad_call = records_of(script)
    document = orjson.loads(bad_call[1])
    document["id"] = str(uuid.uuid4())
    document["data"]["disposition"] = "hung_up"
    # Unique bytes: the dead-letter topic also holds other tests' records.
    not_json = f"this is not json {uuid.uuid4()}".encode()
    old_spec = orjson.dumps({"specversion": "0.3", "id": str(uuid.uuid4())})
    poison = {
        not_json: "is not JSON",
        old_spec: "unsupported specversion",
        orjson.dumps(document): "invalid call.logged.v1 event",
    }
    keys = [f"poison-{uuid.uuid4().hex[:8]}".encode(), str(q).encode(), bad_call[0]]
    mixed = [*good[:2], (keys[0], not_json), *good[2:5]]
    mixed += [(keys[1], old_spec), *good[5:]]
    mixed.append((keys[2], orjson.dumps(document)))

    sent = await publish(producer, mixed)
    await wait_processed(metrics, ids_of(good))
    dead = await read_until(
        stack.bootstrap,
        dlq_topic(LEAD_EVENTS_TOPIC),
        lambda kept: {record.value for record in kept} == set(poison),
        # Every consumer of lead-events dead-letters what is not JSON or no
        # CloudEvent (intake's and the queue's too): keep the metrics' ones.
        keep=lambda record: (
            record.value in poison
            and ("dlq-consumer", b"metrics") in list(record.headers)
        ),
    )
    await script.service.count_due_slots()

    # At least once: a partition re-read after a rebalance (another test's
    # consumer joining the group) dead-letters its poison again.
    assert {record.value for record in dead} == set(poison)
    where = {value: meta for (_, value), meta in zip(mixed, sent, strict=True)}
    for record in dead:
        check_dead_letter(record, poison[record.value], where[record.value])
    [pool] = (await get(api, "/v1/penetration", window="1d", pool=script.pool))[
        "groups"
    ]
    assert (pool["leads"], pool["attempts"], pool["attempts_due"]) == (2, 2, 4)
    assert pool["penetration"] == 2 / 4
    figures = await get(api, f"/v1/leads/{q}/penetration")
    assert (figures["attempts"], figures["attempts_due"]) == (0, 2)


def check_dead_letter(record: ConsumerRecord, error: str, sent: RecordMetadata) -> None:
    headers = {name: value.decode() for name, value in record.headers}
    assert error in headers["dlq-error"], headers
    assert headers["dlq-error-type"] == "PoisonEvent"
    assert headers["dlq-consumer"] == "metrics"
    assert headers["dlq-topic"] == LEAD_EVENTS_TOPIC
    assert (headers["dlq-partition"], headers["dlq-offset"]) == (
        str(sent.partition),
        str(sent.offset),
    )
