"""The transactional outbox and the relay that empties it into Kafka.

A service never publishes from a request handler. It calls :func:`add_events`
inside the transaction that changes its state, so either both commit or
neither does. The :class:`OutboxRelay` runs in the background of every copy of
the service: one copy at a time holds a PostgreSQL advisory lock and publishes
in id order (the order rows were written; one lead's events are written by
transactions that follow each other, so they keep their order). While the
broker is down the rows wait; requests are not blocked.

Known shortcoming: when a send fails part-way, the whole batch is sent again,
and without an idempotent producer a lead's later event may already have
landed before its earlier one is re-sent. Consumers skip the copies by event
id but can see that pair out of order; Apache Kafka deployments turn on
``KAFKA_IDEMPOTENT_PRODUCER``, which keeps the producer's own retries ordered.

An event the broker refuses for good (over its size limit) is parked
(``failed_at``, ``failure``) and counted, so it cannot block the events behind
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from shared.clock import Clock
from shared.db import Connection, checked_identifier
from shared.events import CONTENT_TYPE, Envelope
from shared.kafka import LazyProducer
from shared.metrics import (
    OUTBOX_BACKLOG,
    OUTBOX_LAG,
    OUTBOX_LEADER,
    OUTBOX_PARKED,
    OUTBOX_PUBLISH_FAILURES,
    OUTBOX_PUBLISHED,
)
from shared.retry import Backoff
from shared.settings import LEAD_EVENTS_TOPIC

logger = logging.getLogger(__name__)


def outbox_insert(first_parameter: int) -> tuple[str, int]:
    """The outbox INSERT with parameters numbered from ``$first_parameter``.

    For a caller that writes its own rows in the same statement (as a
    data-modifying CTE), saving a round trip; returns the SQL and how many
    parameters it takes. :func:`outbox_arguments` gives their values.
    """
    first = first_parameter
    sql = f"""
        INSERT INTO outbox (event_id, topic, key, payload, created_at)
        SELECT event_id, ${first}, key, payload, ${first + 1}
        FROM unnest(${first + 2}::uuid[], ${first + 3}::bytea[], ${first + 4}::bytea[])
            AS pending(event_id, key, payload)
    """
    return sql, 5


def outbox_arguments(
    events: Sequence[Envelope], *, now_ts: dt.datetime, topic: str = LEAD_EVENTS_TOPIC
) -> list[object]:
    return [
        topic,
        now_ts,
        [event.id for event in events],
        [event.key for event in events],
        [event.to_json() for event in events],
    ]


_OUTBOX_INSERT, _ = outbox_insert(1)


async def add_events(
    connection: Connection,
    events: Sequence[Envelope],
    *,
    now_ts: dt.datetime,
    topic: str = LEAD_EVENTS_TOPIC,
) -> None:
    """Queue ``events`` for publishing, in the caller's open transaction."""
    if not events:
        return
    await connection.execute(
        _OUTBOX_INSERT, *outbox_arguments(events, now_ts=now_ts, topic=topic)
    )


