"""The metrics service's consume rate, freshness and /metrics, each beside a baseline.

    .venv/bin/python -m bench.metrics [--quick] [--leads 100000]
        [--calls 1000000] [--repeat 3] [--rate 2000] [--seconds 30]
        [--json PATH]

Starts embedded PostgreSQL and Tansu (unless ``DATABASE_URL`` /
``KAFKA_BOOTSTRAP_SERVERS`` name servers to use: the bench empties the
metrics schema's tables), then publishes a backlog to ``lead-events``, keyed
by lead id as the services publish: for each lead a ``lead.received`` and a
``lead.queued`` (cadence 0 10m 1h 4h 1d 2d 4d 7d, target 10), then its calls
(``call.logged``) at the times the cadence plans, everything in time order as
the services would have published it over the last 30 days. Leads are spread
over 50 pools × 10 sources, each pool worked by one of 20 teams of 10 agents.

Then:

* the baseline, three times (once with ``--quick``): an aiokafka consumer
  reads the backlog with the service's poll settings (``getmany`` of up to
  500 records) and only counts the messages — the most a Python consumer gets
  from this broker;
* the metrics service, started as production runs it (its own uvicorn
  process), drains the same backlog from the start with empty tables, once
  (a full-size drain takes minutes; ``--repeat N`` drains N times); the rate
  runs from the first event applied to the last, from
  ``processed_events.processed_at``.

After the last drain, with the service still running, three times each (once
with ``--quick``):

* an open-loop producer offers call events at a steady rate (2 000/s) for a
  timed window; a few of them, on leads kept aside for it, are probes: each
  is polled at ``GET /v1/leads/{id}/penetration`` until ``attempts`` counts
  it. Beside it, a bare aiokafka consumer reading the same stream times the
  same probes from send to delivery;
* once the service's gauges have refreshed over all the data, ``GET
  /metrics`` is timed back to back, beside the rendering of the very same
  samples by ``prometheus_client`` in the bench's own process; and one
  ``MetricsService.refresh_gauges`` is timed in the bench's process on the
  same database, beside one bare aggregate of the 30-day window.

The medians go to stdout and ``bench/results/metrics.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

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
    amount,
    describe_cpu,
    end_offsets,
    family,
    histogram_quantile,
    http_request,
    machine_line,
    markdown_table,
    parent_of,
    percentile,
    repetition_lines,
    run_bench,
    say,
    spread,
    tail,
    topic_partitions,
)
from services.metrics.metrics import PENETRATION
from services.metrics.service import MetricsService
from services.metrics.settings import MetricsSettings
from shared.clock import SystemClock
from shared.db import connect, create_pool
from shared.events import (
    CallLogged,
    Consent,
    EventData,
    LeadQueued,
    LeadReceived,
    decode,
    new_event,
)
from shared.kafka import make_producer
from shared.settings import LEAD_EVENTS_TOPIC

SCHEMA = "metrics"
GROUP = "metrics"
TOPIC = LEAD_EVENTS_TOPIC
SERVICE = "metrics"
#: The tables the consumer fills, emptied before each drain.
_TABLES = "leads, slots, lead_days, lead_agent_days, group_days, agents"

POOLS = 50
SOURCES = 10
TEAMS = 20
AGENTS_PER_TEAM = 10
CALL_TARGET = 10
#: 0 10m 1h 4h 1d 2d 4d 7d, in seconds; the last gap repeats.
CADENCE = (0.0, 600.0, 3600.0, 14400.0, 86400.0, 172800.0, 345600.0, 604800.0)
#: How far back the leads arrived.
HISTORY = dt.timedelta(days=30)
#: What calls ended in: mostly not reached, so no call ends its lead.
DISPOSITIONS = (
    ("no_answer", 50),
    ("voicemail", 25),
    ("busy", 10),
    ("contacted", 8),
    ("callback", 4),
    ("not_interested", 2),
    ("appointment", 1),
)
#: The consumer's poll, as shared/consumer.py and the service's settings
#: (METRICS_CONSUMER_BATCH) set it.
POLL_TIMEOUT_MS = 500
MAX_RECORDS = MetricsSettings().consumer_batch

#: The backlog is published in batches, as nothing times it.
BACKLOG_LINGER_MS = 50
#: The steady producer sends what is due every this many seconds: often
#: enough for an open loop, seldom enough not to flood the broker with tiny
#: produce requests (the outbox relay sends a batch per 0.2 s poll).
STEADY_TICK = 0.02

#: The issue's targets (2 cores, everything on one machine).
RATE_TARGET = 10_000.0
RATIO_TARGET = 0.25
LAG_P99_TARGET_MS = 2_000.0
SCRAPE_TARGET_MS = 50.0

_PENETRATION_LINE = re.compile(rb"^redial_metrics_penetration_ratio\{", re.MULTILINE)
_DELAY_BUCKET = re.compile(
    rb'^redial_metrics_event_delay_seconds_bucket\{le="([^"]+)"\} (\S+)$',
    re.MULTILINE,
)
_GAUGE_SECONDS = MetricsSettings().gauge_seconds
#: Log messages of the service that tell of trouble, counted for the report.
_COMPLAINTS = (
    "consumer.retry",
    "consumer.failed",
    "consumer.commit_lost",
    "consumer.dead_lettered",
    "slots.count_retry",
    "slots.count_failed",
    "gauges.refresh_failed",
    "Traceback",
)


@dataclass(frozen=True)
class Options:
    leads: int
    calls: int
    repetitions: int
    #: Drains of the whole backlog by the service (each takes minutes).
    drains: int
    rate: float
    warmup: float
    duration: float
    probes_per_second: float
    probe_poll: float
    scrapes: int
    quick: bool
    json: Path | None


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5 000 leads, 50 000 calls, 1 repetition, a 10 s steady window",
    )
    parser.add_argument("--leads", type=int, help="leads of the backlog")
    parser.add_argument("--calls", type=int, help="call events of the backlog")
    parser.add_argument(
        "--repeat",
        type=int,
        help="repetitions of the bare drain, steady window and /metrics series"
        " (default 3; 1 with --quick), and of the service's drain of the whole"
        " backlog (default 1)",
    )
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="steady offer, call events/s"
    )
    parser.add_argument("--seconds", type=float, help="timed steady window")
    parser.add_argument(
        "--scrapes", type=int, default=200, help="timed GET /metrics requests"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args(argv)
    quick = bool(arguments.quick)
    leads = arguments.leads or (5_000 if quick else 100_000)
    calls = arguments.calls if arguments.calls is not None else leads * CALL_TARGET
    if leads < POOLS * SOURCES * 2:
        parser.error(f"--leads must be at least {POOLS * SOURCES * 2}")
    if calls < 0 or arguments.rate <= 0:
        parser.error("--calls must not be negative, --rate must be positive")
    return Options(
        leads=leads,
        calls=calls,
        repetitions=arguments.repeat or (1 if quick else 3),
        drains=arguments.repeat or 1,
        rate=arguments.rate,
        warmup=2.0 if quick else 3.0,
        duration=arguments.seconds or (10.0 if quick else 30.0),
        probes_per_second=3.0,
        probe_poll=0.1,
        scrapes=arguments.scrapes,
        quick=quick,
        json=arguments.json,
    )


# -- the events -------------------------------------------------------------


def pool_name(index: int) -> str:
    return f"pool-{index % POOLS:02d}"


def source_name(index: int) -> str:
    return f"source-{index // POOLS % SOURCES:02d}"


def team_of(index: int) -> int:
    """Each pool is worked by one team."""
    return index % POOLS % TEAMS


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat()


def _template(data: EventData, source: str) -> dict[str, Any]:
    """The JSON document the services publish for ``data``, as a dict."""
    lead_id = str(getattr(data, "lead_id", ""))
    moment = dt.datetime.now(dt.UTC)
    envelope = new_event(data, source=source, subject=lead_id, time=moment)
    document: dict[str, Any] = orjson.loads(envelope.to_json())
    return document


@dataclass
class Lead:
    lead_id: uuid.UUID
    index: int
    received_at: float
    #: When each of its backlog calls was made, in order.
    calls: list[float]
    #: The Kafka key and CloudEvents subject.
    key: bytes = b""

    def __post_init__(self) -> None:
        self.key = str(self.lead_id).encode()


class Events:
    """Builds the bytes of each event the way ``Envelope.to_json`` does, from
    templates made once by the real models, so that building costs a dict
    copy and an ``orjson.dumps`` per event."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._contacts = UniqueLeads(rng)
        now = dt.datetime.now(dt.UTC)
        some_lead = uuid.uuid4()
        self._received = _template(
            LeadReceived(
                lead_id=some_lead,
                source="web",
                external_id=None,
                campaign="spring-refi",
                first_name="Maria",
                last_name="Garcia",
                phone="+12125550100",
                email="maria@example.org",
                postal_code="10001",
                country="US",
                region="NY",
                timezone="America/New_York",
                timezones=["America/New_York"],
                consent=Consent(call=True, sms=False, email=True),
                attributes={"utm_source": "bench", "loan_amount": 250_000},
                received_at=now,
            ),
            "redial/intake",
        )
        self._queued = _template(
            LeadQueued(
                lead_id=some_lead,
                pool="pool",
                source="web",
                campaign="spring-refi",
                call_target=CALL_TARGET,
                cadence_seconds=list(CADENCE),
                due_at=now,
                queued_at=now,
            ),
            "redial/queue",
        )
        self._call = _template(
            CallLogged(
                lead_id=some_lead,
                call_id=uuid.uuid4(),
                pool="pool",
                source="web",
                agent_id="agent",
                team="team",
                attempt=1,
                call_target=CALL_TARGET,
                disposition="no_answer",
                duration_seconds=42.0,
                called_at=now,
            ),
            "redial/queue",
        )
        self._dispositions = [
            name for name, weight in DISPOSITIONS for _ in range(weight)
        ]

    def _envelope(
        self, template: dict[str, Any], lead: Lead, moment: str
    ) -> dict[str, Any]:
        document = dict(template)
        document["id"] = str(uuid.uuid4())
        document["subject"] = str(lead.lead_id)
        document["time"] = moment
        return document

    def received(self, lead: Lead) -> bytes:
        moment = _iso(lead.received_at)
        document = self._envelope(self._received, lead, moment)
        contact = self._contacts.contact()
        document["data"] = {
            **self._received["data"],
            "lead_id": str(lead.lead_id),
            "source": source_name(lead.index),
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "phone": contact.phone,
            "email": contact.email,
            "postal_code": contact.postal_code,
            "region": contact.region,
            "timezone": contact.timezone,
            "timezones": [contact.timezone],
            "received_at": moment,
        }
        return orjson.dumps(document)

    def queued(self, lead: Lead, queued_at: float) -> bytes:
        moment = _iso(queued_at)
        document = self._envelope(self._queued, lead, moment)
        document["data"] = {
            **self._queued["data"],
            "lead_id": str(lead.lead_id),
            "pool": pool_name(lead.index),
            "source": source_name(lead.index),
            "due_at": moment,
            "queued_at": moment,
        }
        return orjson.dumps(document)

    def call(self, lead: Lead, attempt: int, called_at: float) -> bytes:
        moment = _iso(called_at)
        document = self._envelope(self._call, lead, moment)
        team = team_of(lead.index)
        agent = team * AGENTS_PER_TEAM + self._rng.randrange(AGENTS_PER_TEAM)
        document["data"] = {
            **self._call["data"],
            "lead_id": str(lead.lead_id),
            "call_id": str(uuid.uuid4()),
            "pool": pool_name(lead.index),
            "source": source_name(lead.index),
            "agent_id": f"agent-{agent:03d}",
            "team": f"team-{team:02d}",
            "attempt": attempt,
            "disposition": self._rng.choice(self._dispositions),
            "duration_seconds": float(self._rng.randrange(5, 600)),
            "called_at": moment,
        }
        return orjson.dumps(document)


