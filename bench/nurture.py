"""Nurture's scheduler: a burst of due leads and steady lateness, beside raw produce.

    .venv/bin/python -m bench.nurture [--quick] [--leads 1000000] [--repeat 3]
        [--rates 1000,5000] [--seconds 60] [--ingest 100000]
        [--env NAME=VALUE ...] [--json PATH]

Starts embedded PostgreSQL and Tansu (unless ``DATABASE_URL`` /
``KAFKA_BOOTSTRAP_SERVERS`` name servers to use: the bench empties nurture's
``leads`` and ``outbox`` tables), runs nurture as its own uvicorn process on
the system clock, the way production runs it, with the environment variables
given by ``--env`` (the tuning knobs: ``NURTURE_SCHEDULER_BATCH``,
``REDIAL_OUTBOX_BATCH_SIZE``, ``DATABASE_POOL_MAX`` …), and PUTs one campaign
for the bench's source: an e-mail on day 0, a text on day 2 and an e-mail on
day 7, enrolment 30 days after arrival.

Leads reach nurture's table as its consumer writes them, but not through
Kafka: the bench calls the service's own ``repository.upsert_received`` and
``repository.replan_waiting``, 5 000 leads a transaction on two connections
(the consumer would also look for re-inquiries, which these leads, each with
its own phone and e-mail, never are), then runs ``VACUUM ANALYZE`` on the
table, as autovacuum would have in the 30 days the leads waited. Every lead
is in a US zone, consents to e-mail and texts, and arrived at the moment that
makes it due (arrival + 30 calendar days in its zone) when a phase wants it.

Then:

* warm-up: a few thousand leads that are due already, so that the service
  has planned its statements and connected its producer;
* the burst, three times (once with ``--quick``): the service is stopped, the
  tables are emptied and ``--leads`` leads loaded that all fall due at one
  moment, T0, set a little after the load should end (its length estimated
  from the loads before); the service is started again before T0 and from T0
  the bench reads ``nurture-jobs`` until one job per lead has arrived.
  jobs/s = leads ÷ (timestamp of the record that completed the count − T0).
  The records are checked: one job per lead, each for step 0, and no job
  id twice. Should a load overrun T0, T0 becomes the moment the service was
  started, and the report says so.
  Baseline, right after: the same records (keys, values, headers) sent by
  the bench through aiokafka with ``shared.kafka.make_producer``'s settings
  to a scratch topic with as many partitions, as fast as the producer takes
  them (futures awaited every 10 000); and, to show what the relay's rhythm
  costs, a part of them in rounds of the outbox batch size, each round
  acknowledged before the next is sent, as the relay does;
* lateness at a steady rate, once per rate of ``--rates``: with the service
  running, the tables are emptied and leads loaded that fall due one after
  another at that rate for ``--seconds``. Lateness is each job's record
  timestamp minus its ``due_at``, split by the outbox's timestamps into the
  scheduler's part (due → row written) and the relay's (row → published);
* ingestion (``--ingest``, 0 skips it): that many ``lead.received`` events
  published to ``lead-events`` at once, and the rate at which the running
  service's consumer applies them (from ``processed_events``), beside the
  bench's own loads through the same repository calls.

The medians go to stdout and ``bench/results/nurture.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import math
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench._common import (
    CpuProbe,
    Endpoints,
    Figure,
    HttpConnection,
    RequestFailed,
    RestartableService,
    Samples,
    Target,
    UniqueLeads,
    add_env_option,
    amount,
    create_topic,
    delete_topic,
    describe_cpu,
    env_option,
    family,
    http_request,
    machine_line,
    markdown_table,
    median_shares,
    parent_of,
    percentile,
    repetition_lines,
    run_bench,
    say,
    spread,
    tail,
    topic_partitions,
)
from services.nurture import repository
from services.nurture.settings import NurtureSettings
from shared.db import connect
from shared.events import (
    CONTENT_TYPE,
    Consent,
    LeadReceived,
    NurtureJob,
    decode,
    new_event,
)
from shared.kafka import make_producer
from shared.settings import LEAD_EVENTS_TOPIC, NURTURE_JOBS_TOPIC, ServiceSettings

SERVICE = "nurture"
SCHEMA = "nurture"
SOURCE = "bench-nurture"
CAMPAIGN = "bench-winback"
AGE_DAYS = 30
CAMPAIGN_BODY = {
    "steps": [
        {"day": 0, "channel": "email", "template_id": "winback-0"},
        {"day": 2, "channel": "sms", "template_id": "winback-2"},
        {"day": 7, "channel": "email", "template_id": "winback-7"},
    ],
    "sources": [SOURCE],
    "pools": [],
    "enrolment_age_days": AGE_DAYS,
}
CONSENT = Consent(call=True, sms=True, email=True)
#: Where the baseline publishes; never a topic a service reads.
BASELINE_TOPIC = "redial-bench-nurture-baseline"
#: What the relay sends with every record.
HEADERS = [("content-type", CONTENT_TYPE.encode())]

#: Leads a loading transaction writes, and the connections loading at once.
LOAD_BATCH = 5_000
#: The first batch into an empty table, written alone and then analysed.
FIRST_BATCH = 500
LOAD_CONNECTIONS = 2
#: The pipelined baseline awaits its sends' futures every this many records.
RAW_WINDOW = 10_000
#: How often the count of jobs read is looked at while they arrive.
POLL_SECONDS = 0.25
#: A phase fails when no job arrived for this long.
STALL_SECONDS = 90.0
#: How long after the last expected job the phase's records are taken.
SETTLE_SECONDS = 1.0
#: A load's length is planned from the slowest per-lead time of the loads
#: before it at least half its size, times the first factor; when there was
#: none (the warm-up is small, and a lead costs more as the table grows),
#: from the largest load, times the second. Then the margin is added.
PLAN_FACTOR = 1.25
PLAN_FACTOR_UNSEEN = 1.8
PLAN_MARGIN_SECONDS = 6.0

#: The issue's targets (2 cores, everything on one machine).
RATE_TARGET = 5_000.0
RATIO_TARGET = 0.2
LATENESS_TARGET_MS = 60_000.0

#: Log messages of the service that tell of trouble, counted for the report.
_COMPLAINTS = (
    "scheduler.failed",
    "scheduler.lead_parked",
    "outbox.publish_failed",
    "outbox.parked",
    "consumer.retry",
    "consumer.failed",
    "consumer.dead_lettered",
    "Traceback",
)


@dataclass(frozen=True)
class Options:
    leads: int
    repetitions: int
    warmup: int
    rates: tuple[float, ...]
    window: float
    ingest: int
    #: The part of the burst's records the relay-shaped baseline sends.
    rounds_share: float
    env: dict[str, str]
    quick: bool
    json: Path | None


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="50 000 leads, 1 repetition, 10 s steady windows, 10 000 ingested",
    )
    parser.add_argument("--leads", type=int, help="leads of the burst")
    parser.add_argument("--repeat", type=int, help="bursts (default 3; 1 with --quick)")
    parser.add_argument(
        "--rates",
        default="1000,5000",
        help="steady rates, steps/s falling due, comma-separated",
    )
    parser.add_argument("--seconds", type=float, help="each steady window")
    parser.add_argument(
        "--ingest", type=int, help="lead.received events for the consumer (0: skip)"
    )
    add_env_option(parser, what="the service process")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args(argv)
    quick = bool(arguments.quick)
    env = env_option(parser, arguments.env)
    try:
        rates = tuple(float(rate) for rate in arguments.rates.split(",") if rate)
    except ValueError:
        parser.error("--rates wants numbers, such as 1000,5000")
    leads = arguments.leads or (50_000 if quick else 1_000_000)
    if leads < 1000 or any(rate <= 0 for rate in rates):
        parser.error("--leads must be at least 1000, every rate positive")
    ingest = arguments.ingest
    return Options(
        leads=leads,
        repetitions=arguments.repeat or (1 if quick else 3),
        warmup=5_000 if quick else 20_000,
        rates=rates,
        window=arguments.seconds or (10.0 if quick else 60.0),
        ingest=(10_000 if quick else 100_000) if ingest is None else ingest,
        rounds_share=1.0 if quick else 0.2,
        env=env,
        quick=quick,
        json=arguments.json,
    )


def service_settings(env: Mapping[str, str]) -> NurtureSettings:
    """The settings the service process reads, with ``env`` over ours."""
    with mock.patch.dict(os.environ, env):
        return NurtureSettings()


# -- the leads ----------------------------------------------------------------


def arrival_for(due: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The arrival that makes a lead due at ``due``: replan_waiting adds the
    enrolment age in calendar days of the lead's zone, so go back as many."""
    local = due.astimezone(zone).replace(tzinfo=None) - dt.timedelta(days=AGE_DAYS)
    return local.replace(tzinfo=zone).astimezone(dt.UTC)