class OutboxRelay:
    """Publishes outbox rows of one schema; safe to run in every process.

    ``wake()`` asks for a pass right away (called after a commit that added
    events); otherwise the relay polls every ``poll_seconds``.
    """

    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        clock: Clock,
        producer_factory: Callable[[], AIOKafkaProducer],
        poll_seconds: float = 0.2,
        batch_size: int = 500,
        retention_seconds: float = 3600.0,
        purge_every_seconds: float = 60.0,
    ) -> None:
        self._dsn = dsn
        self._schema = checked_identifier(schema)
        self._clock = clock
        self._producer = LazyProducer(producer_factory)
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._retention_seconds = retention_seconds
        self._purge_every_seconds = purge_every_seconds
        self._wakeup = asyncio.Event()
        self._connection: asyncpg.Connection | None = None
        self._last_purge = 0.0
        self._last_backlog = float("-inf")
        self._is_leader = False
        OUTBOX_LEADER.labels(self._schema).set(0)
        self.broker_ok: bool | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this copy holds the lock and so is the one publishing."""
        return self._is_leader

    @is_leader.setter
    def is_leader(self, leading: bool) -> None:
        self._is_leader = leading
        OUTBOX_LEADER.labels(self._schema).set(1 if leading else 0)

    def wake(self) -> None:
        self._wakeup.set()

    #: After a wake-up, how long to let more commits gather before a pass, so
    #: a busy service publishes in batches rather than one event per pass.
    LINGER_SECONDS = 0.005
    #: How often the backlog gauge is refreshed (it costs a count query).
    BACKLOG_EVERY_SECONDS = 1.0

    async def run(self) -> None:
        """Loop until cancelled: become leader, publish, survive failures."""
        backoff = Backoff(initial=0.1, maximum=5.0)
        try:
            while True:
                try:
                    published = await self._pass()
                    backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - the relay lives on
                    await self._drop_broken(error)
                    delay = backoff.next_delay()
                    logger.warning(
                        "outbox.publish_failed schema=%s retry_in=%.2fs error=%r",
                        self._schema,
                        delay,
                        error,
                    )
                    OUTBOX_PUBLISH_FAILURES.labels(self._schema).inc()
                    await asyncio.sleep(delay)
                    continue
                if published < self._batch_size:
                    await self._wait_for_work()
        finally:
            await self._close()

    async def _wait_for_work(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)
            await asyncio.sleep(self.LINGER_SECONDS)
        self._wakeup.clear()

    async def _pass(self) -> int:
        """One round: returns how many events were published."""
        connection = await self._leader_connection()
        if connection is None:
            return 0
        await self._report_backlog(connection)
        rows = await connection.fetch(
            """
            SELECT id, topic, key, payload, created_at
            FROM outbox
            WHERE published_at IS NULL AND failed_at IS NULL  -- outbox_unpublished
            ORDER BY id
            LIMIT $1
            """,
            self._batch_size,
        )
        if rows:
            parked = await self._publish(rows)
            now = self._clock.now()
            if parked:
                await self._park(connection, parked, now)
                rows = [row for row in rows if row["id"] not in parked]
            await connection.execute(
                "UPDATE outbox SET published_at = $1 WHERE id = ANY($2::bigint[])",
                now,
                [row["id"] for row in rows],
            )
            OUTBOX_PUBLISHED.labels(self._schema).inc(len(rows))
            for row in rows:
                OUTBOX_LAG.labels(self._schema).observe(
                    max(0.0, (now - row["created_at"]).total_seconds())
                )
        await self._purge(connection)
        return len(rows)

    async def _publish(self, rows: Sequence[asyncpg.Record]) -> dict[int, str]:
        """Send ``rows``; returns the ids the broker can never take, with why."""
        producer = await self._producer.get()
        headers = [("content-type", CONTENT_TYPE.encode())]
        deliveries = []
        parked: dict[int, str] = {}
        for row in rows:
            try:
                deliveries.append(
                    await producer.send(
                        row["topic"],
                        value=row["payload"],
                        key=row["key"],
                        headers=headers,
                    )
                )
            except MessageSizeTooLargeError as error:
                parked[row["id"]] = f"{type(error).__name__}: {error}"
        # Rows are marked published only once every send is acknowledged; a
        # failure part-way re-sends the batch, which consumers deduplicate.
        await asyncio.gather(*deliveries)
        self.broker_ok = True
        return parked

    async def _park(
        self, connection: Connection, parked: dict[int, str], now: dt.datetime
    ) -> None:
        await connection.execute(
            """
            UPDATE outbox SET failed_at = $1, failure = failures.failure
            FROM unnest($2::bigint[], $3::text[]) AS failures(id, failure)
            WHERE outbox.id = failures.id
            """,
            now,
            list(parked),
            list(parked.values()),
        )
        OUTBOX_PARKED.labels(self._schema).inc(len(parked))
        for row_id, failure in parked.items():
            # Swallowed here, so ERROR: someone has to look at the row.
            logger.error(
                "outbox.parked schema=%s id=%s failure=%s",
                self._schema,
                row_id,
                failure,
            )

    async def _leader_connection(self) -> asyncpg.Connection | None:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(
                self._dsn,
                server_settings={
                    "search_path": f"{self._schema},public",
                    "application_name": f"redial-{self._schema}-outbox",
                    # The leader lock lives as long as this session; keepalives
                    # let the server end a session whose client vanished, so
                    # another copy can take over within a minute, not hours.
                    "tcp_keepalives_idle": "30",
                    "tcp_keepalives_interval": "10",
                    "tcp_keepalives_count": "3",
                },
            )
            self.is_leader = False
        if not self.is_leader:
            # Session-level lock: held while this connection lives, so a copy
            # that dies hands leadership over as soon as PostgreSQL notices.
            self.is_leader = await self._connection.fetchval(
                "SELECT pg_try_advisory_lock(hashtext('redial.outbox.' || $1))",
                self._schema,
            )
            if self.is_leader:
                logger.info("outbox.leader schema=%s", self._schema)
        return self._connection if self.is_leader else None

    async def _report_backlog(self, connection: Connection) -> None:
        if self._clock.monotonic() - self._last_backlog < self.BACKLOG_EVERY_SECONDS:
            return
        self._last_backlog = self._clock.monotonic()
        backlog = await connection.fetchval(
            "SELECT count(*) FROM outbox"
            " WHERE published_at IS NULL AND failed_at IS NULL"
        )
        OUTBOX_BACKLOG.labels(self._schema).set(backlog)

    async def _purge(self, connection: Connection) -> None:
        if self._clock.monotonic() - self._last_purge < self._purge_every_seconds:
            return
        self._last_purge = self._clock.monotonic()
        deleted = await connection.execute(
            "DELETE FROM outbox WHERE published_at < $1::timestamptz"
            " - make_interval(secs => $2)",
            self._clock.now(),
            self._retention_seconds,
        )
        logger.debug("outbox.purged schema=%s result=%s", self._schema, deleted)

    async def _drop_broken(self, error: BaseException) -> None:
        if not isinstance(error, asyncpg.PostgresError | OSError):
            self.broker_ok = False
        await self._producer.discard()
        if self._connection is not None and self._connection.is_closed():
            self._connection = None
            self.is_leader = False

    async def _close(self) -> None:
        await self._producer.discard()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
