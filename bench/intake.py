"""Intake's throughput and latency on this machine, each beside a baseline.

    .venv/bin/python -m bench.intake [--quick] [--json PATH]

Starts embedded PostgreSQL (``synchronous_commit`` left on) and Tansu, unless
``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` name servers to use; prepares
them, provisions a source with the operator CLI and runs intake as its own
uvicorn process, the way production runs it. Then, repeated three times (once
with ``--quick``), each run beside its baseline:

* single posts, closed loop — baseline: one asyncpg transaction per lead with
  the same two inserts (lead row, outbox row), at the same concurrency;
* single posts offered at a steady rate, open loop, each latency counted from
  the request's due time — baseline: that transaction at the same rate. Both
  runs read the topic their events reach, to measure how late they arrive:
  through intake's outbox relay, or published straight after commit;
* batches of 1 000 leads, closed loop — baseline: one asyncpg transaction per
  1 000 leads doing COPY of the lead rows and one INSERT of 1 000 outbox rows.

Baselines write to a scratch schema of the same database, dropped at the end.
The medians go to stdout and ``bench/results/intake.md`` as a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench._common import (
    CpuProbe,
    Endpoints,
    Figure,
    HttpConnection,
    LagProbe,
    RequestFailed,
    Run,
    Samples,
    Session,
    Stock,
    Target,
    UniqueLeads,
    amount,
    close_all,
    closed_loop,
    describe_cpu,
    family,
    format_value,
    machine_line,
    markdown_table,
    median_shares,
    open_loop,
    parent_of,
    percentile,
    provision_source,
    repetition_lines,
    running_service,
    running_stack,
    spread,
    tail,
    write_results,
)
from services.intake.repository import LEAD_COLUMNS
from shared.db import connect
from shared.events import Consent, LeadReceived, new_event
from shared.kafka import make_producer
from shared.launcher.stack import ServiceProcess
from shared.settings import LEAD_EVENTS_TOPIC, ServiceSettings

SOURCE = "bench"
#: Leads put in both lead tables before measuring, then ANALYZEd: see seed().
SEED_LEADS = 50_000
BASELINE_SCHEMA = "bench_intake_baseline"
#: Where the lag baseline publishes; never a topic a service reads.
BASELINE_TOPIC = "redial-bench-lag-baseline"
RECEIVED = LeadReceived.event_type

#: The issue's targets.
SINGLE_TARGET = 2_500.0
STEADY_P99_TARGET_MS = 25.0
BATCH_TARGET = 20_000.0
BATCH_RATIO_TARGET = 0.5
LAG_P99_TARGET_MS = 1_000.0

_BACKLOG = "SELECT count(*) FROM intake.outbox WHERE published_at IS NULL"
_LEADS = "SELECT count(*) FROM intake.leads"
_SEQ_SCANS = (
    "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'intake.leads'::regclass"
)
_INSERT_LEAD = (
    f"INSERT INTO leads ({', '.join(LEAD_COLUMNS)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(LEAD_COLUMNS) + 1))})"
)
_INSERT_EVENT = (
    "INSERT INTO outbox (event_id, topic, key, payload, created_at)"
    " VALUES ($1, $2, $3, $4, $5)"
)
# The statement shared.outbox.add_events runs, fed with ready-made arrays.
_INSERT_EVENTS = """
    INSERT INTO outbox (event_id, topic, key, payload, created_at)
    SELECT event_id, $1, key, payload, $2
    FROM unnest($3::uuid[], $4::bytea[], $5::bytea[]) AS pending(event_id, key, payload)