@dataclass
class Loaded:
    """What one load wrote."""

    keys: set[bytes]
    seconds: float
    vacuum_seconds: float

    @property
    def per_second(self) -> float:
        return len(self.keys) / self.seconds if self.seconds else math.nan


class Loader:
    """Writes leads into nurture's table with the service's repository calls,
    the two the consumer makes for a batch of ``lead.received``."""

    def __init__(
        self,
        connections: Sequence[asyncpg.Connection],
        admin: asyncpg.Connection,
        rng: random.Random,
        default_zone: str,
    ) -> None:
        self._connections = connections
        self._admin = admin
        self._rng = rng
        self._contacts = UniqueLeads(rng)
        self._default_zone = default_zone
        #: (leads, load + vacuum seconds per lead) of every load so far.
        self._timings: list[tuple[int, float]] = []

    def planned_seconds(self, count: int) -> float:
        """How long loading ``count`` leads should take, with a margin."""
        similar = [each for size, each in self._timings if size * 2 >= count]
        if similar:
            per_lead = max(similar) * PLAN_FACTOR
        else:
            largest = max(self._timings, default=(0, 1e-4))
            per_lead = largest[1] * PLAN_FACTOR_UNSEEN
        return count * per_lead + PLAN_MARGIN_SECONDS

    def snapshot(self, due: dt.datetime) -> LeadReceived:
        """A new lead that falls due at ``due``."""
        contact = self._contacts.contact()
        return LeadReceived.model_construct(
            lead_id=uuid.UUID(int=self._rng.getrandbits(128), version=4),
            source=SOURCE,
            first_name=contact.first_name,
            last_name=contact.last_name,
            phone=contact.phone,
            email=contact.email,
            postal_code=contact.postal_code,
            country="US",
            region=contact.region,
            timezone=contact.timezone,
            timezones=[contact.timezone],
            consent=CONSENT,
            received_at=arrival_for(due, ZoneInfo(contact.timezone)),
        )

    def _batches(
        self,
        count: int,
        due_of: Callable[[int], dt.datetime],
        keys: set[bytes],
        first_size: int,
    ) -> Iterator[list[LeadReceived]]:
        begin, size = 0, first_size
        while begin < count:
            end = min(count, begin + size)
            batch = [self.snapshot(due_of(index)) for index in range(begin, end)]
            keys.update(str(lead.lead_id).encode() for lead in batch)
            yield batch
            begin, size = end, LOAD_BATCH

    async def _write(
        self, connection: asyncpg.Connection, batch: Sequence[LeadReceived]
    ) -> None:
        """One batch, as the consumer writes a batch of lead.received."""
        now = dt.datetime.now(dt.UTC)
        async with connection.transaction():
            await repository.upsert_received(connection, batch, now)
            await repository.replan_waiting(
                connection, [lead.lead_id for lead in batch], now, self._default_zone
            )

    async def load(
        self,
        count: int,
        due_of: Callable[[int], dt.datetime],
        keys: set[bytes] | None = None,
    ) -> Loaded:
        """Write ``count`` leads, lead *k* due at ``due_of(k)``, then vacuum;
        each lead's key goes into ``keys`` before its transaction commits."""
        keys = set() if keys is None else keys
        empty = not await self._admin.fetchval("SELECT EXISTS (SELECT 1 FROM leads)")
        # One generator shared by the workers: each takes the next batch,
        # built while the other worker's statements run in PostgreSQL.
        batches = self._batches(
            count, due_of, keys, FIRST_BATCH if empty else LOAD_BATCH
        )
        began = time.monotonic()
        if empty:
            # Planned against an empty table, replan_waiting's join is a
            # nested loop over the batch twice (seconds for 5 000 leads); a
            # deployed table has statistics, so write a few, then analyse.
            for batch in itertools.islice(batches, 1):
                await self._write(self._connections[0], batch)
            await self._admin.execute("ANALYZE leads")

        async def work(connection: asyncpg.Connection) -> None:
            for batch in batches:
                await self._write(connection, batch)

        await asyncio.gather(*(work(connection) for connection in self._connections))
        seconds = time.monotonic() - began
        await self._admin.execute("VACUUM (ANALYZE) leads")
        vacuum = time.monotonic() - began - seconds
        self._timings.append((count, (seconds + vacuum) / count))
        return Loaded(keys=keys, seconds=seconds, vacuum_seconds=vacuum)


