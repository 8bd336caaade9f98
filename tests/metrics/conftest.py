"""A metrics service for the tests, with its own clock, and a script of lead
events each test writes under its own pool and source names."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from services.metrics.app import create_app
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from shared.clock import ManualClock
from shared.events import (
    CallLogged,
    Envelope,
    EventData,
    LeadConverted,
    LeadDuplicate,
    LeadExhausted,
    LeadInvalid,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
    new_event,
)
from tests.conftest import Server, Stack, served, stack_settings

#: The business zone of the tests' metrics service.
ZONE = zoneinfo.ZoneInfo("America/New_York")
#: Where the metrics clock starts: a Wednesday, 00:00 in New York.
START = dt.datetime(2026, 12, 2, 0, 0, tzinfo=ZONE)
MINUTE, HOUR, DAY = (dt.timedelta(minutes=1), dt.timedelta(hours=1), dt.timedelta(1))


def metrics_settings(stack: Stack, **overrides: object) -> MetricsSettings:
    values: dict[str, object] = {
        "business_timezone": ZONE.key,
        # The tests count due slots themselves after moving the clock.
        "tick_seconds": 60,
        "gauge_seconds": 3600,
    }
    return stack_settings(MetricsSettings, stack, **(values | overrides))


@pytest.fixture(scope="session")
def metrics_clock() -> ManualClock:
    return ManualClock(START.astimezone(dt.UTC))


@pytest.fixture(scope="session")
async def metrics(stack: Stack, metrics_clock: ManualClock) -> AsyncIterator[Server]:
    app = create_app(metrics_settings(stack), metrics_clock, configure_logging=False)
    async with served(app) as server:
        yield server


@pytest.fixture
async def api(metrics: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=metrics.url, timeout=30) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class Script:
    """Writes one test's lead events and hands them to the metrics service.

    Each test gets a pool and a source of its own, and a day of its own: the
    script moves the session clock to the start of the next business day, so
    that the day's figures hold only this test's events.
    """

    server: Server
    clock: ManualClock
    pool: str = field(default_factory=lambda: unique("pool"))
    source: str = field(default_factory=lambda: unique("src"))
    day: dt.date = field(init=False)
    events: list[Envelope] = field(default_factory=list)

    def __post_init__(self) -> None:
        local = self.clock.now().astimezone(ZONE)
        self.day = local.date() + dt.timedelta(days=1)
        self.clock.set(self.local(0, 0))

    @property
    def service(self) -> MetricsService:
        service: MetricsService = self.server.app.state.metrics
        return service

    def local(self, hour: int, minute: int = 0, *, day: int = 0) -> dt.datetime:
        """``hour:minute`` in the business zone, ``day`` days after the test's."""
        date = self.day + dt.timedelta(days=day)
        return dt.datetime.combine(date, dt.time(hour, minute), ZONE)

    def event(self, data: EventData, at: dt.datetime) -> Envelope:
        lead_id = getattr(data, "lead_id", None)
        envelope = new_event(data, source="redial/test", subject=str(lead_id), time=at)
        self.events.append(envelope)
        return envelope

    # -- the events, with the test's defaults -------------------------------

    def received(self, at: dt.datetime, **fields: Any) -> uuid.UUID:
        values: dict[str, Any] = {
            "lead_id": uuid.uuid4(),
            "source": self.source,
            "phone": None,
            "received_at": at,
        }
        values.update(fields)
        self.event(LeadReceived(**values), at)
        lead_id: uuid.UUID = values["lead_id"]
        return lead_id

    def queued(
        self,
        lead_id: uuid.UUID,
        at: dt.datetime,
        *,
        target: int = 4,
        cadence: Sequence[float] = (0, 3600, 4 * 3600, 86400),
        pool: str | None = None,
        carried: int = 0,
    ) -> None:
        self.event(
            LeadQueued(
                lead_id=lead_id,
                pool=pool or self.pool,
                source=self.source,
                call_target=target,
                cadence_seconds=list(cadence),
                attempts=carried,
                due_at=at,
                queued_at=at,
            ),
            at,
        )

    def lead(self, at: dt.datetime, **queued: Any) -> uuid.UUID:
        """A lead received and queued at ``at``."""
        lead_id = self.received(at)
        self.queued(lead_id, at, **queued)
        return lead_id

    def call(
        self,
        lead_id: uuid.UUID,
        at: dt.datetime,
        disposition: str = "no_answer",
        *,
        attempt: int,
        agent: str | None = "agent-a",
        team: str | None = "team-a",
        target: int = 4,
        pool: str | None = None,
    ) -> None:
        self.event(
            CallLogged(
                lead_id=lead_id,
                call_id=uuid.uuid4(),
                pool=pool or self.pool,
                source=self.source,
                agent_id=agent,
                team=team,
                attempt=attempt,
                call_target=target,
                disposition=disposition,
                called_at=at,
            ),
            at,
        )

    def exhausted(self, lead_id: uuid.UUID, at: dt.datetime, attempts: int) -> None:
        self.event(
            LeadExhausted(
                lead_id=lead_id,
                pool=self.pool,
                attempts=attempts,
                call_target=attempts,
                exhausted_at=at,
            ),
            at,
        )

    def converted(self, lead_id: uuid.UUID, at: dt.datetime, attempt: int) -> None:
        self.event(
            LeadConverted(
                lead_id=lead_id,
                pool=self.pool,
                agent_id="agent-a",
                attempt=attempt,
                disposition="converted",
                converted_at=at,
            ),
            at,
        )

    def opted_out(self, lead_id: uuid.UUID, at: dt.datetime) -> None:
        self.event(LeadOptedOut(lead_id=lead_id, opted_out_at=at), at)

    def invalid(self, lead_id: uuid.UUID, at: dt.datetime) -> None:
        self.event(
            LeadInvalid(lead_id=lead_id, reason="wrong_number", invalidated_at=at), at
        )

    def duplicate(self, lead_id: uuid.UUID, at: dt.datetime) -> None:
        original = LeadReceived(lead_id=lead_id, source=self.source, received_at=at)
        self.event(
            LeadDuplicate(
                lead_id=lead_id,
                source=self.source,
                matched_on="phone",
                action="ignored",
                lead=original,
                received_at=at,
            ),
            at,
        )

    # -- handing them over ------------------------------------------------------

    async def apply(self, events: Sequence[Envelope] | None = None) -> None:
        """Apply the events (default: all written and not applied yet) as the
        consumer does, in one transaction, then count due slots at the
        clock's time. (The Kafka path has tests of its own.)"""
        pending = list(self.events if events is None else events)
        if events is None:
            self.events = []
        pool = self.server.app.state.runtime.pool
        async with pool.acquire() as connection, connection.transaction():
            await self.service.apply_events(connection, pending)
        self.service.after_commit()
        await self.service.count_due_slots()

    async def at(self, when: dt.datetime) -> None:
        """Move the clock to ``when`` and count the slots due by then."""
        self.clock.set(when)
        await self.service.count_due_slots()


@pytest.fixture
def script(metrics: Server, metrics_clock: ManualClock) -> Script:
    return Script(metrics, metrics_clock)