"""

LeadRow = tuple[Any, ...]
EventRow = tuple[uuid.UUID, str, bytes, bytes, dt.datetime]


@dataclass(frozen=True)
class Options:
    repetitions: int
    warmup: float
    duration: float
    single_clients: int
    batch_clients: int
    batch_size: int
    steady_rate: float
    steady_connections: int
    quick: bool
    seed: int
    json: Path | None


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, 3 s runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--single-clients", type=int, default=16)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument(
        "--steady-rate",
        type=float,
        default=SINGLE_TARGET / 2,
        help="posts/s offered in the open-loop run (default: half the target)",
    )
    parser.add_argument("--steady-connections", type=int, default=64)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="start from empty, never analysed tables instead of seeding them",
    )
    arguments = parser.parse_args(argv)
    quick = bool(arguments.quick)
    return Options(
        repetitions=1 if quick else 3,
        warmup=1.0 if quick else 2.0,
        duration=3.0 if quick else 8.0,
        single_clients=arguments.single_clients,
        batch_clients=arguments.batch_clients,
        batch_size=arguments.batch_size,
        steady_rate=arguments.steady_rate,
        steady_connections=arguments.steady_connections,
        quick=quick,
        seed=0 if arguments.cold else SEED_LEADS,
        json=arguments.json,
    )


# -- payloads ---------------------------------------------------------------


class Payloads:
    """Everything the runs send, built ahead and never sent twice."""

    def __init__(self, options: Options, url_host: str, api_key: str) -> None:
        self._leads = UniqueLeads(random.Random(time.time_ns()))
        self._host = url_host
        self._headers = (
            f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        )
        self._batch_size = options.batch_size
        self._event_payload = _event_payload()
        seconds = options.warmup + options.duration
        batches = seconds / options.batch_size
        # First guesses, generous so the first run rarely builds on the spot;
        # later runs are sized by what the one before took.
        self.single_posts = Stock(self._single_post, initial=int(5_000 * seconds))
        self.steady_posts = Stock(
            self._single_post, initial=int(options.steady_rate * seconds * 1.1)
        )
        self.batch_posts = Stock(self._batch_post, initial=int(10_000 * batches))
        self.single_rows = Stock(self._single_rows, initial=int(8_000 * seconds))
        self.steady_rows = Stock(
            self._single_rows, initial=int(options.steady_rate * seconds * 1.1)
        )
        self.batch_rows = Stock(self._batch_rows, initial=int(80_000 * batches))

    def _request(self, path: str, body: bytes) -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\n{self._headers}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def _single_post(self) -> bytes:
        return self._request("/v1/leads", orjson.dumps(self._leads.document()))

    def _batch_post(self) -> bytes:
        leads = [self._leads.document() for _ in range(self._batch_size)]
        return self._request("/v1/leads/batch", orjson.dumps({"leads": leads}))

    def lead_row(self, now: dt.datetime) -> LeadRow:
        """A row as intake stores it: the columns its service computes."""
        contact = self._leads.contact()
        columns = {
            "id": uuid.uuid4(),
            "source": SOURCE,
            "external_id": None,
            "campaign": "spring-refi",
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "phone": contact.phone,
            "email": contact.email,
            "postal_code": contact.postal_code,
            "country": "US",
            "region": contact.region,
            "timezone": contact.timezone,
            "timezones": [contact.timezone],
            "consent_call": True,
            "consent_sms": False,
            "consent_email": True,
            "attributes": {"utm_source": "bench", "loan_amount": 250_000},
            "dnc": False,
            "received_at": now,
            "updated_at": now,
        }
        return tuple(columns[name] for name in LEAD_COLUMNS)

    def _single_rows(self) -> tuple[LeadRow, EventRow]:
        now = dt.datetime.now(dt.UTC)
        lead = self.lead_row(now)
        # Same payload bytes for every row: PostgreSQL's work depends on
        # their size (as intake's), not on what they say.
        event = (
            uuid.uuid4(),
            LEAD_EVENTS_TOPIC,
            str(lead[0]).encode(),
            self.event,
            now,
        )
        return lead, event

    def _batch_rows(self) -> tuple[list[LeadRow], list[Any]]:
        now = dt.datetime.now(dt.UTC)
        leads = [self.lead_row(now) for _ in range(self._batch_size)]
        ids = [uuid.uuid4() for _ in leads]
        keys = [str(lead[0]).encode() for lead in leads]
        return leads, [LEAD_EVENTS_TOPIC, now, ids, keys, [self.event] * len(leads)]

    @property
    def event(self) -> bytes:
        return self._event_payload

    def refill(self) -> None:
        for stock in self.stocks():
            stock.refill()

    def stocks(self) -> list[Stock[Any]]:
        return [
            self.single_posts,
            self.steady_posts,
            self.batch_posts,
            self.single_rows,
            self.steady_rows,
            self.batch_rows,
        ]


def _event_payload() -> bytes:
    """A lead.received CloudEvent the size intake writes for these leads."""
    now = dt.datetime.now(dt.UTC)
    lead_id = uuid.uuid4()
    data = LeadReceived(
        lead_id=lead_id,
        source=SOURCE,
        campaign="spring-refi",
        first_name="Maria",
        last_name="Garcia",
        phone="+13052221234",
        email="lead.0a1b2c3d.123456@example.org",
        postal_code="33131",
        country="US",
        region="FL",
        timezone="America/New_York",
        timezones=["America/New_York"],
        consent=Consent(call=True, sms=False, email=True),
        attributes={"utm_source": "bench", "loan_amount": 250_000},
        received_at=now,
    )
    event = new_event(data, source="redial/intake", subject=str(lead_id), time=now)
    return event.to_json()


# -- sessions ---------------------------------------------------------------


@dataclass
class Tally:
    """What responses said beyond their status."""

    duplicates: int = 0
    requests: int = 0


class PostSession:
    """Posts pre-built requests to intake on one keep-alive connection."""

    def __init__(
        self, connection: HttpConnection, stock: Stock[bytes], leads: int, tally: Tally
    ) -> None:
        self._connection = connection
        self._stock = stock
        self._leads = leads
        self._tally = tally

    async def perform(self) -> int:
        status, body = await self._connection.exchange(self._stock.take())
        self._tally.requests += 1
        if status != 202:
            raise RequestFailed(status, body)
        self._tally.duplicates += _duplicates(body, self._leads)
        return self._leads

    async def close(self) -> None:
        await self._connection.close()


def _duplicates(body: bytes, leads: int) -> int:
    if leads == 1:
        return int(b'"status":"duplicate"' in body)
    # A batch answer ends with its counts; read them without parsing it all.
    start = body.rfind(b'"duplicates":') + len(b'"duplicates":')
    end = start
    while end < len(body) and body[end : end + 1].isdigit():
        end += 1
    return int(body[start:end] or 0)


class DirectPublisher:
    """The lag baseline: each event goes to the broker right after its commit."""

    def __init__(self, producer: AIOKafkaProducer, event: bytes) -> None:
        self._producer = producer
        document = orjson.loads(event)
        document["time"] = "@@TIME@@"
        self._head, self._tail = orjson.dumps(document).split(b"@@TIME@@")
        self._deliveries: list[asyncio.Future[Any]] = []

    async def publish(self, accepted: dt.datetime, key: bytes) -> None:
        value = self._head + accepted.isoformat().encode() + self._tail
        # The delivery is not awaited here: intake does not wait for the broker
        # before answering either.
        delivery = await self._producer.send(BASELINE_TOPIC, value=value, key=key)
        self._deliveries.append(delivery)

    async def flush(self) -> int:
        """Wait for every delivery; returns how many failed."""
        outcomes = await asyncio.gather(*self._deliveries, return_exceptions=True)
        self._deliveries.clear()
        return sum(isinstance(outcome, BaseException) for outcome in outcomes)


class InsertSession:
    """The single-lead baseline: one transaction, a lead row and an outbox row."""

    def __init__(
        self,
        connection: asyncpg.Connection,
        stock: Stock[tuple[LeadRow, EventRow]],
        publisher: DirectPublisher | None = None,
    ) -> None:
        self._connection = connection
        self._stock = stock
        self._publisher = publisher

    async def perform(self) -> int:
        lead, event = self._stock.take()
        # Taken where intake takes it: before the transaction starts.
        accepted = dt.datetime.now(dt.UTC)
        async with self._connection.transaction():
            await self._connection.execute(_INSERT_LEAD, *lead)
            await self._connection.execute(_INSERT_EVENT, *event)
        if self._publisher is not None:
            await self._publisher.publish(accepted, event[2])
        return 1

    async def close(self) -> None:
        pass  # the pool that lent the connection takes it back


class CopySession:
    """The batch baseline: COPY of the lead rows plus one outbox INSERT."""

    def __init__(
        self,
        connection: asyncpg.Connection,
        stock: Stock[tuple[list[LeadRow], list[Any]]],
    ) -> None:
        self._connection = connection
        self._stock = stock

    async def perform(self) -> int:
        leads, events = self._stock.take()
        async with self._connection.transaction():
            await self._connection.copy_records_to_table(
                "leads",
                records=leads,
                columns=LEAD_COLUMNS,
                schema_name=BASELINE_SCHEMA,
            )
            await self._connection.execute(_INSERT_EVENTS, *events)
        return len(leads)

    async def close(self) -> None:
        pass


# -- runs -------------------------------------------------------------------


@dataclass
class Bench:
    """The runs of one session against a started intake; one method per run."""

    options: Options
    endpoints: Endpoints
    service: ServiceProcess
    log_path: Path
    admin: asyncpg.Connection
    producer: AIOKafkaProducer
    payloads: Payloads
    cpu: CpuProbe
    samples: Samples = field(default_factory=Samples)
    tally: Tally = field(default_factory=Tally)

    # -- intake ------------------------------------------------------------

    async def single_posts(self) -> Run:
        await self.drain_outbox()
        stock = self.payloads.single_posts
        async with self._http(self.options.single_clients, stock, 1) as sessions:
            return await self._closed(sessions)

    async def steady_posts(self, rate: float, *, lag: bool) -> tuple[Run, list[float]]:
        """Posts offered at ``rate``; with ``lag``, also how late events reached
        lead-events (seconds, one per event accepted in the window)."""
        await self.drain_outbox()
        async with self._lag_probe(LEAD_EVENTS_TOPIC, lag) as probe:
            stock = self.payloads.steady_posts
            connections = self.options.steady_connections
            async with self._http(connections, stock, 1) as sessions:
                run = await self._open(sessions, rate)
            if probe is None:
                return run, []
            await self.drain_outbox()
            await probe.settle()
            return run, probe.lags(run.wall_start, run.wall_end, type_=RECEIVED)

    async def batch_posts(self) -> tuple[Run, int, float]:
        """The run, then the outbox backlog it left and how long that took to go."""
        await self.drain_outbox()
        stock = self.payloads.batch_posts
        leads = self.options.batch_size
        async with self._http(self.options.batch_clients, stock, leads) as sessions:
            run = await self._closed(sessions)
        backlog, seconds = await self.drain_outbox()
        return run, backlog, seconds

    # -- baselines ---------------------------------------------------------

    async def single_inserts(self) -> Run:
        stock = self.payloads.single_rows
        async with self._database(self.options.single_clients) as connections:
            sessions = [InsertSession(connection, stock) for connection in connections]
            return await self._closed(sessions)

    async def steady_inserts(
        self, rate: float, *, lag: bool
    ) -> tuple[Run, list[float]]:
        publisher = DirectPublisher(self.producer, self.payloads.event) if lag else None
        async with self._lag_probe(BASELINE_TOPIC, lag) as probe:
            stock = self.payloads.steady_rows
            async with self._database(self.options.steady_connections) as connections:
                sessions = [
                    InsertSession(connection, stock, publisher)
                    for connection in connections
                ]
                run = await self._open(sessions, rate)
            if probe is None or publisher is None:
                return run, []
            run.errors += await publisher.flush()
            await probe.settle()
            return run, probe.lags(run.wall_start, run.wall_end, type_=RECEIVED)

    async def batch_copies(self) -> Run:
        stock = self.payloads.batch_rows
        async with self._database(self.options.batch_clients) as connections:
            sessions = [CopySession(connection, stock) for connection in connections]
            return await self._closed(sessions)

    # -- plumbing ----------------------------------------------------------

    async def _closed(self, sessions: Sequence[Session]) -> Run:
        self.payloads.refill()
        return await closed_loop(
            sessions,
            warmup=self.options.warmup,
            duration=self.options.duration,
            cpu=self.cpu,
        )

    async def _open(self, sessions: Sequence[Session], rate: float) -> Run:
        self.payloads.refill()
        return await open_loop(
            sessions,
            rate=rate,
            warmup=self.options.warmup,
            duration=self.options.duration,
            cpu=self.cpu,
        )

    @contextlib.asynccontextmanager
    async def _lag_probe(
        self, topic: str, wanted: bool
    ) -> AsyncIterator[LagProbe | None]:
        if not wanted:
            yield None
            return
        probe = LagProbe(self.endpoints.bootstrap, topic)
        await probe.start()
        try:
            yield probe
        finally:
            await probe.stop()

    @contextlib.asynccontextmanager
    async def _http(
        self, count: int, stock: Stock[bytes], leads: int
    ) -> AsyncIterator[list[PostSession]]:
        # Connections open before the clock starts; the run measures requests.
        sessions = []
        try:
            for _ in range(count):
                connection = HttpConnection("127.0.0.1", self.service.port)
                await connection.open()
                sessions.append(PostSession(connection, stock, leads, self.tally))
            yield sessions
        finally:
            await close_all(sessions)
            self.check_alive()

    @contextlib.asynccontextmanager
    async def _database(self, count: int) -> AsyncIterator[list[asyncpg.Connection]]:
        """``count`` connections to the scratch schema, one per client."""
        settings = {"search_path": f"{BASELINE_SCHEMA},public"}
        connections: list[asyncpg.Connection] = []
        try:
            for _ in range(count):
                dsn = self.endpoints.database_url
                connections.append(await connect(dsn, server_settings=settings))
            yield connections
        finally:
            for connection in connections:
                await connection.close()

    @contextlib.asynccontextmanager
    async def watch_leads(self, name: str) -> AsyncIterator[None]:
        """Note how big intake.leads is after a run, and how often the run
        read all of it (sequential scans per request; the statistics reach
        PostgreSQL's counters within a second or so, hence roughly)."""
        scans, requests = await self.admin.fetchval(_SEQ_SCANS), self.tally.requests
        yield
        await asyncio.sleep(1.0)
        posted = self.tally.requests - requests
        if posted:
            scanned = await self.admin.fetchval(_SEQ_SCANS) - scans
            self.samples.add(f"{name}_scans", scanned / posted)
        self.samples.add(f"{name}_rows", await self.admin.fetchval(_LEADS))

    async def drain_outbox(self, timeout: float = 180.0) -> tuple[int, float]:
        """Wait until intake's relay has published every event.

        Returns the backlog found and the seconds it took to go, so each run
        starts with a relay that has nothing left to do from the one before.
        """
        started = time.monotonic()
        backlog = found = int(await self.admin.fetchval(_BACKLOG))
        while backlog:
            if time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"outbox still holds {backlog} events after {timeout}s"
                )
            await asyncio.sleep(0.1)
            backlog = int(await self.admin.fetchval(_BACKLOG))
        return found, time.monotonic() - started

    def check_alive(self) -> None:
        process = self.service.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"intake exited with {process.returncode}\n{tail(self.log_path)}"
            )


