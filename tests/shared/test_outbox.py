"""The outbox relay against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.clock import ManualClock
from shared.events import DncUpdated, Envelope, decode, new_event
from shared.kafka import make_producer
from shared.migrations import COMMON_MIGRATIONS, migrate
from shared.outbox import OutboxRelay, add_events
from shared.settings import ServiceSettings
from tests.conftest import Stack, running
from tests.kafka_reader import read_until


@dataclass
class Outbox:
    stack: Stack
    schema: str
    topic: str
    clock: ManualClock

    def relay(self) -> OutboxRelay:
        settings = ServiceSettings(kafka_bootstrap_servers=self.stack.bootstrap)
        return OutboxRelay(
            dsn=self.stack.dsn,
            schema=self.schema,
            clock=self.clock,
            producer_factory=lambda: make_producer(settings, client_id="test-outbox"),
            poll_seconds=0.05,
            batch_size=7,  # small, so ordering across batches is exercised
        )

    def event(self, subject: str, number: int) -> Envelope:
        return new_event(
            DncUpdated(
                phone=f"+1305555{number:04d}", listed=True, updated_at=self.clock.now()
            ),
            source="test",
            subject=subject,
            time=self.clock.now(),
        )

    async def commit(self, events: list[Envelope]) -> None:
        """Each event in its own transaction, as separate requests would."""
        connection = await asyncpg.connect(
            self.stack.dsn, server_settings={"search_path": self.schema}
        )
        try:
            for event in events:
                async with connection.transaction():
                    await add_events(
                        connection, [event], now_ts=self.clock.now(), topic=self.topic
                    )
        finally:
            await connection.close()

    async def published(self, count: int, timeout: float = 20) -> list[Envelope]:
        records = await read_until(
            self.stack.bootstrap,
            self.topic,
            lambda kept: len(kept) >= count,
            timeout=timeout,
        )
        return [decode(record.value) for record in records]


@pytest.fixture
async def outbox(stack: Stack, clock: ManualClock) -> Outbox:
    topic = f"o-{secrets.token_hex(4)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    schema = f"o_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(stack.dsn)
    await migrate(connection, schema, COMMON_MIGRATIONS, track="common")
    await connection.close()
    return Outbox(stack, schema, topic, clock)


async def test_one_subjects_events_reach_the_topic_in_commit_order(
    outbox: Outbox,
) -> None:
    events = [outbox.event("lead-1", number) for number in range(30)]
    await outbox.commit(events)

    async with running(outbox.relay().run()):
        published = await outbox.published(30)

    assert [event.id for event in published] == [event.id for event in events]


async def test_two_relays_publish_each_event_once(outbox: Outbox) -> None:
    first, second = outbox.relay(), outbox.relay()
    events = [outbox.event(f"lead-{number % 5}", number) for number in range(100)]

    async with running(first.run(), second.run()):
        await outbox.commit(events)
        # Ask for one more than exists: a double publish would be read too.
        published = await outbox.published(101, timeout=3)

    assert sorted(str(event.id) for event in published) == sorted(
        str(event.id) for event in events
    )
    assert [first.is_leader, second.is_leader].count(True) == 1


async def test_leadership_passes_on_when_the_leader_stops(outbox: Outbox) -> None:
    first, second = outbox.relay(), outbox.relay()
    async with running(first.run()) as [first_task]:
        await outbox.commit([outbox.event("lead-a", 1)])
        await outbox.published(1)
        async with running(second.run()):
            first_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first_task
            await outbox.commit([outbox.event("lead-a", 2)])
            published = await outbox.published(2)

    assert len(published) == 2
    assert second.is_leader


async def test_event_the_broker_refuses_is_parked_and_the_rest_flow(
    outbox: Outbox,
) -> None:
    """Regression: an event over the broker's size limit failed every pass and
    held back every event written after it."""
    huge = new_event(
        DncUpdated(
            phone="+1" + "5" * 1_100_000, listed=True, updated_at=outbox.clock.now()
        ),
        source="test",
        subject="lead-big",
        time=outbox.clock.now(),
    )
    after = outbox.event("lead-small", 1)
    await outbox.commit([huge, after])

    async with running(outbox.relay().run()):
        published = await outbox.published(1)

    assert [event.id for event in published] == [after.id]
    connection = await asyncpg.connect(
        outbox.stack.dsn, server_settings={"search_path": outbox.schema}
    )
    try:
        parked = await connection.fetchrow(
            "SELECT failure FROM outbox WHERE event_id = $1 AND failed_at IS NOT NULL",
            huge.id,
        )
    finally:
        await connection.close()
    assert parked is not None
    assert "MessageSizeTooLarge" in parked["failure"]