# -- the topic ----------------------------------------------------------------


#: (key, value, broker timestamp in ms) of one record read.
Record = tuple[bytes, bytes, int]


class JobReader:
    """Reads nurture-jobs for the whole run and keeps the records of the leads
    the current phase expects.

    It counts by reading, not by end offsets: Tansu answers ListOffsets
    (latest) with the base offset of each partition's last record batch, so
    the end offsets fall short by up to a batch a partition (the high-water
    mark of a fetch is right). The reading costs the bench's process a few
    microseconds a record, which its CPU share shows.
    """

    def __init__(self, bootstrap: str, partitions: Sequence[TopicPartition]) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False
        )
        self._partitions = list(partitions)
        self._expected: set[bytes] = set()
        self._task: asyncio.Task[None] | None = None
        self.records: list[Record] = []
        #: Leads of the phase that have a job so far.
        self.seen: set[bytes] = set()
        #: Records of leads the phase did not expect.
        self.others = 0

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        await self._consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def expect(self, keys: set[bytes]) -> None:
        """Keep from now on the records whose key is in ``keys`` (a set the
        caller may still be filling)."""
        self._expected = keys
        self.records, self.seen, self.others = [], set(), 0

    def take(self) -> list[Record]:
        """The phase's records; keeps nothing more until the next expect()."""
        records = self.records
        self.expect(set())
        return records

    def check(self) -> None:
        """Raise what stopped the reading, if it stopped."""
        if self._task is not None and self._task.done():
            self._task.result()
            raise RuntimeError("the nurture-jobs reader stopped")

    async def _read(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=20_000)
            for batch in batches.values():
                for record in batch:
                    key = record.key
                    if key in self._expected:
                        self.records.append((key, record.value, record.timestamp))
                        self.seen.add(key)
                    else:
                        self.others += 1


@dataclass
class Jobs:
    """What a phase's records on nurture-jobs say."""

    records: int
    job_ids: int
    leads: int
    missing: int
    #: Records, during the phase, of leads it did not load.
    strangers: int
    steps: dict[str, int]
    payload_bytes: int
    #: Per lead, its first job's broker timestamp (s) and lateness (that
    #: timestamp − the job's due_at, s).
    timestamps: list[float]
    lateness: list[float]

    @property
    def duplicates(self) -> int:
        return self.records - self.job_ids


def read_jobs(records: Sequence[Record], expected: set[bytes], others: int) -> Jobs:
    """Decode every job and check it against the leads that were due."""
    ids: set[str] = set()
    first: dict[bytes, tuple[float, float]] = {}
    steps: Counter[str] = Counter()
    size = 0
    for key, value, timestamp in records:
        document = orjson.loads(value)
        data = document["data"]
        ids.add(document["id"])
        steps[f"{data['step']}:{data['channel']}"] += 1
        size += len(value)
        moment = timestamp / 1000
        if key not in first or moment < first[key][0]:
            due = dt.datetime.fromisoformat(data["due_at"]).timestamp()
            first[key] = (moment, moment - due)
    return Jobs(
        records=len(records),
        job_ids=len(ids),
        leads=len(first),
        missing=len(expected - first.keys()),
        strangers=others,
        steps=dict(steps),
        payload_bytes=size,
        timestamps=[moment for moment, _ in first.values()],
        lateness=[late for _, late in first.values()],
    )


def check_job_shape(records: Sequence[Record]) -> None:
    """The records decode as the events senders read."""
    envelope = decode(records[0][1])
    if not isinstance(envelope.data, NurtureJob):
        raise AssertionError("a nurture-jobs record is not a nurture.job event")