# -- phases -----------------------------------------------------------------


async def single_phase(bench: Bench) -> None:
    samples = bench.samples
    for _ in range(bench.options.repetitions):
        async with bench.watch_leads("single"):
            run = await bench.single_posts()
        samples.add_run("single posts", run)
        samples.add("single", run.operations_per_second)
        samples.add("single_p99", run.latency_ms(0.99))
        base = await bench.single_inserts()
        samples.add_run("single inserts (baseline)", base)
        samples.add("single_base", base.operations_per_second)
        samples.add("single_base_p99", base.latency_ms(0.99))


async def steady_phase(bench: Bench) -> None:
    """At the issue's rate, with the outbox lag measured alongside."""
    samples = bench.samples
    rate = bench.options.steady_rate
    for _ in range(bench.options.repetitions):
        async with bench.watch_leads("steady"):
            run, lags = await bench.steady_posts(rate, lag=True)
        samples.add_run("steady posts", run)
        _add_latencies(samples, "steady", run)
        _add_lags(samples, "lag", lags)
        base, _ = await bench.steady_inserts(rate, lag=False)
        samples.add_run("steady inserts (baseline)", base)
        _add_latencies(samples, "steady_base", base)
        # Publishing from the client costs it and the broker CPU, so the lag
        # baseline has a run of its own rather than slowing the one above.
        direct, direct_lags = await bench.steady_inserts(rate, lag=True)
        samples.add_run("steady inserts + direct publish (lag baseline)", direct)
        _add_lags(samples, "lag_base", direct_lags)