def make_leads(options: Options, rng: random.Random, now: float) -> list[Lead]:
    """The leads and when each was received and called.

    Arrivals are uniform over the last 30 days, except the first two leads of
    each pool × source, which arrive today so that every gauge window (1d, 7d,
    30d) has due attempts of every pool × source. Attempt k is called at its
    planned time plus up to five minutes; one planned later than now is
    called early, between the previous call and now.
    """
    today = dt.datetime.fromtimestamp(now, dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    since_midnight = max(1.0, now - today.timestamp())
    gaps = [CADENCE[min(k, len(CADENCE) - 1)] for k in range(max(CALL_TARGET, 64))]
    offsets = list(accumulate(gaps))
    per_lead, extra = divmod(options.calls, options.leads)
    leads = []
    for index in range(options.leads):
        if index < POOLS * SOURCES * 2:
            received = now - since_midnight * rng.random()
        else:
            received = now - HISTORY.total_seconds() * rng.random()
        queued = received + 1.0
        calls: list[float] = []
        last = queued
        for attempt in range(per_lead + (index < extra)):
            planned = queued + offsets[min(attempt, len(offsets) - 1)]
            called = planned + 300.0 * rng.random()
            if called >= now:
                called = last + (now - last) * rng.random()
            last = max(last, called)
            calls.append(last)
        lead_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        leads.append(Lead(lead_id, index, received, calls))
    return leads


def backlog_order(leads: Sequence[Lead]) -> list[tuple[float, int, int]]:
    """(time, lead index, what) for every event, in time order; ``what`` is
    -2 for lead.received, -1 for lead.queued, else the call's index."""
    order = []
    for lead in leads:
        order.append((lead.received_at, lead.index, -2))
        order.append((lead.received_at + 1.0, lead.index, -1))
        order += [(moment, lead.index, k) for k, moment in enumerate(lead.calls)]
    order.sort()
    return order


def backlog(
    leads: Sequence[Lead], events: Events
) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, event type) of every event of the backlog, in time order."""
    for moment, index, what in backlog_order(leads):
        lead = leads[index]
        if what == -2:
            yield lead.key, events.received(lead), "lead.received.v1"
        elif what == -1:
            yield lead.key, events.queued(lead, moment), "lead.queued.v1"
        else:
            yield lead.key, events.call(lead, what + 1, moment), "call.logged.v1"


def check_events(leads: Sequence[Lead], events: Events) -> None:
    """Each kind of event the bench builds decodes as the services decode it."""
    lead = leads[0]
    samples = [
        (events.received(lead), LeadReceived),
        (events.queued(lead, lead.received_at + 1), LeadQueued),
        (events.call(lead, 1, lead.received_at + 2), CallLogged),
    ]
    for raw, model in samples:
        envelope = decode(raw)
        if not isinstance(envelope.data, model) or envelope.subject != str(
            lead.lead_id
        ):
            raise AssertionError(f"bench event does not decode as {model.__name__}")


# -- the broker -------------------------------------------------------------


async def set_group_offsets(
    bootstrap: str, group: str, offsets: dict[TopicPartition, int]
) -> None:
    """Commit ``offsets`` for ``group`` as its only member (every other member
    must be stopped): joins the group, waits to hold every partition, commits,
    leaves."""
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while consumer.assignment() != set(offsets):
                await asyncio.sleep(0.05)
        await consumer.commit(
            {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}
        )
    finally:
        await consumer.stop()


class Committed:
    """Reads a group's committed offsets on the topic without joining it."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._partitions: list[TopicPartition] = []

    async def start(self, partitions: Sequence[TopicPartition]) -> None:
        await self._consumer.start()
        self._partitions = list(partitions)
        self._consumer.assign(self._partitions)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def total(self) -> int:
        """The sum of the committed offsets (none counts as 0)."""
        total = 0
        for tp in self._partitions:
            offset = await self._consumer.committed(tp)
            total += max(0, offset or 0)
        return total