async def produce(
    bootstrap: str,
    records: Sequence[Record],
    *,
    window: int,
    cpu: CpuProbe,
) -> tuple[float, dict[str, float]]:
    """Send ``records`` to the scratch topic as the relay's producer would,
    awaiting the futures every ``window`` sends; returns sends/s and CPU."""
    settings = ServiceSettings.model_validate({"kafka_bootstrap_servers": bootstrap})
    producer: AIOKafkaProducer = make_producer(settings, client_id="redial-bench-raw")
    await producer.start()
    try:
        cpu.start()
        began = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        for key, value, _ in records:
            pending.append(
                await producer.send(
                    BASELINE_TOPIC, value=value, key=key, headers=HEADERS
                )
            )
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        seconds = time.monotonic() - began
        shares = cpu.stop()
    finally:
        await producer.stop()
    return len(records) / seconds, shares


# -- the bench --------------------------------------------------------------


@dataclass
class Bench:
    options: Options
    endpoints: Endpoints
    settings: NurtureSettings
    admin: asyncpg.Connection
    loader: Loader
    service: RestartableService
    reader: JobReader
    postmaster: int
    samples: Samples = field(default_factory=Samples)
    facts: dict[str, Any] = field(default_factory=dict)

    def cpu_probe(self) -> CpuProbe:
        return CpuProbe(
            {
                "nurture": lambda: family(self.service.pid),
                "postgres": lambda: family(self.postmaster, named="postgres"),
                "broker": lambda: family(os.getpid(), named="tansu"),
                "bench": lambda: [os.getpid()],
            }
        )

    def add_cpu(self, name: str, shares: dict[str, float]) -> None:
        self.samples.cpu[name].append(shares)

    async def put_campaign(self) -> None:
        port = self.service.port
        connection = HttpConnection("127.0.0.1", port)
        request = http_request(
            "PUT",
            f"/v1/campaigns/{CAMPAIGN}",
            host=f"127.0.0.1:{port}",
            headers={"Content-Type": "application/json"},
            body=orjson.dumps(CAMPAIGN_BODY),
        )
        try:
            status, body = await connection.exchange(request)
        finally:
            await connection.close()
        if status not in (200, 201):
            raise RequestFailed(status, body)

    async def wait_for_jobs(self, expected: int) -> list[tuple[float, int]]:
        """Wait until ``expected`` leads of the phase have a job on the topic;
        returns (wall time, leads with a job so far) at each change."""
        progress: list[tuple[float, int]] = []
        seen, last_change = 0, time.monotonic()
        while seen < expected:
            self.service.check_alive()
            self.reader.check()
            await asyncio.sleep(POLL_SECONDS)
            count = len(self.reader.seen)
            if count > seen:
                seen, last_change = count, time.monotonic()
                progress.append((time.time(), count))
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise RuntimeError(
                    f"{seen} of {expected} jobs arrived, then none for"
                    f" {STALL_SECONDS:g} s\n{tail(self.service.log_path, 30)}"
                )
        return progress

    async def settled(self) -> tuple[list[Record], int]:
        """The phase's records, and how many records of other leads came,
        a moment after the last expected job: a relay that re-sends a batch
        after a failure adds copies, which the checks count."""
        await asyncio.sleep(SETTLE_SECONDS)
        others = self.reader.others
        return self.reader.take(), others

    # -- phases -----------------------------------------------------------------

    async def warm_up(self) -> None:
        count = self.options.warmup
        say(f"… warm-up: {amount(count)} leads due already")
        keys: set[bytes] = set()
        self.reader.expect(keys)
        now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        loaded = await self.loader.load(count, lambda _: now, keys)
        await self.wait_for_jobs(count)
        await self.settled()
        self.facts["warm-up load leads/s"] = loaded.per_second

    async def burst(self, repetition: int) -> None:
        options = self.options
        count = options.leads
        await asyncio.to_thread(self.service.stop)
        await self.admin.execute("TRUNCATE leads, outbox")
        planned = self.loader.planned_seconds(count) + 3.0  # + the service's start
        t0 = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=planned)
        say(
            f"… burst {repetition + 1}: loading {amount(count)} leads due at"
            f" T0 = {t0:%H:%M:%S} UTC"
        )
        keys: set[bytes] = set()
        self.reader.expect(keys)
        loaded = await self.loader.load(count, lambda _: t0, keys)
        due = await self.admin.fetchval(
            "SELECT count(*) FROM leads WHERE next_at = $1", t0
        )
        if due != count:
            raise RuntimeError(f"{due} of {count} leads are due at T0")
        launched = time.time()
        await asyncio.to_thread(self.service.start)
        start = t0.timestamp()
        late = launched > start
        if late:
            start = launched
        else:
            await asyncio.sleep(start - time.time())
        say(f"  T0{' (late: the service start)' if late else ''}; jobs arriving")
        cpu = self.cpu_probe()
        cpu.start()
        window = time.monotonic()
        progress = await self.wait_for_jobs(count)
        shares = cpu.stop()
        shares["window"] = time.monotonic() - window
        records, others = await self.settled()
        check_job_shape(records)
        jobs = read_jobs(records, loaded.keys, others)
        self._add_burst(start, late, loaded, jobs, progress, shares)
        await self._burst_outbox(start)
        await self._baselines(records)

    def _add_burst(
        self,
        start: float,
        late: bool,
        loaded: Loaded,
        jobs: Jobs,
        progress: list[tuple[float, int]],
        shares: dict[str, float],
    ) -> None:
        count = self.options.leads
        ordered = sorted(jobs.timestamps)
        last = ordered[count - 1] - start if len(ordered) >= count else math.nan
        half = ordered[count // 2 - 1] - start
        rate = count / last
        samples = self.samples
        samples.add("burst rate", rate)
        samples.add("burst half seconds", half)
        samples.add("burst all seconds", last)
        samples.add("burst late start", float(late))
        samples.add("load rate", loaded.per_second)
        samples.add("load seconds", loaded.seconds)
        samples.add("vacuum seconds", loaded.vacuum_seconds)
        for name in ("records", "job_ids", "leads", "missing", "strangers"):
            samples.add(f"burst {name}", float(getattr(jobs, name)))
        samples.add("burst duplicates", float(jobs.duplicates))
        samples.add("payload bytes", jobs.payload_bytes / max(1, jobs.records))
        window = shares.pop("window")
        for group in ("nurture", "postgres"):
            share = shares.get(group, math.nan)
            samples.add(f"burst {group} cpu ms per job", share * 10 * window / count)
        self.add_cpu("burst", shares)
        self.facts.setdefault("burst steps", []).append(jobs.steps)
        self.facts.setdefault("burst progress", []).append(
            [(moment - start, seen) for moment, seen in progress]
        )
        say(
            f"  {amount(rate)} jobs/s; 50 % after {amount(half)} s, all after"
            f" {amount(last)} s; {jobs.duplicates} duplicates, {jobs.missing} missing"
        )

    async def _burst_outbox(self, start: float) -> None:
        """When the scheduler wrote the jobs and the relay published them."""
        row = await self.admin.fetchrow(
            """
            SELECT count(*) AS rows,
                extract(epoch FROM max(created_at)) AS last_written,
                extract(epoch FROM max(published_at)) AS last_published,
                count(DISTINCT created_at) AS transactions,
                count(DISTINCT published_at) AS passes,
                extract(epoch FROM percentile_disc(0.5)
                    WITHIN GROUP (ORDER BY published_at - created_at)) AS relay_p50,
                extract(epoch FROM max(published_at - created_at)) AS relay_max
            FROM outbox
            """
        )
        assert row is not None
        rows = int(row["rows"])
        written = float(row["last_written"]) - start
        published = float(row["last_published"]) - start
        samples = self.samples
        samples.add("scheduler rate", rows / written if written > 0 else math.nan)
        samples.add("scheduler seconds", written)
        samples.add("relay seconds", published)
        samples.add("transactions", float(row["transactions"]))
        samples.add("jobs per transaction", rows / max(1, row["transactions"]))
        samples.add("relay passes", float(row["passes"]))
        samples.add("jobs per relay pass", rows / max(1, row["passes"]))
        samples.add("relay lag p50", float(row["relay_p50"]))
        samples.add("relay lag max", float(row["relay_max"]))

    async def _baselines(self, records: Sequence[Record]) -> None:
        say(f"  baseline: {amount(len(records))} records, raw aiokafka produce")
        rate, shares = await produce(
            self.endpoints.bootstrap, records, window=RAW_WINDOW, cpu=self.cpu_probe()
        )
        self.samples.add("raw rate", rate)
        self.add_cpu("raw produce", shares)
        part = records[: max(1, int(len(records) * self.options.rounds_share))]
        batch = self.settings.outbox_batch_size
        rounds, shares = await produce(
            self.endpoints.bootstrap, part, window=batch, cpu=self.cpu_probe()
        )
        self.samples.add("rounds rate", rounds)
        self.add_cpu(f"raw produce in rounds of {batch}", shares)
        say(f"  {amount(rate)} sends/s pipelined, {amount(rounds)}/s in rounds")

    async def steady(self, rate: float) -> None:
        options = self.options
        count = max(1, round(rate * options.window))
        # An emptied table, not the burst's: right after a burst enrolled
        # every lead, the statistics say none is waiting, and replan_waiting
        # then joins each new lead to every waiting one (tens of seconds a
        # batch; see the report), which would make the load overrun.
        await self.admin.execute("TRUNCATE leads, outbox")
        planned = self.loader.planned_seconds(count)
        first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=planned)
        say(
            f"… steady: {amount(count)} leads falling due at {amount(rate)}/s from"
            f" {first:%H:%M:%S} UTC"
        )
        keys: set[bytes] = set()
        self.reader.expect(keys)
        loaded = await self.loader.load(
            count, lambda index: first + dt.timedelta(seconds=index / rate), keys
        )
        start = first.timestamp()
        label = f"{rate:g}"
        self.samples.add(f"steady {label} load margin", start - time.time())
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu = asyncio.create_task(self._cpu_window(options.window))
        await self.wait_for_jobs(count)
        self.add_cpu(f"steady {label}/s", await cpu)
        records, others = await self.settled()
        jobs = read_jobs(records, loaded.keys, others)
        in_window = sum(
            1 for moment in jobs.timestamps if start <= moment < start + options.window
        )
        samples = self.samples
        for name, quantile in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            samples.add(
                f"steady {label} lateness {name}",
                percentile(jobs.lateness, quantile) * 1000,
            )
        samples.add(f"steady {label} achieved", in_window / options.window)
        samples.add(f"steady {label} duplicates", float(jobs.duplicates))
        samples.add(f"steady {label} missing", float(jobs.missing))
        await self._steady_outbox(label, start - 5.0)
        say(
            f"  lateness p50 {amount(percentile(jobs.lateness, 0.5) * 1000)} ms,"
            f" p99 {amount(percentile(jobs.lateness, 0.99) * 1000)} ms, max"
            f" {amount(max(jobs.lateness) * 1000)} ms;"
            f" {amount(in_window / options.window)} jobs/s in the window"
        )

    async def _cpu_window(self, seconds: float) -> dict[str, float]:
        cpu = self.cpu_probe()
        cpu.start()
        await asyncio.sleep(seconds)
        return cpu.stop()

    async def _steady_outbox(self, label: str, since: float) -> None:
        """Lateness split: due → outbox row (scheduler), row → published."""
        row = await self.admin.fetchrow(
            """
            WITH jobs AS (
                SELECT created_at, published_at,
                    (convert_from(payload, 'UTF8')::jsonb #>> '{data,due_at}')
                        ::timestamptz AS due_at
                FROM outbox WHERE created_at >= to_timestamp($1)
            )
            SELECT
                percentile_disc(ARRAY[0.5, 0.99, 1]) WITHIN GROUP (ORDER BY
                    extract(epoch FROM created_at - due_at)) AS scheduler,
                percentile_disc(ARRAY[0.5, 0.99, 1]) WITHIN GROUP (ORDER BY
                    extract(epoch FROM published_at - created_at)) AS relay
            FROM jobs
            """,
            since,
        )
        assert row is not None
        for part in ("scheduler", "relay"):
            for name, value in zip(
                ("p50", "p99", "max"), row[part] or [], strict=False
            ):
                self.samples.add(f"steady {label} {part} {name}", float(value) * 1000)

    async def ingest(self) -> None:
        count = self.options.ingest
        say(f"… ingestion: {amount(count)} lead.received through lead-events")
        # Published to the running service, whose consumer has held its
        # partitions since the last burst: a restart here would make the
        # group rebalance, which can stall the first batches for seconds.
        since = dt.datetime.now(dt.UTC)
        cpu = self.cpu_probe()
        cpu.start()
        lead_ids = await self._publish_received(count)
        last_change, seen = time.monotonic(), 0
        while seen < count:
            self.service.check_alive()
            await asyncio.sleep(POLL_SECONDS)
            applied = await self.admin.fetchval(
                "SELECT count(*) FROM processed_events"
                " WHERE consumer = $1 AND processed_at >= $2",
                SERVICE,
                since,
            )
            if applied > seen:
                seen, last_change = applied, time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                raise RuntimeError(f"the consumer stalled at {seen} of {count}")
        self.add_cpu("ingestion", cpu.stop())
        row = await self.admin.fetchrow(
            """
            SELECT extract(epoch FROM max(processed_at) - min(processed_at))
                AS seconds
            FROM processed_events WHERE consumer = $1 AND processed_at >= $2
            """,
            SERVICE,
            since,
        )
        assert row is not None
        seconds = float(row["seconds"] or math.nan)
        planned = await self.admin.fetchval(
            "SELECT count(*) FROM leads WHERE lead_id = ANY($1::uuid[])"
            " AND campaign = $2 AND next_at IS NOT NULL",
            lead_ids,
            CAMPAIGN,
        )
        self.samples.add("ingest rate", count / seconds)
        self.samples.add("ingest planned", float(planned))
        say(f"  {amount(count / seconds)} events/s applied; {planned} leads planned")

    async def _publish_received(self, count: int) -> list[uuid.UUID]:
        """Publish ``count`` lead.received events of leads arriving now."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.endpoints.bootstrap,
            client_id="redial-bench-ingest",
            acks="all",
            linger_ms=50,
            max_batch_size=1024 * 1024,
        )
        await producer.start()
        lead_ids = []
        try:
            pending: list[asyncio.Future[Any]] = []
            now = dt.datetime.now(dt.UTC)
            for _ in range(count):
                data = self.loader.snapshot(now + dt.timedelta(days=AGE_DAYS))
                event = new_event(
                    LeadReceived.model_validate(data.model_dump()),
                    source="redial/intake",
                    subject=str(data.lead_id),
                    time=now,
                )
                lead_ids.append(data.lead_id)
                pending.append(
                    await producer.send(
                        LEAD_EVENTS_TOPIC, value=event.to_json(), key=event.key
                    )
                )
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return lead_ids


async def measure(options: Options, endpoints: Endpoints, folder: Path) -> Bench:
    settings = service_settings(options.env)
    async with contextlib.AsyncExitStack() as cleanup:
        search_path = {"search_path": f"{SCHEMA},public"}
        admin = await connect(endpoints.database_url, server_settings=search_path)
        cleanup.push_async_callback(admin.close)
        connections = []
        for _ in range(LOAD_CONNECTIONS):
            connection = await connect(
                endpoints.database_url, server_settings=search_path
            )
            cleanup.push_async_callback(connection.close)
            connections.append(connection)
        partitions = await topic_partitions(endpoints.bootstrap, NURTURE_JOBS_TOPIC)
        await create_topic(endpoints.bootstrap, BASELINE_TOPIC, len(partitions))
        cleanup.push_async_callback(delete_topic, endpoints.bootstrap, BASELINE_TOPIC)
        reader = JobReader(endpoints.bootstrap, partitions)
        await reader.start()
        cleanup.push_async_callback(reader.stop)
        service = RestartableService(
            SERVICE, endpoints.service_env(**options.env), folder
        )
        cleanup.callback(service.stop)
        bench = Bench(
            options=options,
            endpoints=endpoints,
            settings=settings,
            admin=admin,
            loader=Loader(
                connections, admin, random.Random(20261203), settings.default_timezone
            ),
            service=service,
            reader=reader,
            postmaster=parent_of(await admin.fetchval("SELECT pg_backend_pid()")) or -1,
        )
        await _database_facts(bench, partitions)
        await asyncio.to_thread(service.start)
        await bench.put_campaign()
        await bench.warm_up()
        for repetition in range(options.repetitions):
            await bench.burst(repetition)
        for rate in options.rates:
            await bench.steady(rate)
        if options.ingest:
            await bench.ingest()
        service.check_alive()
        bench.facts["service warnings"] = service.complaints(_COMPLAINTS)
        return bench
    raise AssertionError("unreachable")


async def _database_facts(bench: Bench, partitions: Sequence[TopicPartition]) -> None:
    admin, facts = bench.admin, bench.facts
    facts["postgres"] = await admin.fetchval("SHOW server_version")
    facts["shared_buffers"] = await admin.fetchval("SHOW shared_buffers")
    facts["synchronous_commit"] = await admin.fetchval("SHOW synchronous_commit")
    facts["partitions"] = len(partitions)
    baseline = await topic_partitions(bench.endpoints.bootstrap, BASELINE_TOPIC)
    if len(baseline) != len(partitions):
        raise RuntimeError(f"{BASELINE_TOPIC} has {len(baseline)} partitions")


# -- the report ---------------------------------------------------------------


def figures(bench: Bench) -> list[Figure]:
    v = bench.samples.values
    options = bench.options
    leads = amount(options.leads)
    ratio = []
    if v["burst rate"] and v["raw rate"]:
        ratio = [statistics.median(v["burst rate"]) / statistics.median(v["raw rate"])]
    rows = [
        Figure(
            f"jobs/s, {leads} leads due at once (enrolled, step 0 on nurture-jobs)",
            "/s",
            v["burst rate"],
            v["raw rate"],
            "raw aiokafka produce of the same records",
            Target(RATE_TARGET, at_least=True),
        ),
        Figure(
            "burst jobs/s ÷ raw produce",
            "",
            ratio,
            target=Target(RATIO_TARGET, at_least=True),
        ),
    ]
    for rate in options.rates:
        label = f"{rate:g}"
        offer = f"{amount(rate)} steps/s falling due"
        rows.append(
            Figure(
                f"step lateness max, {offer} for {options.window:g} s",
                "ms",
                v[f"steady {label} lateness max"],
                target=Target(LATENESS_TARGET_MS, at_least=False),
            )
        )
        rows.append(
            Figure(
                f"step lateness p99, {offer}", "ms", v[f"steady {label} lateness p99"]
            )
        )
        rows.append(
            Figure(
                f"step lateness p50, {offer}", "ms", v[f"steady {label} lateness p50"]
            )
        )
    rows += [
        Figure("burst: T0 → half the jobs on the topic", " s", v["burst half seconds"]),
        Figure("burst: T0 → every job on the topic", " s", v["burst all seconds"]),
        Figure(
            "burst: jobs/s written to the outbox (scheduler)",
            "/s",
            v["scheduler rate"],
        ),
        Figure(
            f"raw produce in rounds of {bench.settings.outbox_batch_size}, each"
            " acknowledged before the next (the relay's rhythm)",
            "/s",
            v["rounds rate"],
            v["raw rate"],
            "pipelined raw produce",
        ),
    ]
    if options.ingest:
        rows.append(
            Figure(
                f"lead.received applied/s by the consumer ({amount(options.ingest)})",
                "/s",
                v["ingest rate"],
                v["load rate"],
                f"the bench's own upsert_received + replan_waiting, {LOAD_BATCH} a"
                f" transaction on {LOAD_CONNECTIONS} connections",
            )
        )
    return rows


def report(bench: Bench, seconds: float, measured: str) -> tuple[str, dict[str, Any]]:
    options = bench.options
    rows = figures(bench)
    mode = "--quick" if options.quick else "full"
    lines = [
        "# Nurture benchmark",
        "",
        f"{machine_line()}; {mode} run took {seconds:.0f} s, on {measured}.",
        "",
        markdown_table(rows, value_header="nurture"),
        "",
        *_notes(bench, rows),
    ]
    samples = bench.samples
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "options": {**options.__dict__, "json": str(options.json)},
        "settings": _settings(bench.settings),
        "facts": bench.facts,
        "figures": [row.as_json() for row in rows],
        "samples": dict(samples.values),
        "cpu": {name: median_shares(shares) for name, shares in samples.cpu.items()},
    }
    return "\n".join(lines), payload


def _settings(settings: NurtureSettings) -> dict[str, Any]:
    return {
        "NURTURE_SCHEDULER_BATCH": settings.scheduler_batch,
        "NURTURE_TICK_SECONDS": settings.tick_seconds,
        "NURTURE_CONSUMER_BATCH": settings.consumer_batch,
        "REDIAL_OUTBOX_BATCH_SIZE": settings.outbox_batch_size,
        "REDIAL_OUTBOX_POLL_SECONDS": settings.outbox_poll_seconds,
        "DATABASE_POOL_MAX": settings.database_pool_max,
    }


def _notes(bench: Bench, rows: Sequence[Figure]) -> list[str]:
    options, facts, v = bench.options, bench.facts, bench.samples.values
    settings = ", ".join(
        f"{k}={value}" for k, value in _settings(bench.settings).items()
    )
    given = " ".join(f"`{k}={value}`" for k, value in options.env.items()) or "none"
    late = sum(v["burst late start"])
    notes = [
        f"Medians of {options.repetitions} burst(s); one steady window per rate;"
        " ratio = value ÷ baseline. The machine is shared with other work, so"
        f" single figures are noisy. PostgreSQL {facts['postgres']},"
        f" shared_buffers {facts['shared_buffers']}, synchronous_commit="
        f"{facts['synchronous_commit']}; nurture is one uvicorn process with"
        f" {settings} (`--env` given: {given}); nurture-jobs and the scratch"
        f" topic have {facts['partitions']} partitions.",
        "",
        f"Burst: {amount(options.leads)} leads, loaded in"
        f" {spread(v['load seconds'])} s ({spread(v['load rate'])} leads/s) plus"
        f" {spread(v['vacuum seconds'])} s of VACUUM ANALYZE while the service was"
        " stopped, all due at T0; the service was started again before T0"
        + (f" except {late:.0f} time(s), when T0 is its start" if late else "")
        + ". Every job is an e-mail for step 0 of the campaign"
        f" ({_steps(facts.get('burst steps', []))}), on average"
        f" {statistics.median(v['payload bytes'] or [math.nan]):.0f} bytes. Jobs"
        f" read back {spread(v['burst records'])}, distinct job ids"
        f" {spread(v['burst job_ids'])}, leads {spread(v['burst leads'])} (leads"
        f" without a job {spread(v['burst missing'])}, jobs for a lead not loaded"
        f" {spread(v['burst strangers'])}).",
        "",
        "Where the burst's time went: the scheduler wrote its last job to the"
        f" outbox {spread(v['scheduler seconds'])} s after T0, in"
        f" {spread(v['transactions'])} transactions of"
        f" {spread(v['jobs per transaction'])} jobs; the relay published the last"
        f" {spread(v['relay seconds'])} s after T0, in {spread(v['relay passes'])}"
        f" passes of {spread(v['jobs per relay pass'])} rows; a row waited in the"
        f" outbox {spread(v['relay lag p50'])} s (median), at most"
        f" {spread(v['relay lag max'])} s. CPU per job: nurture"
        f" {spread(v['burst nurture cpu ms per job'])} ms, PostgreSQL"
        f" {spread(v['burst postgres cpu ms per job'])} ms.",
        "",
        "Baseline: the burst's own records, sent again by the bench with"
        " make_producer's settings (acks=all, linger 2 ms, batches up to 256 KiB)"
        f" and the relay's header to `{BASELINE_TOPIC}`, futures awaited every"
        f" {amount(RAW_WINDOW)}; the rounds figure sends"
        f" {options.rounds_share:.0%} of them,"
        f" {bench.settings.outbox_batch_size} at a time, each round acknowledged"
        " before the next, as the relay sends a pass (without its two"
        " statements).",
        "",
        *_steady_notes(bench),
        *_ingest_notes(bench),
        "CPU, medians:",
        "",
    ]
    notes += [
        f"- {name}: {describe_cpu(median_shares(shares))}"
        for name, shares in bench.samples.cpu.items()
    ]
    notes += ["", "Each repetition (value; baseline):", ""]
    notes += repetition_lines(rows)
    complaints = facts.get("service warnings") or {}
    notes += [
        "",
        "The service's logs (every start) mention: "
        + ", ".join(f"`{name}` × {count}" for name, count in complaints.items())
        + "."
        if complaints
        else "The service logged no failures, retries or dead letters.",
    ]
    return notes


def _steps(counts: Sequence[dict[str, int]]) -> str:
    merged: Counter[str] = Counter()
    for count in counts:
        merged.update(count)
    return ", ".join(f"step {name} × {amount(n)}" for name, n in merged.items())


def _steady_notes(bench: Bench) -> list[str]:
    options, v = bench.options, bench.samples.values
    notes = []
    for rate in options.rates:
        label = f"{rate:g}"
        part = f"steady {label}"
        notes += [
            f"Steady {amount(rate)}/s: {amount(rate * options.window)} leads due one"
            f" after another over {options.window:g} s, loaded into the emptied"
            " table with the service running, the load ending"
            f" {spread(v[f'{part} load margin'])} s before the first fell due"
            f"{_overrun(v[f'{part} load margin'])};"
            f" {spread(v[f'{part} achieved'])} jobs/s reached the topic inside the"
            f" window. Lateness, scheduler's part (due → outbox row): p50"
            f" {spread(v[f'{part} scheduler p50'])} ms, p99"
            f" {spread(v[f'{part} scheduler p99'])} ms, max"
            f" {spread(v[f'{part} scheduler max'])} ms; relay's part (row →"
            f" published): p50 {spread(v[f'{part} relay p50'])} ms, p99"
            f" {spread(v[f'{part} relay p99'])} ms, max"
            f" {spread(v[f'{part} relay max'])} ms. Duplicates"
            f" {spread(v[f'{part} duplicates'])}, leads without a job"
            f" {spread(v[f'{part} missing'])}.",
            "",
        ]
    return notes


def _overrun(margins: Sequence[float]) -> str:
    """A warning when a load was still running as its leads fell due."""
    if all(margin > 0 for margin in margins):
        return ""
    return (
        " (**the load overran**: its last leads were written after the first"
        " fell due, so the scheduler competed with it)"
    )


def _ingest_notes(bench: Bench) -> list[str]:
    options, v = bench.options, bench.samples.values
    if not options.ingest:
        return []
    return [
        f"Ingestion: {amount(options.ingest)} lead.received events (leads arriving"
        " now) published to lead-events as fast as the broker takes them, to"
        " the service running since the last burst, and applied by its consumer"
        " (batches of up to"
        f" {bench.settings.consumer_batch} a partition, one transaction each);"
        " the rate runs from the first `processed_at` to the last;"
        f" {spread(v['ingest planned'])} leads got the campaign and an enrolment"
        " time.",
        "",
    ]


# -- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    return run_bench(
        "nurture",
        lambda endpoints, workdir: measure(options, endpoints, workdir),
        report,
        options.json,
    )


if __name__ == "__main__":
    sys.exit(main())
