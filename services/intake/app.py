"""Wiring of the intake service.

Run as ``uvicorn --factory services.intake.app:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services.intake import normalize
from services.intake.api import router
from services.intake.metrics import LEADS_REJECTED
from services.intake.service import IntakeService
from services.intake.settings import IntakeSettings
from shared.clock import Clock, SystemClock
from shared.consumer import EventConsumer
from shared.db import create_pool
from shared.events import DncUpdated, LeadOptedOut
from shared.http import Runtime, build_app, running
from shared.kafka import make_producer
from shared.logging import configure
from shared.migrations import migrate_service
from shared.outbox import OutboxRelay
from shared.settings import LEAD_EVENTS_TOPIC

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: How often expired Idempotency-Key records are deleted.
PURGE_EVERY_SECONDS = 3600.0


def create_app(
    settings: IntakeSettings | None = None,
    clock: Clock | None = None,
    *,
    configure_logging: bool = True,
) -> FastAPI:
    settings = settings or IntakeSettings()
    clock = clock or SystemClock()
    if configure_logging:
        configure(
            json=settings.log_format == "json",
            level=settings.log_level,
            service="intake",
        )
    runtime = Runtime(service="intake")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(runtime):
            await _start(app, runtime, settings, clock)
            yield

    app = build_app(
        service="intake",
        version="1",
        lifespan=lifespan,
        runtime=runtime,
        max_body_bytes=settings.max_body_bytes,
        on_body_too_large=lambda: LEADS_REJECTED.labels(
            "unknown", "payload_too_large"
        ).inc(),
    )
    app.state.settings = settings
    app.include_router(router)
    return app


async def _start(
    app: FastAPI, runtime: Runtime, settings: IntakeSettings, clock: Clock
) -> None:
    runtime.pool = pool = await create_pool(
        settings.database_url,
        schema=settings.db_schema,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
    )
    async with pool.acquire() as connection:
        await migrate_service(connection, settings.db_schema, MIGRATIONS)
    normalize.warm_up()

    relay = OutboxRelay(
        dsn=settings.database_url,
        schema=settings.db_schema,
        clock=clock,
        producer_factory=lambda: make_producer(settings, client_id="intake-outbox"),
        poll_seconds=settings.outbox_poll_seconds,
        batch_size=settings.outbox_batch_size,
        retention_seconds=settings.outbox_retention_seconds,
    )
    service = IntakeService(
        pool=pool, settings=settings, clock=clock, on_commit=relay.wake
    )
    app.state.intake = service
    app.state.relay = relay
    consumer = EventConsumer(
        name="intake-dnc",
        topic=LEAD_EVENTS_TOPIC,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        pool=pool,
        clock=clock,
        handler=service.apply_events,
        event_types={LeadOptedOut.event_type, DncUpdated.event_type},
        producer_factory=lambda: make_producer(settings, client_id="intake-dlq"),
    )
    app.state.consumer = consumer
    runtime.spawn("outbox", relay.run())
    runtime.spawn("consumer", consumer.run())
    runtime.spawn("purge", _purge_forever(service))
    runtime.readiness["broker"] = lambda: {
        None: "unknown",
        True: "ok",
        False: "unreachable (events wait in the outbox)",
    }[relay.broker_ok]
    logger.info("intake.started")


async def _purge_forever(service: IntakeService) -> None:
    while True:
        try:
            await service.purge_expired()
        except Exception as error:  # noqa: BLE001 - tried again next round
            logger.warning("intake.purge_failed error=%r", error)
        await asyncio.sleep(PURGE_EVERY_SECONDS)