async def capacity_phase(bench: Bench) -> None:
    """At half of what intake managed closed loop: its latency when not overloaded."""
    samples = bench.samples
    rate = max(10.0, statistics.median(samples.values["single"]) / 2)
    for _ in range(bench.options.repetitions):
        samples.add("capacity_offered", rate)
        async with bench.watch_leads("capacity"):
            run, _ = await bench.steady_posts(rate, lag=False)
        samples.add_run("half-capacity posts", run)
        _add_latencies(samples, "capacity", run)
        base, _ = await bench.steady_inserts(rate, lag=False)
        samples.add_run("half-capacity inserts (baseline)", base)
        _add_latencies(samples, "capacity_base", base)


def _add_latencies(samples: Samples, name: str, run: Run) -> None:
    samples.add(f"{name}_p50", run.latency_ms(0.50))
    samples.add(f"{name}_p99", run.latency_ms(0.99))
    samples.add(f"{name}_rate", run.achieved_per_second)


def _add_lags(samples: Samples, name: str, lags: list[float]) -> None:
    samples.add(f"{name}_p50", percentile(lags, 0.50) * 1000)
    samples.add(f"{name}_p99", percentile(lags, 0.99) * 1000)
    samples.add(f"{name}_count", len(lags))


async def batch_phase(bench: Bench) -> None:
    samples = bench.samples
    for _ in range(bench.options.repetitions):
        async with bench.watch_leads("batch"):
            run, backlog, seconds = await bench.batch_posts()
        samples.add_run("batch posts", run)
        samples.add("batch", run.units_per_second)
        samples.add("batch_backlog", backlog)
        samples.add("batch_drain_seconds", seconds)
        base = await bench.batch_copies()
        samples.add_run("batch copies (baseline)", base)
        samples.add("batch_base", base.units_per_second)


