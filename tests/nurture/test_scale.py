"""Nurture under restarts, replays and a second copy: no step twice.

Each test runs its own nurture copies against a database and a broker of its
own, so it can stop a copy, rewind the consumer group and start another
without disturbing the session's service. Events reach the copies through
Kafka, as deployed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.nurture.app import create_app
from services.nurture.service import NurtureService
from shared.clock import ManualClock
from shared.db import connect
from shared.events import (
    Consent,
    Envelope,
    LeadExhausted,
    LeadQueued,
    LeadReceived,
    NurtureJob,
    decode,
    new_event,
)
from shared.kafka import make_producer
from shared.launcher.stack import Broker
from shared.settings import LEAD_EVENTS_TOPIC, NURTURE_JOBS_TOPIC
from tests.conftest import Server, Stack, unique_phone
from tests.kafka_reader import read_until
from tests.nurture.conftest import (
    START,
    email_step,
    nurture_settings,
    sms_step,
    unique,
    unique_email,
)

DAY = dt.timedelta(days=1)
DEADLINE = 30.0
STEPS = [email_step(0), sms_step(3), email_step(7)]


@dataclass
class Isolated:
    stack: Stack
    database_url: str
    broker: Broker
    clock: ManualClock

    def app(self, **settings: object) -> Server:
        values = nurture_settings(
            self.stack,
            database_url=self.database_url,
            kafka_bootstrap_servers=self.broker.bootstrap,
            **settings,
        )
        return Server(create_app(values, self.clock, configure_logging=False))

    async def publish(self, events: list[Envelope]) -> None:
        producer = make_producer(
            nurture_settings(self.stack, kafka_bootstrap_servers=self.broker.bootstrap),
            client_id="nurture-tests",
        )
        await producer.start()
        try:
            sent = [
                await producer.send(
                    LEAD_EVENTS_TOPIC, key=event.key, value=event.to_json()
                )
                for event in events
            ]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    async def jobs(self, count: int) -> list[NurtureJob]:
        records = await read_until(
            self.broker.bootstrap,
            NURTURE_JOBS_TOPIC,
            lambda kept: len(kept) >= count,
            timeout=DEADLINE,
        )
        jobs = []
        for record in records:
            data = decode(record.value).data
            assert isinstance(data, NurtureJob)
            jobs.append(data)
        return jobs


@pytest.fixture
async def isolated(stack: Stack, scratch_database: str, own_broker: Broker) -> Isolated:
    return Isolated(stack, scratch_database, own_broker, ManualClock(START))


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[NurtureService]:
    await server.start()
    try:
        service: NurtureService = server.app.state.nurture
        yield service
    finally:
        await server.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.05)


def lead_events(source: str, count: int, at: dt.datetime) -> list[Envelope]:
    """Arrival, queueing and exhaustion of ``count`` leads."""
    events = []
    for _ in range(count):
        lead_id = uuid.uuid4()
        for data in (
            LeadReceived(
                lead_id=lead_id,
                source=source,
                phone=unique_phone(),
                email=unique_email(),
                timezone="America/New_York",
                consent=Consent(sms=True, email=True),
                received_at=at,
            ),
            LeadQueued(
                lead_id=lead_id,
                pool="web",
                source=source,
                call_target=8,
                due_at=at,
                queued_at=at,
            ),
            LeadExhausted(
                lead_id=lead_id,
                pool="web",
                attempts=8,
                call_target=8,
                exhausted_at=at + DAY,
            ),
        ):
            events.append(
                new_event(data, source="redial/test", subject=str(lead_id), time=at)
            )
    return events


async def processed(database_url: str) -> int:
    connection = await connect(database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM nurture.processed_events"
        )
        return count
    finally:
        await connection.close()


async def outbox_jobs(database_url: str) -> list[asyncpg.Record]:
    connection = await connect(database_url)
    try:
        return await connection.fetch(
            "SELECT event_id, published_at FROM nurture.outbox WHERE topic = $1",
            NURTURE_JOBS_TOPIC,
        )
    finally:
        await connection.close()


async def rewind(bootstrap: str, group: str) -> None:
    """Commit offset 0 on every partition of lead-events for ``group`` while
    no other member runs: its next consumer replays the whole topic. (The
    rewinding client joins the group to commit; the broker refuses commits
    from outside it. Tansu takes about 18 s to let it join after a member
    has left: most of this test's time.)"""
    consumer = AIOKafkaConsumer(
        LEAD_EVENTS_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(DEADLINE):
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
        await consumer.commit({partition: 0 for partition in consumer.assignment()})
    finally:
        await consumer.stop()


async def committed_to_end(bootstrap: str, group: str) -> bool:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(LEAD_EVENTS_TOPIC, p)
            for p in consumer.partitions_for_topic(LEAD_EVENTS_TOPIC) or set()
        ]
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            committed = await consumer.committed(partition)
            if ends[partition] and (committed or 0) < ends[partition]:
                return False
        return True
    finally:
        await consumer.stop()


async def put_campaign(server: Server, source: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        answer = await client.put(
            f"/v1/campaigns/{unique('camp')}",
            json={"steps": STEPS, "sources": [source]},
        )
        assert answer.status_code == 201, answer.text


async def test_a_restart_mid_sequence_and_a_replay_of_the_topic_send_no_step_twice(
    isolated: Isolated,
) -> None:
    source = unique("src")
    events = lead_events(source, 20, isolated.clock.now())
    first = isolated.app()
    async with running(first) as service:
        await put_campaign(first, source)
        await isolated.publish(events)
        await eventually(
            lambda: _equals(processed(isolated.database_url), len(events)),
            "every event applied",
        )
        isolated.clock.advance(30 * DAY)
        await service.run_due()
        assert len(await isolated.jobs(20)) == 20

    # The copy is gone mid-sequence. Its group is rewound and every event is
    # also published a second time: the next copy reads all of it twice.
    await rewind(isolated.broker.bootstrap, "nurture")
    await isolated.publish(events)
    second = isolated.app()
    async with running(second) as service:
        await eventually(
            lambda: committed_to_end(isolated.broker.bootstrap, "nurture"),
            "the replay read to the end",
        )
        assert await processed(isolated.database_url) == len(events)
        isolated.clock.advance(3 * DAY)
        await service.run_due()
        isolated.clock.advance(4 * DAY)
        await service.run_due()
        jobs = await isolated.jobs(60)

        await eventually(
            lambda: _all_published(isolated.database_url), "the outbox emptied"
        )
    assert len(jobs) == 60
    assert len({job.job_id for job in jobs}) == 60
    assert sorted({job.step for job in jobs}) == [0, 1, 2]
    assert len(await outbox_jobs(isolated.database_url)) == 60


async def test_two_copies_send_each_step_once(isolated: Isolated) -> None:
    source = unique("src")
    events = lead_events(source, 200, isolated.clock.now())
    one, two = isolated.app(scheduler_batch=10), isolated.app(scheduler_batch=10)
    async with running(one) as first, running(two) as second:
        await put_campaign(one, source)
        await isolated.publish(events)
        await eventually(
            lambda: _equals(processed(isolated.database_url), len(events)),
            "every event applied by one copy or the other",
        )

        claimed: list[int] = []
        for days in (30, 3, 4):
            isolated.clock.advance(days * DAY)
            claimed += await asyncio.gather(first.run_due(), second.run_due())
        jobs = await isolated.jobs(600)

        await eventually(
            lambda: _all_published(isolated.database_url), "the outbox emptied"
        )
    # A background tick of either copy may have taken some of the passes.
    assert sum(claimed) <= 600
    assert len(await outbox_jobs(isolated.database_url)) == 600
    assert len(jobs) == 600
    assert len({job.job_id for job in jobs}) == 600
    assert len({(job.lead_id, job.step) for job in jobs}) == 600


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _all_published(database_url: str) -> bool:
    return all(
        row["published_at"] is not None for row in await outbox_jobs(database_url)
    )
