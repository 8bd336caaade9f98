"""What every service's ``app.py`` wires the same way.

A service's ``app.py`` names itself, its settings class, its router and a
``start`` coroutine, and :func:`app_factory` makes its ``create_app`` from
them; this module also gives it logging, the runtime and lifespan, the
common HTTP behaviour, the database pool with its migrations applied, the
outbox relay and the ``lead-events`` consumer, so the services differ only in
what is really theirs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI

from shared.clock import Clock, SharedClock, SystemClock
from shared.consumer import BatchHandler, EventConsumer
from shared.db import create_pool
from shared.http import Runtime, build_app, running
from shared.kafka import make_producer
from shared.logging import configure
from shared.migrations import migrate_service
from shared.outbox import OutboxRelay
from shared.settings import LEAD_EVENTS_TOPIC, ServiceSettings

logger = logging.getLogger(__name__)

#: Builds the service once the runtime exists; runs inside the lifespan.
Start = Callable[[FastAPI, Runtime], Awaitable[None]]
#: A service's own start: also given its settings and clock.
ServiceStart = Callable[[FastAPI, Runtime, Any, Clock], Awaitable[None]]


def app_factory(
    *,
    service: str,
    settings_type: type[ServiceSettings],
    router: APIRouter,
    start: ServiceStart,
    on_body_too_large: Callable[[], None] | None = None,
) -> Callable[..., FastAPI]:
    """The service's ``create_app(settings=None, clock=None, *,
    configure_logging=True)``: uvicorn calls it with no arguments (settings
    from the environment, the system clock), tests with their own."""

    def create_app(
        settings: ServiceSettings | None = None,
        clock: Clock | None = None,
        *,
        configure_logging: bool = True,
    ) -> FastAPI:
        chosen = settings or settings_type()
        running_clock = clock or clock_for(chosen)

        async def started(app: FastAPI, runtime: Runtime) -> None:
            if isinstance(running_clock, SharedClock):
                logger.warning(
                    "clock.shared path=%s: time comes from a test clock file",
                    running_clock.path,
                )
            await start(app, runtime, chosen, running_clock)

        app = service_app(
            service=service,
            settings=chosen,
            start=started,
            configure_logging=configure_logging,
            on_body_too_large=on_body_too_large,
        )
        app.include_router(router)
        return app

    return create_app


def clock_for(settings: ServiceSettings) -> Clock:
    """The system clock, or the end-to-end tests' shared clock where the
    settings name one (they refuse that outside the test environment)."""
    if settings.test_clock_file is None:
        return SystemClock()
    return SharedClock(settings.test_clock_file)


def service_app(
    *,
    service: str,
    settings: ServiceSettings,
    start: Start,
    configure_logging: bool,
    on_body_too_large: Callable[[], None] | None = None,
) -> FastAPI:
    """The FastAPI app of ``service``; ``start`` runs when it starts serving,
    and everything it spawned or opened on the runtime stops with it."""
    if configure_logging:
        configure(
            json=settings.log_format == "json",
            level=settings.log_level,
            service=service,
        )
    runtime = Runtime(service=service)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(runtime):
            await start(app, runtime)
            yield

    app = build_app(
        service=service,
        version="1",
        lifespan=lifespan,
        runtime=runtime,
        max_body_bytes=settings.max_body_bytes,
        on_body_too_large=on_body_too_large,
    )
    app.state.settings = settings
    return app


async def open_database(
    runtime: Runtime, settings: ServiceSettings, migrations: Path
) -> asyncpg.Pool:
    """The service's pool (owned by the runtime), its schema migrated."""
    runtime.pool = pool = await create_pool(
        settings.database_url,
        schema=settings.db_schema,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
    )
    async with pool.acquire() as connection:
        await migrate_service(connection, settings.db_schema, migrations)
    return pool


def outbox_relay(settings: ServiceSettings, clock: Clock, service: str) -> OutboxRelay:
    return OutboxRelay(
        dsn=settings.database_url,
        schema=settings.db_schema,
        clock=clock,
        producer_factory=lambda: make_producer(settings, client_id=f"{service}-outbox"),
        poll_seconds=settings.outbox_poll_seconds,
        batch_size=settings.outbox_batch_size,
        retention_seconds=settings.outbox_retention_seconds,
    )


def lead_events_consumer(
    settings: ServiceSettings,
    pool: asyncpg.Pool,
    clock: Clock,
    *,
    service: str,
    group: str,
    handler: BatchHandler,
    event_types: Collection[str],
    after_commit: Callable[[], None] | None = None,
    max_records: int = 500,
) -> EventConsumer:
    """A consumer of ``lead-events`` as consumer group ``group``; events it
    cannot process go to the dead-letter topic as client ``<service>-dlq``."""
    return EventConsumer(
        name=group,
        topic=LEAD_EVENTS_TOPIC,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        pool=pool,
        clock=clock,
        handler=handler,
        event_types=event_types,
        producer_factory=lambda: make_producer(settings, client_id=f"{service}-dlq"),
        after_commit=after_commit,
        max_records=max_records,
        fetch_wait_ms=settings.consumer_fetch_wait_ms,
    )


def run_events(runtime: Runtime, relay: OutboxRelay, consumer: EventConsumer) -> None:
    """Starts the relay and the consumer, and reports the broker in /readyz."""
    runtime.spawn("outbox", relay.run())
    runtime.spawn("consumer", consumer.run())
    runtime.readiness["broker"] = lambda: {
        None: "unknown",
        True: "ok",
        False: "unreachable (events wait in the outbox)",
    }[relay.broker_ok]
