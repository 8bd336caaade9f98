"""Kafka clients configured the same way in every service."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import (
    LEAD_EVENTS_TOPIC,
    NURTURE_JOBS_TOPIC,
    ServiceSettings,
    dlq_topic,
)

logger = logging.getLogger(__name__)

#: Every topic the project uses, with its dead-letter companion.
TOPICS = (
    LEAD_EVENTS_TOPIC,
    dlq_topic(LEAD_EVENTS_TOPIC),
    NURTURE_JOBS_TOPIC,
    dlq_topic(NURTURE_JOBS_TOPIC),
)


def make_producer(settings: ServiceSettings, *, client_id: str) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica before calling a send done.

    Idempotence needs the broker to hand out producer ids, which Tansu cannot;
    the setting switches it on where the broker supports it.
    """
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=10_000,
        retry_backoff_ms=200,
    )


class LazyProducer:
    """A producer started on first use, and dropped (to be made afresh) after
    a failure: an idempotent producer can stay wedged on sequence errors after
    an outage, and a new one costs little."""

    def __init__(self, factory: Callable[[], AIOKafkaProducer]) -> None:
        self._factory = factory
        self._producer: AIOKafkaProducer | None = None

    async def get(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException:
                await producer.stop()  # a failed start still holds sockets
                raise
            self._producer = producer
        return self._producer

    async def discard(self) -> None:
        """Stop the current producer, if any, ignoring its errors."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


async def ensure_topics(
    bootstrap_servers: str, *, partitions: int, replication: int = 1
) -> list[str]:
    """Create the project's topics that do not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="redial-topics"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in TOPICS if topic not in existing]
        if not missing:
            return []
        # Another process may create them between our list and create.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(topic, partitions, replication) for topic in missing]
            )
        for topic in missing:
            logger.info("topic.created topic=%s partitions=%s", topic, partitions)
        return missing
    finally:
        await admin.close()


async def read_from_start(
    bootstrap_servers: str, topic: str, *, idle_ms: int = 500
) -> AsyncIterator[Sequence[ConsumerRecord]]:
    """Yield a topic's records from the beginning, a batch at a time, outside
    any consumer group (nothing is committed). An empty batch means nothing
    arrived for ``idle_ms``; the caller decides whether to keep waiting."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=idle_ms)
            yield [record for records in batches.values() for record in records]
    finally:
        await consumer.stop()
