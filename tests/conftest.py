"""The real stack for the suite: PostgreSQL, the Tansu broker and HTTP.

PostgreSQL is the embedded server (a fresh data folder per run) unless
``TEST_DATABASE_URL`` names a server to use instead; either way every run gets
a database of its own, dropped at the end. The broker is a Tansu process on a
free port. Services run in the test's event loop under a real uvicorn server,
so tests talk HTTP to them and share a :class:`ManualClock` with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import uvicorn
from fastapi import FastAPI

from shared.clock import ManualClock
from shared.kafka import ensure_topics
from shared.launcher.stack import (
    Broker,
    ensure_database,
    free_port,
    start_postgres,
)
from shared.settings import ServiceSettings

TEST_PARTITIONS = 3


@dataclass
class Stack:
    admin_dsn: str
    dsn: str
    broker: Broker

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap


@pytest.fixture(scope="session")
def postgres_admin_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = start_postgres(tmp_path_factory.mktemp("pg") / "data", keep=False)
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    instance = Broker(free_port(), log_path=tmp_path_factory.mktemp("tansu") / "log")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
async def stack(postgres_admin_dsn: str, broker: Broker) -> AsyncIterator[Stack]:
    name = f"redial_test_{secrets.token_hex(4)}"
    dsn = await ensure_database(postgres_admin_dsn, name)
    await ensure_topics(broker.bootstrap, partitions=TEST_PARTITIONS)
    try:
        yield Stack(admin_dsn=postgres_admin_dsn, dsn=dsn, broker=broker)
    finally:
        connection = await asyncpg.connect(postgres_admin_dsn)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()


@pytest.fixture
async def own_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A broker of one test's own, to stop or replay without disturbing others."""
    broker = Broker(free_port(), log_path=tmp_path / "tansu.log")
    broker.start()
    await ensure_topics(broker.bootstrap, partitions=3)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def scratch_database(stack: Stack) -> AsyncIterator[str]:
    """A brand-new empty database for one test (migrations from nothing)."""
    name = f"redial_scratch_{secrets.token_hex(4)}"
    dsn = await ensure_database(stack.admin_dsn, name)
    try:
        yield dsn
    finally:
        connection = await asyncpg.connect(stack.admin_dsn)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()


class _SignalFreeServer(uvicorn.Server):
    """The test runner owns SIGINT; a served app must not take it over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    """A FastAPI app served by uvicorn on a free port inside the test loop."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = _SignalFreeServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def stack_settings(
    settings_type: type[SettingsT], stack: Stack, **values: object
) -> SettingsT:
    """A service's settings for the tests' stack; ``values`` override."""
    chosen: dict[str, object] = {
        "environment": "test",
        "database_url": stack.dsn,
        "kafka_bootstrap_servers": stack.bootstrap,
        "outbox_poll_seconds": 0.05,
    }
    return settings_type.model_validate(chosen | values)


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[Server]:
    """``app`` served on a free port for the body of the ``with``."""
    server = Server(app)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def clock() -> ManualClock:
    """One clock for the session: tests only move it forward."""
    return ManualClock()


#: Numbers handed out this session: random ones collide now and then, and a
#: test's lead must not share a number with another test's (the queue ties
#: leads with one number together).
_ISSUED_PHONES: set[str] = set()


def unique_phone() -> str:
    """A valid US number no other test uses (555-01xx is reserved for fiction,
    so vary the area code and exchange instead)."""
    while True:
        digits = uuid.uuid4().int
        area = ["212", "305", "415", "312", "617", "702", "808", "503"][digits % 8]
        exchange = 200 + (digits >> 3) % 700
        if exchange % 100 == 11:  # N11 codes are service numbers, not exchanges
            exchange += 1
        line = (digits >> 13) % 10_000
        number = f"+1{area}{exchange}{line:04d}"
        if number not in _ISSUED_PHONES:
            _ISSUED_PHONES.add(number)
            return number


def unique_email() -> str:
    return f"lead.{uuid.uuid4().hex[:12]}@example.org"


@contextlib.asynccontextmanager
async def running(
    *loops: Coroutine[Any, Any, None],
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run background loops (relays, consumers) for the body of a ``with``."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


ROOT = Path(__file__).resolve().parent.parent


def free_service_port_offset() -> int:
    """A ``REDIAL_PORT_OFFSET`` that moves ports 8001-8004 onto four free
    ones, for a launcher started by a test."""
    while True:
        base = free_port()
        if base + 3 > 65_000:
            continue
        try:
            for port in range(base, base + 4):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base - 8001
