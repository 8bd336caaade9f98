"""The whole system as a user runs it: every service its own uvicorn process,
started by the launcher's :class:`Fleet`, one embedded PostgreSQL database and
one broker of the test's own, and one :class:`SharedClock` that the test moves
for every process at once.

The services run with ``REDIAL_ENVIRONMENT=test`` and
``REDIAL_TEST_CLOCK_FILE``; their background loops tick every 0.1 s, so a
moved clock takes effect within a tick, and the tests wait for the effect
(polling with a deadline), never for a length of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.intake.auth import SIGNATURE_HEADER, sign
from shared.clock import SharedClock
from shared.kafka import read_from_start
from shared.launcher.stack import (
    Broker,
    Fleet,
    ServiceProcess,
    free_port,
    prepare,
    source_command,
)
from shared.settings import LEAD_EVENTS_TOPIC, NURTURE_JOBS_TOPIC

T = TypeVar("T")

#: Monday 09:00 in Honolulu, 14:00 in New York: every US zone is inside its
#: calling hours for the rest of the working day.
START = dt.datetime(2026, 1, 5, 19, 0, tzinfo=dt.UTC)
PARTITIONS = 3
SERVICES = ("intake", "queue", "metrics", "nurture")
#: How long a topic must stay quiet after the expected records arrived
#: before a read ends (a duplicate would arrive within it).
QUIET_SECONDS = 2.0


@dataclass
class System:
    """A running system and the test's handles on it."""

    clock: SharedClock
    fleet: Fleet
    bootstrap: str
    database_url: str
    logs: Path
    http: httpx.AsyncClient
    secrets: dict[str, str] = field(default_factory=dict)

    def url(self, service: str, copy: int | None = None) -> str:
        """Copy ``copy`` of ``service``, or by default the first one serving
        (as a load balancer would pick one that answers)."""
        copies = self.fleet.copies[service]
        if copy is None:
            copy = next(i for i, process in enumerate(copies) if process.serving)
        return copies[copy].url

    def copy(self, service: str, index: int) -> ServiceProcess:
        return self.fleet.copies[service][index]

    # -- talking to the services -------------------------------------------

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        *,
        copy: int | None = None,
        expect: Iterable[int] = (200, 201),
        **kwargs: Any,
    ) -> httpx.Response:
        answer = await self.http.request(
            method, f"{self.url(service, copy)}{path}", **kwargs
        )
        assert answer.status_code in tuple(expect), (
            f"{method} {service}{path}: {answer.status_code} {answer.text}"
        )
        return answer

    def add_source(self, name: str, mapping: str = "hubspot") -> None:
        """A CRM source whose webhook payloads ``mapping`` reads, made with
        intake's CLI."""
        secret = f"whsec_{uuid.uuid4().hex}"
        subprocess.run(
            source_command(
                name,
                mapping=mapping,
                api_key=f"rdl_{uuid.uuid4().hex}",
                webhook_secret=secret,
            ),
            env={**os.environ, "DATABASE_URL": self.database_url},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.secrets[name] = secret

    async def crm_posts(
        self, source: str, contacts: list[dict[str, Any]], *, copy: int | None = None
    ) -> list[str]:
        """The CRM's signed webhook carrying ``contacts``; the new lead ids."""
        body = json.dumps(contacts).encode()
        timestamp = int(self.clock.now().timestamp())
        answer = await self.call(
            "POST",
            "intake",
            f"/v1/webhooks/{source}",
            copy=copy,
            expect=(202,),
            content=body,
            headers={
                SIGNATURE_HEADER: sign(self.secrets[source], timestamp, body),
                "Content-Type": "application/json",
            },
        )
        results = answer.json()["results"]
        assert all(result["status"] == "accepted" for result in results), results
        return [result["lead_id"] for result in results]

    async def scrape(self, service: str, copy: int = 0) -> dict[str, float]:
        """``/metrics`` of one copy as ``{'name{label="v"}': value}``."""
        answer = await self.call("GET", service, "/metrics", copy=copy)
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                labels = ",".join(
                    f'{k}="{v}"' for k, v in sorted(sample.labels.items())
                )
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

    # -- what reached the topics -------------------------------------------

    async def events(self, count: int, *types: str) -> list[dict[str, Any]]:
        """``lead-events`` of the given types (at least ``count`` of them)."""
        return await self._read(LEAD_EVENTS_TOPIC, count, set(types))

    async def nurture_jobs(self, count: int) -> list[dict[str, Any]]:
        return await self._read(NURTURE_JOBS_TOPIC, count, None)

    async def _read(
        self, topic: str, count: int, types: set[str] | None
    ) -> list[dict[str, Any]]:
        """Records of ``topic`` (of ``types``), read from the start until at
        least ``count`` are there and then nothing more arrives for
        ``QUIET_SECONDS``, so a late extra copy is seen too."""
        kept: list[dict[str, Any]] = []
        quiet = 0.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(90):
                async for records in read_from_start(
                    self.bootstrap, topic, idle_ms=250
                ):
                    documents = [json.loads(record.value) for record in records]
                    kept += [
                        document
                        for document in documents
                        if types is None or document["type"] in types
                    ]
                    quiet = 0.0 if records or len(kept) < count else quiet + 0.25
                    if quiet >= QUIET_SECONDS:
                        break
        assert len(kept) >= count, f"{len(kept)} of {count} on {topic}"
        return kept

    # -- the processes -----------------------------------------------------

    async def outbox_leader(self, service: str) -> int:
        """The copy of ``service`` whose relay publishes its outbox."""

        async def one_leader() -> int | None:
            leading = [
                copy
                for copy in range(len(self.fleet.copies[service]))
                if (await self.scrape(service, copy)).get(
                    f'redial_outbox_leader{{service="{service}"}}'
                )
                == 1.0
            ]
            return leading[0] if len(leading) == 1 else None

        return await eventually(one_leader, what=f"one {service} outbox leader")

    async def partitions_held(self, service: str, copy: int) -> float:
        """lead-events partitions one copy's consumer holds now."""
        samples = await self.scrape(service, copy)
        return sum(
            value
            for name, value in samples.items()
            if name.startswith("redial_consumer_partitions_assigned{")
        )

    async def unpublished(self, service: str) -> int:
        """Rows waiting in ``service``'s outbox."""
        connection = await asyncpg.connect(self.database_url)
        try:
            waiting: int = await connection.fetchval(
                f"SELECT count(*) FROM {service}.outbox WHERE published_at IS NULL"
            )
        finally:
            await connection.close()
        return waiting

    async def outbox_rows(self, service: str, topic: str) -> tuple[int, int]:
        """Rows ever written to ``service``'s outbox for ``topic``, and the
        distinct keys (subjects) among them."""
        connection = await asyncpg.connect(self.database_url)
        try:
            row = await connection.fetchrow(
                f"SELECT count(*), count(DISTINCT key) FROM {service}.outbox"
                " WHERE topic = $1",
                topic,
            )
        finally:
            await connection.close()
        assert row is not None
        return row[0], row[1]


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 60, what: str = ""
) -> T:
    """Poll ``check`` until it returns something other than None; after
    ``timeout`` seconds, fail saying what was awaited."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result is not None:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{timeout:g} s waiting for {what}") from None


def service_env(database_url: str, bootstrap: str, clock_file: Path) -> dict[str, str]:
    """What every service process is started with."""
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIAL_ENVIRONMENT": "test",
        "REDIAL_TEST_CLOCK_FILE": str(clock_file),
        "REDIAL_TOPIC_PARTITIONS": str(PARTITIONS),
        "REDIAL_OUTBOX_POLL_SECONDS": "0.05",
        "REDIAL_LOG_FORMAT": "text",
        "DATABASE_POOL_MIN": "1",
        "DATABASE_POOL_MAX": "4",
        "QUEUE_SCHEDULER_INLINE": "true",
        "QUEUE_TICK_SECONDS": "0.1",
        "METRICS_TICK_SECONDS": "0.1",
        "NURTURE_TICK_SECONDS": "0.1",
        # Time stands still between moves, so the published rows the purge
        # keeps would otherwise vanish at the 30-day jump: keep them all.
        "REDIAL_OUTBOX_RETENTION_SECONDS": str(400 * 86_400),
    }


LaunchSystem = Callable[..., contextlib.AbstractAsyncContextManager[System]]


@pytest.fixture
def launch_system(
    scratch_database: str, own_broker: Broker, tmp_path: Path
) -> LaunchSystem:
    """``async with launch_system(copies=2) as system``: the whole system."""

    @contextlib.asynccontextmanager
    async def launch(copies: int = 1) -> AsyncIterator[System]:
        await prepare(scratch_database, own_broker.bootstrap, partitions=PARTITIONS)
        clock = SharedClock.create(tmp_path / "clock", START)
        logs = tmp_path / "logs"
        logs.mkdir()
        ports = {name: [free_port() for _ in range(copies)] for name in SERVICES}
        env = service_env(scratch_database, own_broker.bootstrap, clock.path)
        # The manager's page reads this system's queue, not whatever listens
        # on the default 127.0.0.1:8002 (a `make run` stack beside the tests).
        env["METRICS_QUEUE_URL"] = f"http://127.0.0.1:{ports['queue'][0]}"
        fleet = Fleet(ports, env, log_dir=logs)
        try:
            fleet.start()
            async with httpx.AsyncClient(timeout=30) as http:
                yield System(
                    clock=clock,
                    fleet=fleet,
                    bootstrap=own_broker.bootstrap,
                    database_url=scratch_database,
                    logs=logs,
                    http=http,
                )
        except BaseException:
            _print_logs(logs)
            raise
        finally:
            fleet.stop()
            clock.close()

    return launch


def _print_logs(logs: Path) -> None:
    """The services' last words, for a failed test's report."""
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-40:]
        print(f"--- {log.name}", *lines, sep="\n")