# -- setup ------------------------------------------------------------------


async def create_baseline_schema(admin: asyncpg.Connection) -> None:
    """Tables shaped like intake's, with the same indexes, checks and keys."""
    await admin.execute(f"DROP SCHEMA IF EXISTS {BASELINE_SCHEMA} CASCADE")
    await admin.execute(f"CREATE SCHEMA {BASELINE_SCHEMA}")
    await admin.execute(
        f"CREATE TABLE {BASELINE_SCHEMA}.leads (LIKE intake.leads INCLUDING ALL)"
    )
    # LIKE copies neither foreign keys nor storage options; intake has both.
    await admin.execute(
        f"ALTER TABLE {BASELINE_SCHEMA}.leads"
        " ADD FOREIGN KEY (source) REFERENCES intake.sources (name)"
    )
    await admin.execute(
        f"CREATE TABLE {BASELINE_SCHEMA}.outbox (LIKE intake.outbox INCLUDING ALL)"
        " WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,"
        " autovacuum_vacuum_cost_delay = 0)"
    )


async def seed(admin: asyncpg.Connection, payloads: Payloads, count: int) -> None:
    """Give both lead tables the same rows and fresh statistics.

    On an empty table that autovacuum has not analysed yet, PostgreSQL plans
    intake's duplicate lookup as a sequential scan, and each connection keeps
    that plan until the table is analysed: every post then reads the whole
    table, and throughput falls as it grows. A deployed intake has an analysed
    table, so the bench measures that state (``--cold`` shows the other).
    """
    if not count:
        return
    now = dt.datetime.now(dt.UTC)
    for schema in ("intake", BASELINE_SCHEMA):
        rows = [payloads.lead_row(now) for _ in range(count)]
        await admin.copy_records_to_table(
            "leads", records=rows, columns=LEAD_COLUMNS, schema_name=schema
        )
        await admin.execute(f"ANALYZE {schema}.leads")


