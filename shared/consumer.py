"""At-least-once event consumption with effects applied exactly once.

:class:`EventConsumer` reads one topic in a consumer group. For each batch of
one partition it opens a transaction, records the event ids in
``processed_events`` and applies the handler to the events not seen before;
the Kafka offset is committed only after that transaction commits. An event
redelivered after a crash or a rebalance finds its id recorded and is skipped,
so no effect is applied twice and none is lost.

Failures are sorted by type. A retriable one (database or broker down, a
deadlock) rolls the batch back and the partition is re-read after a backoff.
Any other failure is the event's fault: the batch is re-run one event per
transaction, the failing event goes to ``<topic>.dlq`` with the error in its
headers, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from shared.clock import Clock
from shared.db import Connection, is_transient
from shared.errors import EventError
from shared.events import Envelope, UnknownEventType, decode_if
from shared.kafka import LazyProducer
from shared.logging import event_context
from shared.metrics import (
    CONSUMER_LAG,
    CONSUMER_PARTITIONS,
    EVENTS_CONSUMED,
    EVENTS_DEAD_LETTERED,
)
from shared.retry import Backoff
from shared.settings import dlq_topic

logger = logging.getLogger(__name__)

#: Applies events inside the caller's transaction; must not commit it.
BatchHandler = Callable[[Connection, Sequence[Envelope]], Awaitable[None]]


def is_retriable(error: BaseException) -> bool:
    """True when the failure is the environment's, not the event's."""
    if isinstance(error, EventError):
        return error.retriable
    return isinstance(error, KafkaError) or is_transient(error)


class EventConsumer:
    """Consumes ``topic`` as group ``name``; runs until cancelled.

    ``after_commit`` runs each time a transaction that applied new events has
    committed. A handler stages there what must happen once per applied event
    and cannot be rolled back (Prometheus observations): a batch that fails
    and is re-run must not have counted them already.
    """

    def __init__(
        self,
        *,
        name: str,
        topic: str,
        bootstrap_servers: str,
        pool: asyncpg.Pool,
        clock: Clock,
        handler: BatchHandler,
        event_types: Collection[str] | None = None,
        producer_factory: Callable[[], AIOKafkaProducer],
        max_records: int = 500,
        after_commit: Callable[[], None] | None = None,
        fetch_wait_ms: int = 100,
    ) -> None:
        self.name = name
        self._fetch_wait_ms = fetch_wait_ms
        self._topic = topic
        self._bootstrap_servers = bootstrap_servers
        self._pool = pool
        self._clock = clock
        self._handler = handler
        self._event_types = frozenset(event_types) if event_types else None
        self._dead_letters = LazyProducer(producer_factory)
        self._max_records = max_records
        self._after_commit = after_commit
        self._consumer: AIOKafkaConsumer | None = None
        #: Partitions currently assigned to this copy (for tests and /readyz).
        self.assignment: frozenset[TopicPartition] = frozenset()

    async def run(self) -> None:
        backoff = Backoff(initial=0.2, maximum=5.0)
        try:
            while True:
                try:
                    await self._consume_forever()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - reconnect, go on
                    delay = backoff.next_delay()
                    logger.warning(
                        "consumer.failed consumer=%s retry_in=%.2fs error=%r",
                        self.name,
                        delay,
                        error,
                    )
                    await self._stop_clients()
                    await asyncio.sleep(delay)
        finally:
            await self._stop_clients()

    async def _consume_forever(self) -> None:
        consumer = await self._start_consumer()
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            batches = await consumer.getmany(
                timeout_ms=500, max_records=self._max_records
            )
            self.assignment = frozenset(consumer.assignment())
            CONSUMER_PARTITIONS.labels(self.name).set(len(self.assignment))
            for partition, messages in batches.items():
                try:
                    await self._process(messages)
                except Exception as error:
                    if not is_retriable(error):
                        raise
                    delay = backoff.next_delay()
                    logger.warning(
                        "consumer.retry consumer=%s partition=%s offset=%s"
                        " retry_in=%.2fs error=%r",
                        self.name,
                        partition.partition,
                        messages[0].offset,
                        delay,
                        error,
                    )
                    with contextlib.suppress(IllegalStateError):
                        consumer.seek(partition, messages[0].offset)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                await self._commit(consumer, partition, messages[-1].offset + 1)
            await self._report_lag(consumer)

    async def _start_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            self._topic,
            bootstrap_servers=self._bootstrap_servers,
            group_id=self.name,
            client_id=f"{self.name}-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max_records,
            # How long the broker may hold a fetch for records to arrive.
            # Apache Kafka answers as soon as one byte is there; Tansu holds
            # the fetch this long regardless, so it is a floor on every hop.
            fetch_max_wait_ms=self._fetch_wait_ms,
        )
        self._consumer = consumer
        await consumer.start()
        logger.info("consumer.started consumer=%s topic=%s", self.name, self._topic)
        return consumer

    async def _commit(
        self, consumer: AIOKafkaConsumer, partition: TopicPartition, offset: int
    ) -> None:
        try:
            await consumer.commit({partition: OffsetAndMetadata(offset, "")})
        except (CommitFailedError, IllegalStateError) as error:
            # The group rebalanced under us: the new owner re-reads from the
            # last committed offset and skips what we already recorded.
            logger.warning(
                "consumer.commit_lost consumer=%s partition=%s error=%r",
                self.name,
                partition.partition,
                error,
            )

    async def _process(self, messages: Sequence[ConsumerRecord]) -> None:
        """Apply one partition's batch: all in one transaction, else one by one."""
        decoded: list[tuple[ConsumerRecord, Envelope]] = []
        undecodable: list[tuple[ConsumerRecord, EventError]] = []
        for message in messages:
            try:
                envelope = decode_if(message.value, self._event_types)
            except UnknownEventType:
                continue  # written by a newer producer; not for this consumer
            except EventError as error:
                undecodable.append((message, error))
                continue
            if envelope is not None:
                decoded.append((message, envelope))
        if decoded:
            try:
                await self._apply([envelope for _, envelope in decoded])
            except Exception as error:
                if is_retriable(error):
                    raise
                await self._apply_one_by_one(decoded)
        # Only once the batch is applied: a retriable failure above re-reads
        # the partition, and would otherwise dead-letter these again each time.
        for message, problem in undecodable:
            await self._dead_letter(message, problem)

    async def _apply_one_by_one(
        self, decoded: Sequence[tuple[ConsumerRecord, Envelope]]
    ) -> None:
        for message, envelope in decoded:
            try:
                await self._apply([envelope])
            except Exception as error:
                if is_retriable(error):
                    raise
                await self._dead_letter(message, error)
                await self._record_only(envelope)

    async def _apply(self, envelopes: Sequence[Envelope]) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            fresh_ids = await self._record(connection, envelopes)
            fresh = _first_of_each(envelopes, fresh_ids)
            if fresh:
                with event_context(fresh[0] if len(fresh) == 1 else None):
                    await self._handler(connection, fresh)
        EVENTS_CONSUMED.labels(self.name).inc(len(fresh))
        if fresh and self._after_commit is not None:
            self._after_commit()

    async def _record(
        self, connection: Connection, envelopes: Sequence[Envelope]
    ) -> set[uuid.UUID]:
        """Mark the events processed; returns the ids not seen before."""
        rows = await connection.fetch(
            """
            INSERT INTO processed_events (consumer, event_id, processed_at)
            SELECT $1, event_id, $2 FROM unnest($3::uuid[]) AS ids(event_id)
            ON CONFLICT DO NOTHING
            RETURNING event_id
            """,
            self.name,
            self._clock.now(),
            [envelope.id for envelope in envelopes],
        )
        return {row["event_id"] for row in rows}

    async def _record_only(self, envelope: Envelope) -> None:
        # A dead-lettered event is marked processed so a redelivery does not
        # send it to the dead-letter topic a second time.
        async with self._pool.acquire() as connection:
            await self._record(connection, [envelope])

    async def _dead_letter(self, message: ConsumerRecord, error: BaseException) -> None:
        producer = await self._dead_letters.get()
        headers: list[tuple[str, bytes]] = list(message.headers or ())
        headers += [
            ("dlq-error", str(error).encode()[:4000]),
            ("dlq-error-type", type(error).__name__.encode()),
            ("dlq-consumer", self.name.encode()),
            ("dlq-topic", message.topic.encode()),
            ("dlq-partition", str(message.partition).encode()),
            ("dlq-offset", str(message.offset).encode()),
        ]
        # Waiting for the broker's acknowledgement before the offset moves on
        # is what makes the dead-letter topic lossless.
        await producer.send_and_wait(
            dlq_topic(message.topic),
            value=message.value,
            key=message.key,
            headers=headers,
        )
        EVENTS_DEAD_LETTERED.labels(self.name).inc()
        logger.warning(
            "consumer.dead_lettered consumer=%s partition=%s offset=%s error=%r",
            self.name,
            message.partition,
            message.offset,
            error,
        )

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = 0
        for partition in consumer.assignment():
            highwater = consumer.highwater(partition)
            if highwater is None:
                continue
            with contextlib.suppress(IllegalStateError):
                lag += max(0, highwater - await consumer.position(partition))
        CONSUMER_LAG.labels(self.name).set(lag)

    async def _stop_clients(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        self._consumer = None
        await self._dead_letters.discard()
        self.assignment = frozenset()
        CONSUMER_PARTITIONS.labels(self.name).set(0)


def _first_of_each(
    envelopes: Sequence[Envelope], fresh_ids: set[uuid.UUID]
) -> list[Envelope]:
    """Envelopes whose id was new, keeping only the first copy within the batch."""
    seen: set[uuid.UUID] = set()
    fresh: list[Envelope] = []
    for envelope in envelopes:
        if envelope.id in fresh_ids and envelope.id not in seen:
            seen.add(envelope.id)
            fresh.append(envelope)
    return fresh
