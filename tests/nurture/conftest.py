"""A nurture service for the tests, with its own clock, and a story helper
that writes one test's lead events under its own source, pool and campaign.

The service runs as deployed (consumer, outbox relay, scheduler loop), but
its scheduler only ticks once a minute of real time: tests move the clock and
then run the due leads themselves (``Story.at``). A tick that comes first
does the same work at the same clock time, so nothing depends on timing.
Jobs are read back from ``nurture-jobs``; "nothing was sent" is checked
against the outbox, which holds every job the moment it is decided.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from services.nurture.app import create_app
from services.nurture.service import NurtureService
from services.nurture.settings import NurtureSettings
from shared.clock import ManualClock
from shared.events import (
    Consent,
    Envelope,
    EventData,
    LeadConverted,
    LeadExhausted,
    LeadInvalid,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
    NurtureJob,
    decode,
    new_event,
)
from shared.settings import NURTURE_JOBS_TOPIC
from tests.conftest import Server, Stack, served, stack_settings, unique_phone
from tests.kafka_reader import read_until

ZONE = zoneinfo.ZoneInfo("America/New_York")
#: A Monday, 10:00 in New York.
START = dt.datetime(2027, 3, 1, 10, 0, tzinfo=ZONE)
DAY = dt.timedelta(days=1)


def nurture_settings(stack: Stack, **overrides: object) -> NurtureSettings:
    values: dict[str, object] = {
        "default_timezone": ZONE.key,
        # Tests run the due leads themselves after moving the clock.
        "tick_seconds": 60,
        # The tests read decided jobs from the outbox; the clock moves months.
        "outbox_retention_seconds": 100 * 365 * 86400,
    }
    return stack_settings(NurtureSettings, stack, **(values | overrides))


@pytest.fixture(scope="session")
def nurture_clock() -> ManualClock:
    return ManualClock(START.astimezone(dt.UTC))


@pytest.fixture(scope="session")
async def nurture(stack: Stack, nurture_clock: ManualClock) -> AsyncIterator[Server]:
    app = create_app(nurture_settings(stack), nurture_clock, configure_logging=False)
    async with served(app) as server:
        yield server


@pytest.fixture
async def api(nurture: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=nurture.url, timeout=30) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def unique_email() -> str:
    return f"lead.{uuid.uuid4().hex[:12]}@example.org"


@dataclass
class Story:
    """One test's leads, campaign and clock moves.

    The session clock is moved to 10:00 New York time on a day after every
    earlier test's, so each story starts on a fresh Monday-to-Sunday week.
    """

    server: Server
    api: httpx.AsyncClient
    clock: ManualClock
    bootstrap: str
    source: str = field(default_factory=lambda: unique("src"))
    pool: str = field(default_factory=lambda: unique("pool"))
    campaign: str = field(default_factory=lambda: unique("camp"))
    start: dt.datetime = field(init=False)
    pending: list[Envelope] = field(default_factory=list)

    def __post_init__(self) -> None:
        local = self.clock.now().astimezone(ZONE)
        days_to_monday = 7 - local.weekday()
        day = local.date() + dt.timedelta(days=days_to_monday)
        self.start = dt.datetime.combine(day, dt.time(10), ZONE)
        self.clock.set(self.start)

    @property
    def service(self) -> NurtureService:
        service: NurtureService = self.server.app.state.nurture
        return service

    @property
    def database(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.server.app.state.runtime.pool
        return pool

    def local(self, day: int, hour: int, minute: int = 0) -> dt.datetime:
        """``hour:minute`` New York time, ``day`` days after the story's start."""
        date = self.start.date() + dt.timedelta(days=day)
        return dt.datetime.combine(date, dt.time(hour, minute), ZONE)

    # -- the campaign ----------------------------------------------------------

    async def put_campaign(
        self, steps: Sequence[dict[str, Any]], **fields: Any
    ) -> dict[str, Any]:
        body = {"steps": list(steps), "sources": [self.source]} | fields
        answer = await self.api.put(f"/v1/campaigns/{self.campaign}", json=body)
        assert answer.status_code in (200, 201), answer.text
        stored: dict[str, Any] = answer.json()
        return stored

    # -- events ----------------------------------------------------------------

    def event(self, data: EventData, lead_id: uuid.UUID) -> Envelope:
        envelope = new_event(
            data, source="redial/test", subject=str(lead_id), time=self.clock.now()
        )
        self.pending.append(envelope)
        return envelope

    def received(
        self,
        *,
        sms: bool = True,
        email: bool = True,
        phone: str | None = "unique",
        address: str | None = "unique",
        timezone: str | None = ZONE.key,
        at: dt.datetime | None = None,
        **fields: Any,
    ) -> uuid.UUID:
        lead_id = uuid.uuid4()
        values: dict[str, Any] = {
            "lead_id": lead_id,
            "source": self.source,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "phone": unique_phone() if phone == "unique" else phone,
            "email": unique_email() if address == "unique" else address,
            "timezone": timezone,
            "consent": Consent(call=True, sms=sms, email=email),
            "received_at": at or self.clock.now(),
        }
        self.event(LeadReceived(**(values | fields)), lead_id)
        return lead_id

    def queued(self, lead_id: uuid.UUID, *, while_calling: bool = True) -> None:
        now = self.clock.now()
        self.event(
            LeadQueued(
                lead_id=lead_id,
                pool=self.pool,
                source=self.source,
                call_target=8,
                nurture_while_calling=while_calling,
                due_at=now,
                queued_at=now,
            ),
            lead_id,
        )

    def exhausted(self, lead_id: uuid.UUID) -> None:
        self.event(
            LeadExhausted(
                lead_id=lead_id,
                pool=self.pool,
                attempts=8,
                call_target=8,
                exhausted_at=self.clock.now(),
            ),
            lead_id,
        )

    def converted(self, lead_id: uuid.UUID) -> None:
        self.event(
            LeadConverted(
                lead_id=lead_id,
                pool=self.pool,
                attempt=7,
                disposition="converted",
                converted_at=self.clock.now(),
            ),
            lead_id,
        )

    def invalid(self, lead_id: uuid.UUID) -> None:
        self.event(
            LeadInvalid(
                lead_id=lead_id, reason="wrong_number", invalidated_at=self.clock.now()
            ),
            lead_id,
        )

    def opted_out(self, lead_id: uuid.UUID, channel: str = "all") -> None:
        self.event(
            LeadOptedOut(
                lead_id=lead_id, channel=channel, opted_out_at=self.clock.now()
            ),
            lead_id,
        )

    async def apply(self) -> None:
        """Apply the pending events as the consumer does, in one transaction."""
        pending, self.pending = self.pending, []
        async with self.database.acquire() as connection, connection.transaction():
            await self.service.apply_events(connection, pending)
        self.service.after_commit()

    # -- time --------------------------------------------------------------------

    async def at(self, when: dt.datetime) -> int:
        """Move the clock to ``when`` and run every lead due by then."""
        self.clock.set(when)
        return await self.service.run_due()

    # -- what came out -------------------------------------------------------------

    async def view(self, lead_id: uuid.UUID) -> dict[str, Any]:
        answer = await self.api.get(f"/v1/leads/{lead_id}/nurture")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def decided(self, lead_id: uuid.UUID) -> list[NurtureJob]:
        """Every job written for the lead, from the outbox, in order."""
        rows = await self.database.fetch(
            "SELECT payload FROM outbox WHERE topic = $1 AND key = $2 ORDER BY id",
            NURTURE_JOBS_TOPIC,
            str(lead_id).encode(),
        )
        return [_job(decode(row["payload"])) for row in rows]

    async def published(self, lead_id: uuid.UUID, count: int) -> list[NurtureJob]:
        """The first ``count`` jobs about the lead on ``nurture-jobs``."""
        records = await read_until(
            self.bootstrap,
            NURTURE_JOBS_TOPIC,
            lambda kept: len(kept) >= count,
            keep=lambda record: record.key == str(lead_id).encode(),
            timeout=30,
        )
        return [_job(decode(record.value)) for record in records]


def _job(envelope: Envelope) -> NurtureJob:
    assert isinstance(envelope.data, NurtureJob)
    return envelope.data


@pytest.fixture
def story(
    nurture: Server, api: httpx.AsyncClient, nurture_clock: ManualClock, stack: Stack
) -> Story:
    return Story(nurture, api, nurture_clock, stack.bootstrap)


def email_step(day: int, template: str = "tpl") -> dict[str, Any]:
    return {"day": day, "channel": "email", "template_id": f"{template}-{day}"}


def sms_step(day: int, template: str = "sms") -> dict[str, Any]:
    return {"day": day, "channel": "sms", "template_id": f"{template}-{day}"}