async def create_baseline_topic(bootstrap: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="redial-bench")
    await admin.start()
    try:
        if BASELINE_TOPIC not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(BASELINE_TOPIC, partitions, 1)])
    finally:
        await admin.close()


async def delete_baseline_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="redial-bench")
    # Some brokers (Tansu's memory engine) cannot delete; the topic is small.
    with contextlib.suppress(Exception):
        await admin.start()
        await admin.delete_topics([BASELINE_TOPIC])
    with contextlib.suppress(Exception):
        await admin.close()


async def measure(
    options: Options,
    endpoints: Endpoints,
    service: ServiceProcess,
    log_path: Path,
    api_key: str,
) -> tuple[Samples, dict[str, Any]]:
    """Every phase, in order; returns the samples and facts for the report."""
    settings = ServiceSettings.model_validate(
        {"kafka_bootstrap_servers": endpoints.bootstrap}
    )
    async with contextlib.AsyncExitStack() as cleanup:
        admin = await connect(endpoints.database_url)
        cleanup.push_async_callback(admin.close)
        await create_baseline_schema(admin)
        cleanup.push_async_callback(
            admin.execute, f"DROP SCHEMA IF EXISTS {BASELINE_SCHEMA} CASCADE"
        )
        await create_baseline_topic(endpoints.bootstrap, settings.topic_partitions)
        cleanup.push_async_callback(delete_baseline_topic, endpoints.bootstrap)
        producer = make_producer(settings, client_id="redial-bench-baseline")
        await producer.start()
        cleanup.push_async_callback(producer.stop)
        bench = Bench(
            options=options,
            endpoints=endpoints,
            service=service,
            log_path=log_path,
            admin=admin,
            producer=producer,
            payloads=Payloads(options, f"127.0.0.1:{service.port}", api_key),
            cpu=await _cpu_probe(admin, service),
        )
        await seed(admin, bench.payloads, options.seed)
        facts = await _facts(admin, settings)
        for name, phase in PHASES:
            print(f"… {name}", file=sys.stderr, flush=True)
            await phase(bench)
        facts["duplicates"] = bench.tally.duplicates
        facts["built_late"] = sum(s.built_late for s in bench.payloads.stocks())
        return bench.samples, facts


