"""Wiring of the nurture service.

Run as ``uvicorn --factory services.nurture.app:create_app``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI

from services.nurture.api import router
from services.nurture.service import CONSUMED, NurtureService
from services.nurture.settings import NurtureSettings
from shared.clock import Clock
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


async def _start(
    app: FastAPI, runtime: Runtime, settings: NurtureSettings, clock: Clock
) -> None:
    pool = await open_database(runtime, settings, MIGRATIONS)
    relay = outbox_relay(settings, clock, "nurture")
    service = NurtureService(
        pool=pool, settings=settings, clock=clock, on_jobs=relay.wake
    )
    consumer = lead_events_consumer(
        settings,
        pool,
        clock,
        service="nurture",
        group="nurture",
        handler=service.apply_events,
        event_types=CONSUMED,
        after_commit=service.after_commit,
        max_records=settings.consumer_batch,
    )
    app.state.nurture = service
    app.state.consumer = consumer
    app.state.relay = relay
    run_events(runtime, relay, consumer)
    runtime.spawn("scheduler", service.run_scheduler())
    logger.info("nurture.started")


create_app = app_factory(
    service="nurture",
    settings_type=NurtureSettings,
    router=router,
    start=_start,
)
