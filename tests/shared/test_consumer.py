"""The consumer helper against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.clock import ManualClock
from shared.consumer import EventConsumer, is_retriable
from shared.db import Connection, create_pool
from shared.errors import PoisonEvent, TransientEventError
from shared.events import DncUpdated, Envelope, new_event
from shared.kafka import make_producer
from shared.migrations import COMMON_MIGRATIONS, migrate
from shared.settings import ServiceSettings
from tests.conftest import Stack, running
from tests.kafka_reader import read_until

POISON = "+15555550666"


@dataclass
class Harness:
    stack: Stack
    topic: str
    schema: str
    pool: asyncpg.Pool
    clock: ManualClock
    producer: AIOKafkaProducer
    #: Phones whose handling raises a retriable error, with how many times.
    flaky: dict[str, int] = field(default_factory=dict)

    async def handle(
        self, connection: Connection, envelopes: Sequence[Envelope]
    ) -> None:
        for envelope in envelopes:
            assert isinstance(envelope.data, DncUpdated)
            phone = envelope.data.phone
            if phone == POISON:
                raise PoisonEvent("this phone can never be handled")
            if self.flaky.get(phone, 0) > 0:
                self.flaky[phone] -= 1
                raise TransientEventError("dependency briefly down")
            await connection.execute(
                "INSERT INTO applied (event_id, phone) VALUES ($1, $2)",
                envelope.id,
                phone,
            )

    def consumer(
        self, group: str, cls: type[EventConsumer] = EventConsumer
    ) -> EventConsumer:
        settings = ServiceSettings(kafka_bootstrap_servers=self.stack.bootstrap)
        return cls(
            name=group,
            topic=self.topic,
            bootstrap_servers=self.stack.bootstrap,
            pool=self.pool,
            clock=self.clock,
            handler=self.handle,
            producer_factory=lambda: make_producer(settings, client_id="test-dlq"),
            max_records=50,
        )

    def event(self, phone: str) -> Envelope:
        return new_event(
            DncUpdated(phone=phone, listed=True, updated_at=self.clock.now()),
            source="test",
            subject=phone,
            time=self.clock.now(),
        )

    async def publish(self, *events: Envelope | bytes, key: bytes = b"k") -> None:
        for event in events:
            if isinstance(event, bytes):
                await self.producer.send_and_wait(self.topic, event, key=key)
            else:
                await self.producer.send_and_wait(
                    self.topic, event.to_json(), key=event.key
                )

    async def applied(self) -> list[tuple[uuid.UUID, str]]:
        rows = await self.pool.fetch("SELECT event_id, phone FROM applied ORDER BY id")
        return [(row["event_id"], row["phone"]) for row in rows]

    async def wait_applied(self, count: int, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while len(await self.applied()) < count:
                await asyncio.sleep(0.05)


@pytest.fixture
async def harness(stack: Stack, clock: ManualClock) -> AsyncIterator[Harness]:
    topic = f"t-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1), NewTopic(f"{topic}.dlq", 3, 1)])
    await admin.close()
    schema = f"c_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(stack.dsn)
    await migrate(connection, schema, COMMON_MIGRATIONS, track="common")
    await connection.execute(
        f"CREATE TABLE {schema}.applied"
        " (id bigserial PRIMARY KEY, event_id uuid NOT NULL, phone text NOT NULL)"
    )
    await connection.close()
    pool = await create_pool(stack.dsn, schema=schema)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        yield Harness(stack, topic, schema, pool, clock, producer)
    finally:
        await producer.stop()
        await pool.close()


async def test_redelivered_event_is_applied_once(harness: Harness) -> None:
    first, second = harness.event("+13055550101"), harness.event("+13055550102")
    await harness.publish(first, second, first)

    async with running(harness.consumer("g1").run()):
        await harness.wait_applied(2)
        await harness.publish(harness.event("+13055550103"))
        await harness.wait_applied(3)

    assert [event_id for event_id, _ in await harness.applied()].count(first.id) == 1
    assert len(await harness.applied()) == 3


async def test_poison_event_goes_to_the_dlq_and_the_partition_moves_on(
    harness: Harness,
) -> None:
    good, poison, later = (
        harness.event("+13055550111"),
        harness.event(POISON),
        harness.event("+13055550112"),
    )
    # Same key: all in one partition, so "moves on" is about that partition.
    await harness.publish(good, key=b"same")
    await harness.producer.send_and_wait(harness.topic, poison.to_json(), key=b"same")
    await harness.producer.send_and_wait(harness.topic, b"{not json", key=b"same")
    await harness.producer.send_and_wait(harness.topic, later.to_json(), key=b"same")

    async with running(harness.consumer("g2").run()):
        await harness.wait_applied(2)
        dead = await read_until(
            harness.stack.bootstrap, f"{harness.topic}.dlq", lambda kept: len(kept) >= 2
        )

    assert [phone for _, phone in await harness.applied()] == [
        "+13055550111",
        "+13055550112",
    ]
    assert len(dead) == 2
    dead.sort(key=lambda record: int(dict(record.headers)["dlq-offset"]))
    headers = [dict(record.headers) for record in dead]
    assert headers[0]["dlq-error-type"] == b"PoisonEvent"
    assert b"can never be handled" in headers[0]["dlq-error"]
    assert headers[1]["dlq-error"].startswith(b"event is not JSON")
    assert dead[0].value == poison.to_json()
    assert headers[0]["dlq-topic"] == harness.topic.encode()


async def test_retriable_failure_is_retried_not_dead_lettered(harness: Harness) -> None:
    phone = "+13055550121"
    harness.flaky[phone] = 2
    await harness.publish(harness.event(phone))

    async with running(harness.consumer("g3").run()):
        await harness.wait_applied(1)

    assert [p for _, p in await harness.applied()] == [phone]
    dead = await read_until(
        harness.stack.bootstrap, f"{harness.topic}.dlq", lambda kept: False, timeout=1
    )
    assert dead == []


class NeverCommits(EventConsumer):
    """Applies events but dies before committing offsets, like a crash would."""

    async def _commit(
        self, consumer: AIOKafkaConsumer, partition: TopicPartition, offset: int
    ) -> None:
        return None


async def test_events_applied_before_a_crash_are_not_applied_again(
    harness: Harness,
) -> None:
    events = [harness.event(f"+1305555{index:04d}") for index in range(20)]
    await harness.publish(*events)
    async with running(harness.consumer("g4", NeverCommits).run()):
        await harness.wait_applied(20)

    successor = harness.consumer("g4")
    async with running(successor.run()):
        await harness.publish(harness.event("+13055559999"))
        await harness.wait_applied(21)

    applied = [event_id for event_id, _ in await harness.applied()]
    assert len(applied) == len(set(applied)) == 21


async def test_rebalance_in_the_middle_loses_and_doubles_nothing(
    harness: Harness,
) -> None:
    events = [harness.event(f"+1415555{index:04d}") for index in range(600)]
    first, second = harness.consumer("g5"), harness.consumer("g5")

    async with running(first.run()):
        await harness.publish(*events[:300])
        await harness.wait_applied(50)
        # A second member joins while the first is mid-stream: partitions move.
        async with running(second.run()):
            await harness.publish(*events[300:])
            await harness.wait_applied(600, timeout=60)

    applied = [event_id for event_id, _ in await harness.applied()]
    assert len(applied) == 600
    assert set(applied) == {event.id for event in events}


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (asyncpg.exceptions.AdminShutdownError("terminating"), True),
        (asyncpg.exceptions.QueryCanceledError("statement timeout"), True),
        (asyncpg.exceptions.LockNotAvailableError("lock timeout"), True),
        (asyncpg.exceptions.OutOfMemoryError("oom"), True),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
        (asyncpg.exceptions.NotNullViolationError("null"), False),
        (PoisonEvent("bad"), False),
        (TransientEventError("later"), True),
        (ValueError("bug"), False),
    ],
)
def test_failures_are_sorted_by_who_is_at_fault(
    error: BaseException, retriable: bool
) -> None:
    """Regression: a server shutdown or timeout counted as the event's fault,
    so a failover sent real events to the dead-letter topic."""
    assert is_retriable(error) is retriable
