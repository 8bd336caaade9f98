"""A queue service for the tests, with its own clock, and a small call floor
(pools, agents, leads) each test builds afresh under unique names."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
import zoneinfo
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from services.queue.app import create_app
from services.queue.service import QueueService
from services.queue.settings import QueueSettings
from shared.clock import ManualClock
from shared.db import connect
from shared.events import Consent, LeadReceived, new_event
from tests.conftest import Server, Stack, served, stack_settings, unique_phone

#: Where the queue's clock starts (a Wednesday).
START = dt.datetime(2026, 12, 2, 16, 0, tzinfo=dt.UTC)


def queue_settings(stack: Stack, **overrides: object) -> QueueSettings:
    values: dict[str, object] = {
        "database_pool_max": 30,
        # The tests move the clock; next-lead then runs the scheduler's pass
        # itself, so a moved clock takes effect without waiting for the loop.
        "scheduler_inline": True,
        "tick_seconds": 1.0,
        "gauge_seconds": 3600,
    }
    return stack_settings(QueueSettings, stack, **(values | overrides))


@pytest.fixture(scope="session")
def queue_clock() -> ManualClock:
    """The queue's own clock: its tests set the time of day they need."""
    return ManualClock(START)


@pytest.fixture(scope="session")
async def queue(stack: Stack, queue_clock: ManualClock) -> AsyncIterator[Server]:
    app = create_app(queue_settings(stack), queue_clock, configure_logging=False)
    async with served(app) as server:
        yield server


@pytest.fixture
async def qdb(stack: Stack, queue: Server) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the queue schema, to check what was (not) stored."""
    connection = await connect(stack.dsn, server_settings={"search_path": "queue"})
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def api(queue: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=queue.url, timeout=30) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclass
class Floor:
    """Builds pools, agents and leads for one test through the real service."""

    api: httpx.AsyncClient
    server: Server
    clock: ManualClock

    @property
    def service(self) -> QueueService:
        service: QueueService = self.server.app.state.queue
        return service

    async def pool(self, **rules: Any) -> str:
        name = unique("pool")
        answer = await self.api.put(f"/v1/pools/{name}", json=rules)
        assert answer.status_code == 201, answer.text
        return name

    async def agent(
        self, pools: list[str], *, team: str | None = None, available: bool = True
    ) -> str:
        name = unique("agent")
        answer = await self.api.put(
            f"/v1/agents/{name}", json={"pools": pools, "team": team}
        )
        assert answer.status_code == 201, answer.text
        if available:
            await self.status(name, "available")
        return name

    async def status(self, agent: str, status: str) -> None:
        answer = await self.api.put(
            f"/v1/agents/{agent}/status", json={"status": status}
        )
        assert answer.status_code == 200, answer.text

    async def route(self, source: str, pool: str, campaign: str | None = None) -> None:
        routing = (await self.api.get("/v1/routing")).json()
        routing["routes"] = [
            route
            for route in routing["routes"]
            if (route["source"], route["campaign"]) != (source, campaign)
        ]
        routing["routes"].append({"source": source, "campaign": campaign, "pool": pool})
        answer = await self.api.put("/v1/routing", json=routing)
        assert answer.status_code == 200, answer.text

    def snapshot(self, source: str, **fields: Any) -> LeadReceived:
        values: dict[str, Any] = {
            "lead_id": uuid.uuid4(),
            "source": source,
            "first_name": "Ada",
            "phone": unique_phone(),
            "country": "US",
            "timezone": "America/New_York",
            "timezones": ["America/New_York"],
            "consent": Consent(call=True),
            "received_at": self.clock.now(),
        }
        values.update(fields)
        return LeadReceived(**values)

    async def receive(self, *leads: LeadReceived) -> list[uuid.UUID]:
        """Hands lead.received events to the queue's consumer handler, in one
        transaction as the consumer would (the Kafka path has its own test)."""
        runtime_pool = self.server.app.state.runtime.pool
        envelopes = [
            new_event(
                lead,
                source="redial/intake",
                subject=str(lead.lead_id),
                time=self.clock.now(),
            )
            for lead in leads
        ]
        async with runtime_pool.acquire() as connection, connection.transaction():
            await self.service.apply_events(connection, envelopes)
        return [lead.lead_id for lead in leads]

    async def leads(self, pool: str, count: int = 1, **fields: Any) -> list[uuid.UUID]:
        """``count`` new leads routed into ``pool``."""
        source = f"src-{pool}"
        await self.route(source, pool)
        return await self.receive(
            *(self.snapshot(source, **fields) for _ in range(count))
        )

    async def next_lead(self, agent: str) -> httpx.Response:
        return await self.api.post(f"/v1/agents/{agent}/next-lead")

    async def outcome(
        self, lease_id: str, disposition: str, **extra: Any
    ) -> httpx.Response:
        return await self.api.post(
            f"/v1/leases/{lease_id}/outcome", json={"disposition": disposition, **extra}
        )

    async def lead(self, lead_id: uuid.UUID | str) -> dict[str, Any]:
        answer = await self.api.get(f"/v1/leads/{lead_id}")
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    def at(self, when: dt.datetime) -> None:
        """Moves the queue's clock forward to ``when``."""
        self.clock.set(when)

    def to_local(
        self,
        zone: str,
        hour: int,
        minute: int = 0,
        *,
        weekdays: frozenset[int] = frozenset(range(1, 8)),
        after: dt.timedelta = dt.timedelta(0),
    ) -> dt.datetime:
        """Moves the clock to the next HH:MM in ``zone`` on one of ``weekdays``
        (ISO numbers), at least ``after`` from now; returns that instant."""
        when = next_local(self.clock.now() + after, zone, hour, minute, weekdays)
        self.clock.set(when)
        return when


def next_local(
    after: dt.datetime, zone: str, hour: int, minute: int, weekdays: frozenset[int]
) -> dt.datetime:
    local_zone = zoneinfo.ZoneInfo(zone)
    day = after.astimezone(local_zone).date()
    while True:
        local = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=local_zone)
        if local.isoweekday() in weekdays and local.astimezone(dt.UTC) > after:
            return local.astimezone(dt.UTC)
        day += dt.timedelta(days=1)


WEEKDAYS = frozenset(range(1, 6))


@pytest.fixture
async def floor(
    api: httpx.AsyncClient, queue: Server, queue_clock: ManualClock
) -> Floor:
    """Each test starts on a weekday at 11:00 in New York (08:00 in Los
    Angeles), later than anything an earlier test did."""
    built = Floor(api, queue, queue_clock)
    built.to_local(
        "America/New_York", 11, weekdays=WEEKDAYS, after=dt.timedelta(hours=1)
    )
    return built