PHASES: tuple[tuple[str, Callable[[Bench], Awaitable[None]]], ...] = (
    ("single posts, closed loop", single_phase),
    ("single posts at the issue's steady rate", steady_phase),
    ("single posts at half the measured capacity", capacity_phase),
    ("batches", batch_phase),
)


async def _cpu_probe(admin: asyncpg.Connection, service: ServiceProcess) -> CpuProbe:
    """Our processes only: the machine may run other servers of each kind."""
    intake = service.process.pid if service.process is not None else -1
    # A backend's parent is the postmaster (when the server runs here at all).
    postmaster = parent_of(await admin.fetchval("SELECT pg_backend_pid()")) or -1
    return CpuProbe(
        {
            "intake": lambda: family(intake),
            "postgres": lambda: family(postmaster, named="postgres"),
            "broker": lambda: family(os.getpid(), named="tansu"),
            "bench": lambda: [os.getpid()],
        }
    )


async def _facts(
    admin: asyncpg.Connection, settings: ServiceSettings
) -> dict[str, Any]:
    return {
        "postgres": await admin.fetchval("SHOW server_version"),
        "synchronous_commit": await admin.fetchval("SHOW synchronous_commit"),
        "pool_max": settings.database_pool_max,
        "partitions": settings.topic_partitions,
    }


# -- report -----------------------------------------------------------------


def figures(samples: Samples, options: Options) -> list[Figure]:
    """The table's rows, in the issue's order, then what explains them."""
    v = samples.values
    rate = format_value(options.steady_rate, "/s")
    half = format_value(statistics.median(v["capacity_offered"] or [0.0]), "/s")
    batch = Figure(
        f"batch leads/s ({options.batch_size} a post, {options.batch_clients} clients)",
        "/s",
        v["batch"],
        v["batch_base"],
        "asyncpg COPY + outbox INSERT",
        Target(BATCH_TARGET, at_least=True),
    )
    single_base = "asyncpg txn: lead + outbox INSERT"
    same = "same asyncpg txn, same schedule"
    direct = "publish right after commit"
    return [
        Figure(
            f"single posts/s (closed loop, {options.single_clients} clients)",
            "/s",
            v["single"],
            v["single_base"],
            single_base,
            Target(SINGLE_TARGET, at_least=True),
        ),
        Figure(
            f"single post p99 at {rate} offered (open loop)",
            "ms",
            v["steady_p99"],
            v["steady_base_p99"],
            same,
            Target(STEADY_P99_TARGET_MS, at_least=False),
        ),
        batch,
        Figure(
            "batch throughput ÷ raw asyncpg",
            "",
            [] if batch.ratio is None else [batch.ratio],
            target=Target(BATCH_RATIO_TARGET, at_least=True),
        ),
        Figure(
            "outbox → broker lag p50", "ms", v["lag_p50"], v["lag_base_p50"], direct
        ),
        Figure(
            "outbox → broker lag p99",
            "ms",
            v["lag_p99"],
            v["lag_base_p99"],
            direct,
            Target(LAG_P99_TARGET_MS, at_least=False),
        ),
        Figure(
            f"single post p50 at {rate} offered",
            "ms",
            v["steady_p50"],
            v["steady_base_p50"],
            same,
        ),
        Figure(
            f"single post p99 at {half} offered (half of closed-loop posts/s)",
            "ms",
            v["capacity_p99"],
            v["capacity_base_p99"],
            same,
        ),
        Figure(
            f"single post p99, closed loop ({options.single_clients} clients)",
            "ms",
            v["single_p99"],
            v["single_base_p99"],
            single_base,
        ),
        Figure("outbox backlog a batch run left", " events", v["batch_backlog"]),
    ]


