"""Wiring of the queue service.

Run as ``uvicorn --factory services.queue.app:create_app``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services.queue.api import router
from services.queue.service import QueueService
from services.queue.settings import QueueSettings
from shared.clock import Clock, SystemClock
from shared.consumer import EventConsumer
from shared.db import create_pool
from shared.events import DncUpdated, LeadDuplicate, LeadOptedOut, LeadReceived
from shared.http import Runtime, build_app, running
from shared.kafka import make_producer
from shared.logging import configure
from shared.migrations import migrate_service
from shared.outbox import OutboxRelay
from shared.settings import LEAD_EVENTS_TOPIC

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: The events the queue acts on; every other type is skipped undecoded.
CONSUMED = {
    LeadReceived.event_type,
    LeadDuplicate.event_type,
    LeadOptedOut.event_type,
    DncUpdated.event_type,
}


def create_app(
    settings: QueueSettings | None = None,
    clock: Clock | None = None,
    *,
    configure_logging: bool = True,
) -> FastAPI:
    settings = settings or QueueSettings()
    clock = clock or SystemClock()
    if configure_logging:
        configure(
            json=settings.log_format == "json",
            level=settings.log_level,
            service="queue",
        )
    runtime = Runtime(service="queue")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(runtime):
            await _start(app, runtime, settings, clock)
            yield

    app = build_app(
        service="queue",
        version="1",
        lifespan=lifespan,
        runtime=runtime,
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.settings = settings
    app.include_router(router)
    return app


async def _start(
    app: FastAPI, runtime: Runtime, settings: QueueSettings, clock: Clock
) -> None:
    runtime.pool = pool = await create_pool(
        settings.database_url,
        schema=settings.db_schema,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
    )
    async with pool.acquire() as connection:
        await migrate_service(connection, settings.db_schema, MIGRATIONS)

    relay = OutboxRelay(
        dsn=settings.database_url,
        schema=settings.db_schema,
        clock=clock,
        producer_factory=lambda: make_producer(settings, client_id="queue-outbox"),
        poll_seconds=settings.outbox_poll_seconds,
        batch_size=settings.outbox_batch_size,
        retention_seconds=settings.outbox_retention_seconds,
    )
    service = QueueService(
        pool=pool, settings=settings, clock=clock, on_commit=relay.wake
    )
    await service.load_rules()
    app.state.queue = service
    app.state.relay = relay
    consumer = EventConsumer(
        name="queue",
        topic=LEAD_EVENTS_TOPIC,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        pool=pool,
        clock=clock,
        handler=service.apply_events,
        event_types=CONSUMED,
        producer_factory=lambda: make_producer(settings, client_id="queue-dlq"),
    )
    app.state.consumer = consumer
    runtime.spawn("outbox", relay.run())
    runtime.spawn("consumer", consumer.run())
    runtime.spawn("scheduler", service.run_scheduler())
    runtime.spawn("gauges", service.run_gauges())
    runtime.readiness["broker"] = lambda: {
        None: "unknown",
        True: "ok",
        False: "unreachable (events wait in the outbox)",
    }[relay.broker_ok]
    logger.info("queue.started")
