"""An intake service for the tests, and fresh sources to post as."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from services.intake import repository
from services.intake.app import create_app
from services.intake.auth import hash_api_key, new_api_key, new_webhook_secret, sign
from services.intake.settings import IntakeSettings
from shared.clock import ManualClock
from shared.db import connect
from tests.conftest import Server, Stack, served, stack_settings


def intake_settings(stack: Stack, **overrides: object) -> IntakeSettings:
    return stack_settings(IntakeSettings, stack, database_pool_max=20, **overrides)


@pytest.fixture(scope="session")
async def intake(stack: Stack, clock: ManualClock) -> AsyncIterator[Server]:
    app = create_app(intake_settings(stack), clock, configure_logging=False)
    async with served(app) as server:
        yield server


@pytest.fixture
async def db(stack: Stack, intake: Server) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the intake schema, to check what was (not) stored."""
    connection = await connect(stack.dsn, server_settings={"search_path": "intake"})
    try:
        yield connection
    finally:
        await connection.close()


@dataclass
class Source:
    name: str
    api_key: str
    webhook_secret: str
    url: str
    clock: ManualClock

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def signed(self, body: bytes, *, at: float | None = None) -> dict[str, str]:
        timestamp = int(at if at is not None else self.clock.now().timestamp())
        return {
            "Redial-Signature": sign(self.webhook_secret, timestamp, body),
            "Content-Type": "application/json",
        }


async def make_source(
    db: asyncpg.Connection,
    intake: Server,
    clock: ManualClock,
    *,
    mapping: str = "generic",
    duplicate_policy: str = "ignore",
    options: dict[str, object] | None = None,
) -> Source:
    name = f"src-{secrets.token_hex(4)}"
    api_key = new_api_key(name)
    secret = new_webhook_secret()
    await repository.save_source(
        db,
        name=name,
        api_key_hash=hash_api_key(api_key),
        webhook_secret=secret,
        mapping=mapping,
        mapping_options=options or {},
        duplicate_policy=duplicate_policy,
        now=clock.now(),
    )
    return Source(name, api_key, secret, intake.url, clock)


@pytest.fixture
async def source(db: asyncpg.Connection, intake: Server, clock: ManualClock) -> Source:
    return await make_source(db, intake, clock)


@pytest.fixture
async def http(intake: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
        yield client


async def stored_lead(
    http: httpx.AsyncClient, source: Source, lead_id: str
) -> dict[str, Any]:
    """The lead as ``GET /v1/leads/{id}`` shows it to ``source``."""
    answer = await http.get(f"/v1/leads/{lead_id}", headers=source.auth)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def body(document: object) -> bytes:
    return orjson.dumps(document)


def days(count: float) -> dt.timedelta:
    return dt.timedelta(days=count)
