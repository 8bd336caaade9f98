"""Wiring of the queue service.

Run as ``uvicorn --factory services.queue.app:create_app``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI

from services.queue.api import router
from services.queue.service import QueueService
from services.queue.settings import QueueSettings
from shared.clock import Clock
from shared.events import DncUpdated, LeadDuplicate, LeadOptedOut, LeadReceived
from shared.http import Runtime
from shared.wiring import (
    app_factory,
    lead_events_consumer,
    open_database,
    outbox_relay,
    run_events,
)

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: The events the queue acts on; every other type is skipped undecoded.
CONSUMED = {
    LeadReceived.event_type,
    LeadDuplicate.event_type,
    LeadOptedOut.event_type,
    DncUpdated.event_type,
}


async def _start(
    app: FastAPI, runtime: Runtime, settings: QueueSettings, clock: Clock
) -> None:
    pool = await open_database(runtime, settings, MIGRATIONS)
    relay = outbox_relay(settings, clock, "queue")
    service = QueueService(
        pool=pool, settings=settings, clock=clock, on_commit=relay.wake
    )
    await service.load_rules()
    consumer = lead_events_consumer(
        settings,
        pool,
        clock,
        service="queue",
        group="queue",
        handler=service.apply_events,
        event_types=CONSUMED,
    )
    app.state.queue = service
    app.state.relay = relay
    app.state.consumer = consumer
    run_events(runtime, relay, consumer)
    runtime.spawn("scheduler", service.run_scheduler())
    runtime.spawn("gauges", service.run_gauges())
    logger.info("queue.started")


create_app = app_factory(
    service="queue",
    settings_type=QueueSettings,
    router=router,
    start=_start,
)