@dataclass
class Published:
    count: int
    by_type: dict[str, int]
    seconds: float
    starts: dict[TopicPartition, int]
    ends: dict[TopicPartition, int]
    bytes: int

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else math.nan


async def publish_backlog(
    endpoints: Endpoints, leads: Sequence[Lead], events: Events
) -> Published:
    """Publish every event of the backlog, acknowledged by the broker as the
    services' producer asks (acks=all) but in larger batches, since nothing
    is timed here; returns what was published and the offsets around it."""
    partitions = await topic_partitions(endpoints.bootstrap, TOPIC)
    starts = await end_offsets(endpoints.bootstrap, partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=endpoints.bootstrap,
        client_id="redial-bench-backlog",
        acks="all",
        linger_ms=BACKLOG_LINGER_MS,
        max_batch_size=1024 * 1024,
    )
    await producer.start()
    by_type: dict[str, int] = {}
    size = 0
    began = time.monotonic()
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value, event_type in backlog(leads, events):
            pending.append(await producer.send(TOPIC, value=value, key=key))
            by_type[event_type] = by_type.get(event_type, 0) + 1
            size += len(value)
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.monotonic() - began
    ends = await end_offsets(endpoints.bootstrap, partitions)
    return Published(
        count=sum(by_type.values()),
        by_type=by_type,
        seconds=seconds,
        starts=starts,
        ends=ends,
        bytes=size,
    )


async def raw_drain(
    bootstrap: str, published: Published, cpu: CpuProbe
) -> dict[str, float]:
    """The baseline: read the backlog in a new group with the service's poll
    settings, counting messages; returns its rate and CPU."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        max_poll_records=MAX_RECORDS,
    )
    await consumer.start()
    try:
        consumer.assign(list(published.starts))
        for tp, offset in published.starts.items():
            consumer.seek(tp, offset)
        count, first = 0, None
        async with asyncio.timeout(600):
            while count < published.count:
                batches = await consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS
                )
                received = sum(len(records) for records in batches.values())
                if received and first is None:
                    first = time.monotonic()
                    cpu.start()
                count += received
        last = time.monotonic()
        shares = cpu.stop()
    finally:
        await consumer.stop()
    assert first is not None
    return {"rate": count / (last - first), "seconds": last - first, **_cpu(shares)}


def _cpu(shares: dict[str, float]) -> dict[str, float]:
    return {f"cpu {name}": value for name, value in shares.items()}


# -- the service --------------------------------------------------------------


def _stolen_ticks() -> float:
    """Ticks the hypervisor gave this machine's cores to others, so far."""
    with (
        contextlib.suppress(OSError, IndexError, ValueError),
        open("/proc/stat") as stat,
    ):
        return float(stat.readline().split()[8])
    return 0.0


class StealingCpuProbe(CpuProbe):
    """A CpuProbe that also reports the share of a core the hypervisor gave to
    other machines ("stolen") and takes it out of "other"."""

    _TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def start(self) -> None:
        super().start()
        self._stolen = (_stolen_ticks(), time.monotonic())

    def stop(self) -> dict[str, float]:
        shares = super().stop()
        if not shares:
            return shares
        ticks, began = self._stolen
        wall = max(1e-9, time.monotonic() - began)
        stolen = 100 * (_stolen_ticks() - ticks) / self._TICKS / wall
        shares["other"] = max(0.0, shares["other"] - stolen)
        shares["stolen"] = stolen
        return shares


