"""Wiring of the intake service.

Run as ``uvicorn --factory services.intake.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import FastAPI

from services.intake import normalize
from services.intake.api import router
from services.intake.metrics import LEADS_REJECTED
from services.intake.service import IntakeService
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.events import DncUpdated, LeadOptedOut
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
#: How often expired Idempotency-Key records are deleted.
PURGE_EVERY_SECONDS = 3600.0


async def _start(
    app: FastAPI, runtime: Runtime, settings: IntakeSettings, clock: Clock
) -> None:
    pool = await open_database(runtime, settings, MIGRATIONS)
    normalize.warm_up()
    relay = outbox_relay(settings, clock, "intake")
    service = IntakeService(
        pool=pool, settings=settings, clock=clock, on_commit=relay.wake
    )
    consumer = lead_events_consumer(
        settings,
        pool,
        clock,
        service="intake",
        group="intake-dnc",
        handler=service.apply_events,
        event_types={LeadOptedOut.event_type, DncUpdated.event_type},
    )
    app.state.intake = service
    app.state.relay = relay
    app.state.consumer = consumer
    run_events(runtime, relay, consumer)
    runtime.spawn("purge", _purge_forever(service))
    logger.info("intake.started")


async def _purge_forever(service: IntakeService) -> None:
    while True:
        try:
            await service.purge_expired()
        except Exception as error:  # noqa: BLE001 - tried again next round
            logger.warning("intake.purge_failed error=%r", error)
        await asyncio.sleep(PURGE_EVERY_SECONDS)


create_app = app_factory(
    service="intake",
    settings_type=IntakeSettings,
    router=router,
    start=_start,
    on_body_too_large=lambda: LEADS_REJECTED.labels(
        "unknown", "payload_too_large"
    ).inc(),
)
