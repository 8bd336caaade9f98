"""Wiring of the metrics service.

Run as ``uvicorn --factory services.metrics.app:create_app``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI

from services.metrics.api import routes
from services.metrics.floor import QueueFloor
from services.metrics.page import ManagerPage
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from shared.clock import Clock
from shared.events import (
    CallLogged,
    LeadConverted,
    LeadDuplicate,
    LeadExhausted,
    LeadInvalid,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
)
from shared.http import Runtime
from shared.wiring import app_factory, lead_events_consumer, open_database

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: The events the counters are made of; every other type is skipped undecoded.
CONSUMED = {
    model.event_type
    for model in (
        LeadReceived,
        LeadDuplicate,
        LeadQueued,
        CallLogged,
        LeadExhausted,
        LeadConverted,
        LeadOptedOut,
        LeadInvalid,
    )
}


async def _start(
    app: FastAPI, runtime: Runtime, settings: MetricsSettings, clock: Clock
) -> None:
    pool = await open_database(runtime, settings, MIGRATIONS)
    service = MetricsService(pool=pool, settings=settings, clock=clock)
    consumer = lead_events_consumer(
        settings,
        pool,
        clock,
        service="metrics",
        group="metrics",
        handler=service.apply_events,
        event_types=CONSUMED,
        after_commit=service.after_commit,
        max_records=settings.consumer_batch,
    )
    app.state.metrics = service
    app.state.consumer = consumer
    app.state.page = ManagerPage(
        service=service,
        floor=QueueFloor(settings.queue_url, settings.queue_timeout_seconds),
        clock=clock,
        zone=settings.zone,
    )
    # The service publishes nothing, so it has no outbox relay to run.
    runtime.spawn("consumer", consumer.run())
    runtime.readiness["consumer"] = lambda: (
        f"{len(consumer.assignment)} partitions assigned"
        if consumer.assignment
        else "no partitions assigned (yet, or another copy holds them all)"
    )
    runtime.exposition.append(service.exposition)
    runtime.spawn("slots", service.run_slot_counter())
    runtime.spawn("gauges", service.run_gauges())
    logger.info("metrics.started")


create_app = app_factory(
    service="metrics",
    settings_type=MetricsSettings,
    router=routes,
    start=_start,
)