@dataclass
class Bench:
    options: Options
    endpoints: Endpoints
    admin: asyncpg.Connection
    committed: Committed
    service: RestartableService
    postmaster: int
    leads: list[Lead]
    events: Events
    published: Published | None = None
    samples: Samples = field(default_factory=Samples)
    facts: dict[str, Any] = field(default_factory=dict)

    def cpu_probe(self, *, service: bool = True) -> StealingCpuProbe:
        groups = {
            "metrics": (lambda: family(self.service.pid)) if service else (lambda: []),
            "postgres": lambda: family(self.postmaster, named="postgres"),
            "broker": lambda: family(os.getpid(), named="tansu"),
            "bench": lambda: [os.getpid()],
        }
        return StealingCpuProbe(groups)

    # -- drains ---------------------------------------------------------------

    async def reset(self) -> None:
        """Empty the service's tables and point its group at the backlog's
        start; the service must be stopped."""
        assert self.published is not None
        await self.admin.execute(f"TRUNCATE {_TABLES}")
        await self.admin.execute(
            "DELETE FROM processed_events WHERE consumer = $1", GROUP
        )
        await set_group_offsets(self.endpoints.bootstrap, GROUP, self.published.starts)

    async def raw_drain(self, repetition: int) -> None:
        published = self.published
        assert published is not None
        say(f"… repetition {repetition + 1}: bare consumer drains the backlog")
        raw = await raw_drain(
            self.endpoints.bootstrap, published, self.cpu_probe(service=False)
        )
        for name, value in raw.items():
            self.samples.add(f"raw {name}", value)
        say(f"  {amount(raw['rate'])} events/s")

    async def drain(self, repetition: int) -> None:
        """The service's drain of the whole backlog, from empty tables."""
        published = self.published
        assert published is not None
        await asyncio.to_thread(self.service.stop)
        await self.reset()
        say(
            f"… drain {repetition + 1}: the metrics service drains"
            f" {amount(published.count)} events"
        )
        await asyncio.to_thread(self.service.start)
        await self._wait_drained(published)
        await self._drain_facts(published)

    async def _wait_drained(self, published: Published) -> None:
        start = sum(published.starts.values())
        target = sum(published.ends.values())
        cpu = self.cpu_probe()
        began = time.monotonic()
        applied, started, last_progress = 0, False, time.monotonic()
        progress: list[tuple[float, int]] = []
        while True:
            self.service.check_alive()
            done = await self.committed.total() - start
            now = time.monotonic()
            if done > applied:
                applied, last_progress = done, now
                progress.append((now - began, done))
            if applied and not started:
                cpu.start()
                started = True
            if applied >= target - start:
                break
            if now - last_progress > 120:
                raise RuntimeError(
                    f"the service stalled at {applied} of {target - start} events\n"
                    f"{tail(self.service.log_path)}"
                )
            await asyncio.sleep(0.25)
        shares = cpu.stop()
        for name, value in _cpu(shares).items():
            self.samples.add(f"service {name}", value)
        self.facts.setdefault("progress", []).append(progress)

    async def _drain_facts(self, published: Published) -> None:
        # An offset is committed after its batch's transaction: every row is
        # there by now, but give a slow snapshot a moment.
        for _ in range(50):
            if (
                await self.admin.fetchval(
                    "SELECT count(*) FROM processed_events WHERE consumer = $1", GROUP
                )
                >= published.count
            ):
                break
            await asyncio.sleep(0.2)
        row = await self.admin.fetchrow(
            """
            SELECT count(*) AS events,
                   extract(epoch FROM max(processed_at) - min(processed_at))
                       AS seconds,
                   count(DISTINCT processed_at) AS batches
            FROM processed_events WHERE consumer = $1
            """,
            GROUP,
        )
        assert row is not None
        events, seconds = int(row["events"]), float(row["seconds"] or 0.0)
        say(f"  {amount(events / seconds if seconds else math.nan)} events/s")
        if events != published.count:
            raise RuntimeError(
                f"{events} events applied of {published.count}\n"
                f"{tail(self.service.log_path, 60)}"
            )
        samples = self.samples
        samples.add("service rate", events / seconds if seconds else math.nan)
        samples.add("service seconds", seconds)
        samples.add("service batches", float(row["batches"]))
        # The rate over each third of the events, to show whether it holds up
        # as the tables grow.
        moments = await self.admin.fetchval(
            """
            SELECT percentile_disc(ARRAY[0, 1 / 3.0, 2 / 3.0, 1])
                   WITHIN GROUP (ORDER BY processed_at)
            FROM processed_events WHERE consumer = $1
            """,
            GROUP,
        )
        for third, (begin, end) in enumerate(pairwise(moments), start=1):
            seconds = (end - begin).total_seconds()
            samples.add(
                f"service rate third {third}",
                events / 3 / seconds if seconds else math.nan,
            )
        samples.add("service events per batch", events / max(1, row["batches"]))
        slots = await self.admin.fetchrow(
            """
            SELECT count(*) AS slots, count(*) FILTER (WHERE counted) AS counted
            FROM slots
            """
        )
        assert slots is not None
        samples.add("slots", float(slots["slots"]))
        samples.add("slots counted at drain end", float(slots["counted"]))

    async def table_facts(self) -> dict[str, float]:
        facts = {}
        for table in (*_TABLES.split(", "), "processed_events"):
            facts[f"{table} rows"] = float(
                await self.admin.fetchval(f"SELECT count(*) FROM {table}")
            )
            facts[f"{table} MB"] = (
                float(
                    await self.admin.fetchval(
                        "SELECT pg_total_relation_size($1::regclass)", table
                    )
                )
                / 1e6
            )
        return facts

    async def wait_slots_counted(self, timeout: float = 300.0) -> float:
        """Wait until the slot counter has counted every slot due; returns how
        long that took."""
        began = time.monotonic()
        while await self.admin.fetchval(
            "SELECT EXISTS (SELECT 1 FROM slots"
            " WHERE NOT counted AND NOT cancelled AND due_at <= now() - interval '2s')"
        ):
            self.service.check_alive()
            if time.monotonic() - began > timeout:
                raise RuntimeError("the slot counter did not catch up")
            await asyncio.sleep(0.5)
        return time.monotonic() - began

    # -- freshness --------------------------------------------------------------

    async def steady(self) -> None:
        options = self.options
        probes = probe_leads(self.leads, options)
        others = self.leads[: len(self.leads) - sum(map(len, probes))]
        # The steady calls go to leads of the backlog, which the steady runs
        # then count on from where the backlog left them.
        attempts: dict[int, int] = {}
        for repetition in range(options.repetitions):
            say(
                f"… repetition {repetition + 1}: {options.rate:g} call events/s"
                f" offered for {options.warmup + options.duration:g} s, probes polled"
            )
            run = SteadyRun(self, probes[repetition], others, seed=repetition)
            await run.run(attempts)
            self._add_steady(run)
            say(
                f"  p50 {amount(percentile(run.lags, 0.5) * 1000)} ms,"
                f" p99 {amount(percentile(run.lags, 0.99) * 1000)} ms,"
                f" applied {amount(run.applied / run.window)}/s"
            )
            row = await self.admin.fetchrow(
                """
                SELECT count(*) AS events, count(DISTINCT processed_at) AS batches
                FROM processed_events
                WHERE consumer = $1 AND processed_at >= to_timestamp($2)
                  AND processed_at < to_timestamp($3)
                """,
                GROUP,
                run.wall_start,
                run.wall_start + run.window,
            )
            assert row is not None
            self.samples.add(
                "steady events per batch", row["events"] / max(1, row["batches"])
            )
            self.samples.add("steady batches per second", row["batches"] / run.window)

    def _add_steady(self, run: SteadyRun) -> None:
        samples = self.samples
        samples.add("lag p50", percentile(run.lags, 0.50) * 1000)
        samples.add("lag p99", percentile(run.lags, 0.99) * 1000)
        samples.add("raw lag p50", percentile(run.raw_lags, 0.50) * 1000)
        samples.add("raw lag p99", percentile(run.raw_lags, 0.99) * 1000)
        samples.add("delay p50", run.delay_quantile(0.50))
        samples.add("delay p99", run.delay_quantile(0.99))
        samples.add("probes", len(run.lags))
        samples.add("probes missed", run.missed)
        samples.add("probe polls", run.polls)
        samples.add("poll p50", percentile(run.poll_latencies, 0.50) * 1000)
        samples.add("poll p99", percentile(run.poll_latencies, 0.99) * 1000)
        samples.add("offered", run.sent / run.window)
        samples.add("steady applied", run.applied / run.window)
        for name, value in _cpu(run.cpu).items():
            samples.add(f"steady {name}", value)
        if run.errors:
            self.samples.errors["steady"] += run.errors
            self.samples.first_errors.setdefault("steady", run.first_error)

    # -- /metrics -------------------------------------------------------------

    async def scrapes(self) -> None:
        options = self.options
        expected = await self.gauge_refresh_times()
        say(f"… waiting for the service's gauges ({expected} penetration label sets)")
        host = f"127.0.0.1:{self.service.port}"
        connection = HttpConnection("127.0.0.1", self.service.port)
        request = http_request("GET", "/metrics", host=host, headers={}, body=b"")
        healthz = http_request("GET", "/healthz", host=host, headers={}, body=b"")
        try:
            body = await self._wait_gauges(connection, request, expected)
            mirror = mirror_registry(body)
            for repetition in range(options.repetitions):
                say(
                    f"… repetition {repetition + 1}: {options.scrapes} GET /metrics"
                    " back to back"
                )
                # A fresh connection: uvicorn closes one idle for 5 s, and the
                # renders below take about that long.
                await connection.close()
                cpu = self.cpu_probe()
                cpu.start()
                latencies = await _timed_gets(connection, request, options.scrapes)
                shares = cpu.stop()
                floor = await _timed_gets(connection, healthz, options.scrapes)
                rendered = []
                for _ in range(min(options.scrapes, 50)):
                    began = time.perf_counter()
                    generate_latest(mirror)
                    rendered.append(time.perf_counter() - began)
                samples = self.samples
                for name, values in (
                    ("scrape", latencies),
                    ("healthz", floor),
                    ("render", rendered),
                ):
                    samples.add(f"{name} p50", percentile(values, 0.50) * 1000)
                    samples.add(f"{name} p99", percentile(values, 0.99) * 1000)
                for name, value in _cpu(shares).items():
                    samples.add(f"scrape {name}", value)
        finally:
            await connection.close()
        self.facts["exposition bytes"] = len(body)
        self.facts["exposition lines"] = body.count(b"\n")
        self.facts["penetration label sets"] = len(_PENETRATION_LINE.findall(body))

    async def _wait_gauges(
        self, connection: HttpConnection, request: bytes, expected: int
    ) -> bytes:
        """The first scrape whose penetration gauge has ``expected`` label sets
        (the service refreshes every METRICS_GAUGE_SECONDS)."""
        deadline = time.monotonic() + _GAUGE_SECONDS + 15
        while True:
            status, body = await connection.exchange(request)
            if status != 200:
                raise RequestFailed(status, body)
            found = len(_PENETRATION_LINE.findall(body))
            if found >= expected:
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"{found} penetration label sets, not {expected}")
            await asyncio.sleep(1.0)

    async def gauge_refresh_times(self) -> int:
        """Times MetricsService.refresh_gauges in this process against the same
        tables, beside one bare aggregate of the 30-day window; returns the
        penetration label sets it found."""
        say("… timing refresh_gauges in the bench's process")
        settings = MetricsSettings(database_url=self.endpoints.database_url)
        pool = await create_pool(
            self.endpoints.database_url, schema=SCHEMA, min_size=1, max_size=2
        )
        try:
            service = MetricsService(pool=pool, settings=settings, clock=SystemClock())
            today = dt.datetime.now(dt.UTC).date()
            first = today - dt.timedelta(days=29)
            for _ in range(max(3, self.options.repetitions)):
                began = time.perf_counter()
                await service.refresh_gauges()
                self.samples.add("refresh", (time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                await pool.fetch(
                    """
                    SELECT pool, source, sum(attempts), sum(scheduled)
                    FROM lead_days WHERE day BETWEEN $1 AND $2
                    GROUP BY pool, source
                    """,
                    first,
                    today,
                )
                self.samples.add("bare refresh", (time.perf_counter() - began) * 1000)
            (gauge,) = PENETRATION.collect()
            self.facts["lead_days in 30d"] = await pool.fetchval(
                "SELECT count(*) FROM lead_days WHERE day BETWEEN $1 AND $2",
                first,
                today,
            )
            return len(gauge.samples)
        finally:
            await pool.close()


async def _timed_gets(
    connection: HttpConnection, request: bytes, count: int
) -> list[float]:
    """Seconds each of ``count`` exchanges of ``request`` took, back to back."""
    latencies = []
    for _ in range(count):
        sent = time.perf_counter()
        status, body = await connection.exchange(request)
        latencies.append(time.perf_counter() - sent)
        if status != 200:
            raise RequestFailed(status, body)
    return latencies


def mirror_registry(exposition: bytes) -> CollectorRegistry:
    """A registry of this process with a metric of the same name, type and
    label sets for every family the service exposed (its ``process_`` and
    ``python_`` collectors included), so that ``generate_latest`` of it costs
    what the service's own call costs, without HTTP or the service's loop."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in text_string_to_metric_families(exposition.decode()):
        if metric.type not in ("gauge", "counter", "histogram"):
            continue
        if metric.name.endswith("_created"):
            continue  # a counter's or histogram's, which makes its own again
        labelled = [
            sample for sample in metric.samples if sample.name.endswith("_count")
        ] if metric.type == "histogram" else [
            sample for sample in metric.samples if not sample.name.endswith("_created")
        ]  # fmt: skip
        names = sorted({name for sample in labelled for name in sample.labels})
        if metric.type == "gauge":
            gauge = Gauge(metric.name, metric.documentation, names, registry=registry)
            for sample in labelled:
                (gauge.labels(**sample.labels) if names else gauge).set(sample.value)
        elif metric.type == "counter":
            counter = Counter(
                metric.name, metric.documentation, names, registry=registry
            )
            for sample in labelled:
                (counter.labels(**sample.labels) if names else counter).inc(
                    sample.value
                )
        else:
            bounds = sorted(
                {
                    float(sample.labels["le"])
                    for sample in metric.samples
                    if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf"
                }
            )
            histogram = Histogram(
                metric.name,
                metric.documentation,
                names,
                registry=registry,
                buckets=bounds or Histogram.DEFAULT_BUCKETS,
            )
            for sample in labelled:
                child = histogram.labels(**sample.labels) if names else histogram
                child.observe(0.0)
    return registry


def probe_leads(leads: Sequence[Lead], options: Options) -> list[list[Lead]]:
    """Leads kept aside for the probes of each repetition, one per probe and
    a margin, at the end of the list: no other steady call goes to them."""
    wanted = math.ceil(options.probes_per_second * options.duration * 1.2) + 10
    end = len(leads)
    return [
        list(leads[end - (number + 1) * wanted : end - number * wanted])
        for number in range(options.repetitions)
    ]


class SteadyRun:
    """An open-loop producer of call events at ``rate``, probes among them,
    the prober, and the bare consumer beside it."""

    def __init__(
        self, bench: Bench, probes: list[Lead], others: Sequence[Lead], seed: int
    ) -> None:
        self._bench = bench
        self._options = bench.options
        self._probes = probes
        self._probe_keys = {lead.key: lead for lead in probes}
        self._others = others
        self._seed = seed
        self.window = bench.options.duration
        #: Wall-clock start of the timed window, to find its transactions.
        self.wall_start = 0.0
        #: Probe lead key → monotonic send time.
        self._sent_at: dict[bytes, float] = {}
        self.lags: list[float] = []
        self.raw_lags: list[float] = []
        self.missed = 0
        self.polls = 0
        self.poll_latencies: list[float] = []
        self.sent = 0
        self.applied = 0
        self.errors = 0
        self.first_error = ""
        self.cpu: dict[str, float] = {}
        self._delay_before: dict[float, float] = {}
        self._delay_after: dict[float, float] = {}
        self._probers: list[asyncio.Task[None]] = []

    async def run(self, attempts: dict[int, int]) -> None:
        """``attempts``: calls made so far per lead index, where not in the
        backlog alone; updated with this run's."""
        bench = self._bench
        producer = make_producer(
            MetricsSettings(kafka_bootstrap_servers=bench.endpoints.bootstrap),
            client_id="redial-bench-steady",
        )
        await producer.start()
        raw = AIOKafkaConsumer(
            TOPIC,
            bootstrap_servers=bench.endpoints.bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            max_poll_records=MAX_RECORDS,
        )
        await raw.start()
        raw_task: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(15):
                while not raw.assignment():
                    await asyncio.sleep(0.05)
                for tp in raw.assignment():
                    await raw.position(tp)
            raw_task = asyncio.create_task(self._read_raw(raw))
            await self._offer(producer, attempts)
            await asyncio.gather(*self._probers)
        finally:
            if raw_task is not None:
                raw_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await raw_task
            await raw.stop()
            await producer.stop()

    async def _offer(
        self, producer: AIOKafkaProducer, attempts: dict[int, int]
    ) -> None:
        options, bench = self._options, self._bench
        rng = random.Random(self._seed)
        events = bench.events
        interval = 1.0 / options.rate
        probe_every = 1.0 / options.probes_per_second
        start = time.monotonic()
        window_start = start + options.warmup
        end = window_start + options.duration
        self.wall_start = time.time() + options.warmup
        next_probe = window_start
        probes = iter(self._probes)
        number = 0
        cpu = bench.cpu_probe()
        in_window = False
        consumed_before = 0
        pending: list[asyncio.Future[Any]] = []
        while True:
            now = time.monotonic()
            if not in_window and now >= window_start:
                in_window = True
                cpu.start()
                self._delay_before = await self._delays()
                consumed_before = await bench.committed.total()
            if now >= end:
                break
            due = int((now - start) / interval) + 1
            while number < due:
                moment = time.time()
                if in_window and time.monotonic() >= next_probe:
                    next_probe += probe_every
                    lead = next(probes)
                    value = events.call(lead, len(lead.calls) + 1, moment)
                    sent = time.monotonic()
                    self._sent_at[lead.key] = sent
                    pending.append(
                        await producer.send(TOPIC, value=value, key=lead.key)
                    )
                    self._probers.append(asyncio.create_task(self._probe(lead, sent)))
                else:
                    lead = self._others[rng.randrange(len(self._others))]
                    attempt = attempts.get(lead.index, len(lead.calls)) + 1
                    attempts[lead.index] = attempt
                    value = events.call(lead, attempt, moment)
                    pending.append(
                        await producer.send(TOPIC, value=value, key=lead.key)
                    )
                number += 1
                if in_window:
                    self.sent += 1
            if len(pending) > 5000:
                await self._settle(pending)
                pending = []
            await asyncio.sleep(STEADY_TICK)
        self.cpu = cpu.stop()
        self._delay_after = await self._delays()
        self.applied = await bench.committed.total() - consumed_before
        await self._settle(pending)

    async def _settle(self, pending: list[asyncio.Future[Any]]) -> None:
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self.errors += 1
                self.first_error = self.first_error or repr(outcome)

    async def _probe(self, lead: Lead, sent: float) -> None:
        """Poll the lead's figures until its new call counts; the lag is from
        the send to the request that first saw it."""
        port = self._bench.service.port
        connection = HttpConnection("127.0.0.1", port)
        request = http_request(
            "GET", f"/v1/leads/{lead.lead_id}/penetration",
            host=f"127.0.0.1:{port}", headers={}, body=b"",
        )  # fmt: skip
        expected = len(lead.calls) + 1
        deadline = sent + 30.0
        try:
            while True:
                asked = time.monotonic()
                status, body = await connection.exchange(request)
                self.polls += 1
                if status != 200:
                    raise RequestFailed(status, body)
                if orjson.loads(body)["attempts"] >= expected:
                    self.lags.append(asked - sent)
                    return
                self.poll_latencies.append(time.monotonic() - asked)
                if asked > deadline:
                    self.missed += 1
                    return
                # Fine-grained while the figure is likely to appear, then
                # coarser, so that a late figure does not load the service.
                waited = asked - sent
                interval = self._options.probe_poll
                await asyncio.sleep(interval if waited < 2 else 2.5 * interval)
        except (OSError, RequestFailed, asyncio.IncompleteReadError) as error:
            self.errors += 1
            self.first_error = self.first_error or repr(error)
        finally:
            await connection.close()

    async def _read_raw(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_RECORDS
            )
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    key = record.key
                    if key in self._probe_keys and key in self._sent_at:
                        self.raw_lags.append(now - self._sent_at[key])

    async def _delays(self) -> dict[float, float]:
        port = self._bench.service.port
        connection = HttpConnection("127.0.0.1", port)
        try:
            status, body = await connection.exchange(
                http_request(
                    "GET", "/metrics", host=f"127.0.0.1:{port}", headers={}, body=b""
                )
            )
        finally:
            await connection.close()
        if status != 200:
            raise RequestFailed(status, body)
        return {
            float(bound): float(count) for bound, count in _DELAY_BUCKET.findall(body)
        }

    def delay_quantile(self, quantile: float) -> float:
        """The service's own publish → commit delay over the window, in ms,
        interpolated inside buckets as PromQL's histogram_quantile does."""
        return histogram_quantile(self._delay_before, self._delay_after, quantile)


# -- the run ----------------------------------------------------------------


async def measure(options: Options, endpoints: Endpoints, folder: Path) -> Bench:
    async with contextlib.AsyncExitStack() as cleanup:
        admin = await connect(
            endpoints.database_url, server_settings={"search_path": f"{SCHEMA},public"}
        )
        cleanup.push_async_callback(admin.close)
        committed = Committed(endpoints.bootstrap, GROUP)
        await committed.start(await topic_partitions(endpoints.bootstrap, TOPIC))
        cleanup.push_async_callback(committed.stop)
        service = RestartableService(SERVICE, endpoints.service_env(), folder)
        cleanup.callback(service.stop)
        rng = random.Random(20261203)
        now = time.time()
        say(f"… building {options.leads} leads and their {options.calls} calls")
        leads = make_leads(options, rng, now)
        events = Events(rng)
        check_events(leads, events)
        bench = Bench(
            options=options,
            endpoints=endpoints,
            admin=admin,
            committed=committed,
            service=service,
            postmaster=parent_of(await admin.fetchval("SELECT pg_backend_pid()")) or -1,
            leads=leads,
            events=events,
        )
        bench.facts["postgres"] = await admin.fetchval("SHOW server_version")
        bench.facts["shared_buffers"] = await admin.fetchval("SHOW shared_buffers")
        bench.facts["synchronous_commit"] = await admin.fetchval(
            "SHOW synchronous_commit"
        )
        say(f"… publishing {options.leads * 2 + options.calls} events")
        bench.published = await publish_backlog(endpoints, leads, events)
        for repetition in range(options.repetitions):
            await bench.raw_drain(repetition)
        for repetition in range(options.drains):
            await bench.drain(repetition)
        bench.facts["tables"] = await bench.table_facts()
        bench.facts["slot catch-up seconds"] = await bench.wait_slots_counted()
        await bench.steady()
        await bench.scrapes()
        service.check_alive()
        bench.facts["service warnings"] = service.complaints(_COMPLAINTS)
        return bench
    raise AssertionError("unreachable")


# -- the report ---------------------------------------------------------------


def figures(bench: Bench) -> list[Figure]:
    v = bench.samples.values
    options = bench.options
    published = bench.published
    assert published is not None
    events = amount(published.count)
    ratios = [statistics.median(v["service rate"]) / statistics.median(v["raw rate"])]
    offer = f"{amount(options.rate)} events/s offered"
    return [
        Figure(
            f"events/s applied, draining a backlog of {events}",
            "/s",
            v["service rate"],
            v["raw rate"],
            "bare aiokafka getmany loop",
            Target(RATE_TARGET, at_least=True),
        ),
        Figure(
            "drain rate ÷ bare consume rate",
            "",
            ratios,
            target=Target(RATIO_TARGET, at_least=True),
        ),
        Figure(
            f"publish → visible in GET /v1/leads/{{id}}/penetration p99, {offer}",
            "ms",
            v["lag p99"],
            v["raw lag p99"],
            "publish → bare consumer",
            Target(LAG_P99_TARGET_MS, at_least=False),
        ),
        Figure(
            f"publish → visible p50, {offer}",
            "ms",
            v["lag p50"],
            v["raw lag p50"],
            "publish → bare consumer",
        ),
        Figure(
            "publish → committed p99 (service's event-delay histogram)",
            "ms",
            v["delay p99"],
        ),
        Figure(
            f"GET /metrics p99 ({bench.facts['penetration label sets']} penetration"
            " label sets)",
            "ms",
            v["scrape p99"],
            v["render p99"],
            "generate_latest of the same families, in the bench",
            Target(SCRAPE_TARGET_MS, at_least=False),
        ),
        Figure(
            "GET /metrics p50",
            "ms",
            v["scrape p50"],
            v["render p50"],
            "generate_latest of the same families, in the bench",
            Target(SCRAPE_TARGET_MS, at_least=False),
        ),
        Figure(
            "one gauge refresh (MetricsService.refresh_gauges)",
            "ms",
            v["refresh"],
            v["bare refresh"],
            "one GROUP BY pool, source over 30 days of lead_days",
        ),
    ]


def report(bench: Bench, seconds: float, checkout: str) -> tuple[str, dict[str, Any]]:
    options = bench.options
    rows = figures(bench)
    mode = "--quick" if options.quick else "full"
    lines = [
        "# Metrics benchmark",
        "",
        f"{machine_line()}; {mode} run took {seconds:.0f} s, on {checkout}.",
        "",
        markdown_table(rows, value_header="metrics service"),
        "",
        *_notes(bench, rows),
    ]
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "options": {**options.__dict__, "json": str(options.json)},
        "published": None
        if bench.published is None
        else {
            "count": bench.published.count,
            "by_type": bench.published.by_type,
            "seconds": bench.published.seconds,
            "bytes": bench.published.bytes,
        },
        "facts": {k: v for k, v in bench.facts.items() if k != "progress"},
        "progress": bench.facts.get("progress", []),
        "figures": [row.as_json() for row in rows],
        "samples": dict(bench.samples.values),
        "errors": dict(bench.samples.errors),
        "first_errors": bench.samples.first_errors,
    }
    return "\n".join(lines), payload


def _cpu_of(bench: Bench, prefix: str) -> dict[str, float]:
    v = bench.samples.values
    names = ("metrics", "postgres", "broker", "bench", "other", "stolen", "machine")
    shares = {}
    for name in names:
        values = v.get(f"{prefix} cpu {name}")
        if values:
            shares[name] = statistics.median(values)
    return shares


def _notes(bench: Bench, rows: Sequence[Figure]) -> list[str]:
    options, v, facts = bench.options, bench.samples.values, bench.facts
    published = bench.published
    assert published is not None
    tables = facts["tables"]
    types = ", ".join(
        f"{amount(count)} {name}" for name, count in sorted(published.by_type.items())
    )
    raw_cpu = _cpu_of(bench, "raw")
    raw_cpu.pop("metrics", None)
    notes = [
        f"Medians of {options.repetitions} repetition(s), the service's drain of"
        f" the whole backlog {_times(options.drains)}; ratio = value ÷ baseline."
        " The machine is shared with other work, so single figures are noisy."
        f" PostgreSQL {facts['postgres']}, shared_buffers {facts['shared_buffers']},"
        f" synchronous_commit={facts['synchronous_commit']}; the metrics service is"
        " one uvicorn process (database pool ≤"
        f" {MetricsSettings().database_pool_max}); lead-events has"
        f" {len(published.starts)} partitions.",
        "",
        f"Backlog: {amount(published.count)} events ({types}), {options.leads}"
        f" leads over {POOLS} pools × {SOURCES} sources, cadence"
        f" {' '.join(_gap(gap) for gap in CADENCE)} with target {CALL_TARGET}, in"
        f" time order over the last {HISTORY.days} days;"
        f" {published.bytes / published.count:.0f} bytes an event on average,"
        f" published in {published.seconds:.0f} s"
        f" ({amount(published.per_second)}/s; acks=all, linger"
        f" {BACKLOG_LINGER_MS} ms) before anything consumed it.",
        "",
        "Drain: the service's rate counts every event applied (all three types),"
        " from the first batch's `processed_at` to the last's. It read"
        f" {spread(v['service events per batch'])} events per transaction on"
        " average (one transaction per partition batch of a `getmany` of at most"
        f" {MAX_RECORDS}), taking {spread(v['service seconds'])} s; by thirds of"
        f" the events, {spread(v['service rate third 1'])},"
        f" {spread(v['service rate third 2'])} and"
        f" {spread(v['service rate third 3'])} events/s. While it ran,"
        f" the slot counter counted due slots beside it (of {amount(v['slots'][-1])}"
        f" slots, {spread(v['slots counted at drain end'])} counted when the drain"
        " ended), as it would in production. The baseline reads the same"
        " partitions from the same offsets with the same poll size"
        f" (max_poll_records={MAX_RECORDS}) and commits nothing, in"
        f" {spread(v['raw seconds'])} s.",
        "",
        f"Tables after the last drain: {_table_line(tables)}; lead_days rows in"
        f" the 30-day window {amount(facts['lead_days in 30d'])}. The slot counter"
        f" had every due slot counted {facts['slot catch-up seconds']:.0f} s after"
        " the drain ended.",
        "",
        f"Freshness: {options.warmup:g} s warm-up, then {options.duration:g} s"
        f" timed, call events offered on a fixed schedule at {options.rate:g}/s"
        f" (what is due sent every {STEADY_TICK * 1000:.0f} ms; achieved"
        f" {spread(v['offered'])}/s, service applied"
        f" {spread(v['steady applied'])}/s in the window) on random leads of the"
        f" backlog; {options.probes_per_second:g} a second are probes on leads"
        f" that get no other call.{_behind(v)} Each probe is timed from just before its"
        " `producer.send` (linger 2 ms, acks=all, as the outbox relay sends) to"
        " the start of the first `GET /v1/leads/{id}/penetration` whose"
        f" `attempts` includes it, polling every {options.probe_poll * 1000:.0f} ms"
        f" for the first 2 s and every {options.probe_poll * 2500:.0f} ms after"
        " that (so a figure is up to that much late; each poll is a request the"
        " service serves beside its consumer);"
        f" {spread(v['probes'])} probes timed, {spread(v['probes missed'])} not"
        f" seen within 30 s, {spread(v['probe polls'])} polls, each answered in"
        f" {spread(v['poll p50'])} ms (p50), {spread(v['poll p99'])} ms (p99)."
        " The baseline is the same probes"
        " from send to their arrival at a bare aiokafka consumer reading the"
        " stream at the same time. The consumer's poll: `getmany(timeout_ms="
        f"{POLL_TIMEOUT_MS}, max_records={MAX_RECORDS})`, which returns as soon as"
        " fetched records are there (the timeout only bounds an idle wait); the"
        " fetcher asks the broker with aiokafka's defaults (fetch_max_wait_ms=500,"
        " fetch_min_bytes=1). Each partition batch is then one transaction plus"
        " an offset commit before the next: in the window,"
        f" {spread(v['steady batches per second'])} transactions a second of"
        f" {spread(v['steady events per batch'])} events each. The service's own"
        " view, p50"
        f" {spread(v['delay p50'])} ms, is `redial_metrics_event_delay_seconds`"
        " over the window (event `time` = send time → commit), quantiles"
        " interpolated inside its buckets. Upstream of this, the queue's outbox"
        " relay polls every 0.2 s, which a real call also waits.",
        "",
        f"/metrics: {options.scrapes} GETs back to back on one keep-alive"
        " connection once the service's gauges covered every pool × source in"
        f" every window ({facts['exposition lines']} lines,"
        f" {facts['exposition bytes'] / 1000:.0f} kB); GET /healthz the same way:"
        f" p50 {spread(v['healthz p50'])} ms, p99 {spread(v['healthz p99'])} ms."
        " The baseline is `generate_latest` in the bench's process over a"
        " registry holding a metric of the same name, type and label sets for"
        " every family scraped, all rendered on each call (prometheus_client's"
        " own cost, without HTTP, the service's loop or the service's cache of"
        " the recomputed gauges, which it renders once per refresh; 50 renders"
        " a repetition). The gauge refresh is"
        " timed"
        " in the bench's process (the same code and SQL on the same tables) since"
        " the service logs no timing; it runs every"
        f" {_GAUGE_SECONDS:g} s (METRICS_GAUGE_SECONDS) in the service.",
        "",
        "CPU, medians:",
        "",
        f"- service drain: {describe_cpu(_cpu_of(bench, 'service'))}",
        f"- bare drain (baseline): {describe_cpu(raw_cpu)}",
        f"- steady offer: {describe_cpu(_cpu_of(bench, 'steady'))}",
        f"- GET /metrics back to back: {describe_cpu(_cpu_of(bench, 'scrape'))}",
        "",
        "Each repetition (value; baseline):",
        "",
    ]
    notes += repetition_lines(rows)
    errors = bench.samples.error_lines()
    notes += ["", *(errors or ["No errors."])]
    complaints = facts.get("service warnings") or {}
    notes += [
        "",
        "The service's logs (every start) mention: "
        + ", ".join(f"`{name}` × {count}" for name, count in complaints.items())
        + "."
        if complaints
        else "The service logged no retries, failures or dead letters.",
    ]
    return notes


def _behind(v: dict[str, list[float]]) -> str:
    """A warning when the service did not keep up with the steady offer."""
    offered, applied = v.get("offered"), v.get("steady applied")
    if not offered or not applied:
        return ""
    if statistics.median(applied) >= 0.95 * statistics.median(offered):
        return ""
    return (
        " **The service fell behind the offer**: its queue, and so the lag, grew"
        " through each window, so the latencies below are those of a growing"
        " backlog (they rise with the window's length), not of a steady state."
    )


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _table_line(tables: dict[str, float]) -> str:
    parts = []
    for table in (*_TABLES.split(", "), "processed_events"):
        parts.append(
            f"{table} {amount(tables[f'{table} rows'])} rows"
            f" ({tables[f'{table} MB']:.0f} MB)"
        )
    return ", ".join(parts)


def _gap(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}"


# -- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    return run_bench(
        "metrics",
        lambda endpoints, workdir: measure(options, endpoints, workdir),
        report,
        options.json,
    )


if __name__ == "__main__":
    sys.exit(main())