def report(
    samples: Samples, options: Options, facts: dict[str, Any], seconds: float
) -> tuple[str, dict[str, Any]]:
    rows = figures(samples, options)
    mode = "--quick" if options.quick else "full"
    lines = [
        "# Intake benchmark",
        "",
        f"{machine_line()}; {mode} run took {seconds:.0f} s.",
        "",
        markdown_table(rows),
        "",
        *_notes(samples, rows, options, facts),
    ]
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "options": {**options.__dict__, "json": str(options.json)},
        "facts": facts,
        "figures": [row.as_json() for row in rows],
        "cpu": {name: median_shares(shares) for name, shares in samples.cpu.items()},
        "errors": dict(samples.errors),
        "first_errors": samples.first_errors,
    }
    return "\n".join(lines), payload


def _notes(
    samples: Samples, rows: Sequence[Figure], options: Options, facts: dict[str, Any]
) -> list[str]:
    v = samples.values
    notes = [
        f"Medians of {options.repetitions} repetition(s) of {options.duration:g} s"
        f" after {options.warmup:g} s of warm-up; ratio = value ÷ baseline."
        f" PostgreSQL {facts['postgres']}, synchronous_commit="
        f"{facts['synchronous_commit']}; intake is one uvicorn process (database"
        f" pool ≤ {facts['pool_max']}); lead-events has {facts['partitions']}"
        " partitions. Every lead has its own US phone and e-mail, names, ZIP,"
        " campaign, consent and two attributes, so that no request is a duplicate."
        + _seeding(options),
        "",
        f"Open loop: over {options.steady_connections} connections, latency from"
        " each request's due time. Answered per second, over the window plus the"
        " time the last answer took to come: at the issue's rate"
        f" {spread(v['steady_rate'])} (baseline {spread(v['steady_base_rate'])}),"
        f" at half capacity {spread(v['capacity_rate'])}. Lag: Kafka record"
        " timestamp minus the CloudEvent `time` (taken when intake starts to"
        f" accept), over {spread(v['lag_count'])} lead.received events a run;"
        " its baseline is a run of its own: the same asyncpg transaction followed"
        " by an aiokafka send with intake's producer settings, to a scratch"
        " topic. Draining the outbox after each batch run took"
        f" {spread(v['batch_drain_seconds'])} s.",
        "",
        "intake.leads after each run, rows (sequential scans of it per request):"
        + "; ".join(
            f" {label} {spread(v[f'{name}_rows'])} ({spread(v[f'{name}_scans'])})"
            for name, label in _RUNS
        )
        + ".",
        "",
        "CPU during the timed windows, medians:",
        "",
    ]
    notes += [
        f"- {name}: {describe_cpu(median_shares(shares))}"
        for name, shares in samples.cpu.items()
    ]
    notes += ["", "Each repetition (value; baseline):", ""]
    notes += repetition_lines(rows)
    notes += ["", *_problems(samples, facts)]
    return notes


def _seeding(options: Options) -> str:
    if not options.seed:
        return " Tables started empty and unanalysed (--cold)."
    return (
        f" Before measuring, {amount(options.seed)} such leads were copied into"
        " each lead table, which was then analysed (see seed() for why)."
    )


_RUNS = (
    ("single", "single posts"),
    ("steady", "issue's rate"),
    ("capacity", "half capacity"),
    ("batch", "batches"),
)


def _problems(samples: Samples, facts: dict[str, Any]) -> list[str]:
    lines = samples.error_lines()
    if facts["duplicates"]:
        lines.append(f"{facts['duplicates']} leads were answered as duplicates.")
    if facts["built_late"]:
        lines.append(f"{facts['built_late']} payloads had to be built during runs.")
    return lines or ["No errors, no duplicates."]


# -- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    # SIGTERM takes the same way out as Ctrl-C, so everything started stops.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    began = time.monotonic()
    try:
        samples, facts = run_stack(options)
    except KeyboardInterrupt:
        print("interrupted; everything started has been stopped", file=sys.stderr)
        return 130
    markdown, payload = report(samples, options, facts, time.monotonic() - began)
    print(markdown)
    path = write_results("intake", markdown, payload, options.json)
    print(f"\nwritten to {path}", file=sys.stderr)
    return 0


def run_stack(options: Options) -> tuple[Samples, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="redial-bench-") as folder:
        workdir = Path(folder)
        with running_stack(workdir) as endpoints:
            api_key = provision_source(endpoints, SOURCE)
            log_path = workdir / "intake.log"
            env = endpoints.service_env()
            with (
                running_service("intake", env, log_path) as service,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                return runner.run(
                    measure(options, endpoints, service, log_path, api_key)
                )


if __name__ == "__main__":
    sys.exit(main())
