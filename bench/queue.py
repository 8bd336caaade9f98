"""The queue's next-lead → outcome cycle through HTTP, beside a bare SKIP LOCKED loop.

    .venv/bin/python -m bench.queue [--quick] [--sizes 10000,1000000]
        [--agents 200] [--copies 1,2] [--seconds 8] [--repeats 3] [--json PATH]

Starts embedded PostgreSQL and Tansu (unless ``DATABASE_URL`` /
``KAFKA_BOOTSTRAP_SERVERS`` name servers to use), runs the queue as its own
uvicorn process, the way production runs it, and creates one pool and its
agents through the API. With ``--copies``, the queue runs as that many
uvicorn processes on their own ports against the same database and broker,
as production scales out, and the agents are dealt out evenly over them (a
comma list measures each count in turn). Then, for each pool size:

* loads that many ready leads, with their ``phones`` rows, straight into the
  queue's tables with one ``INSERT … SELECT`` (not through Kafka), spread over
  20 time zones whose calling window is open now, then VACUUM ANALYZE;
* gives a scratch table the same number of rows and an index like
  ``leads_ready_by_priority``;
* captures ``EXPLAIN (ANALYZE, BUFFERS)`` of the lease statement, under the
  generic plan a pooled connection settles on and under a custom one, in a
  transaction that is rolled back, before and after the runs;
* repeats (three times; once with ``--quick``): every agent looping
  next-lead → outcome over its own keep-alive connection, back to back
  (closed loop: capacity) and then at a steady offer (open loop: latency),
  once per copy count with exactly that many copies running; and beside
  them the baseline (closed, then at each of those offers, beside the fewest
  copies asked for, idle), as many clients looping a one-statement
  ``SELECT … FOR UPDATE SKIP LOCKED`` lease and a one-statement completion on
  the scratch table through an asyncpg pool as big as one copy's.

The pool's cadence is a single zero gap and its call target high, so an
outcome puts the lead straight back among the ready ones as a retry: the
number of ready leads stays at the size being measured for the whole run (at
10 000 leads a run would otherwise use up the pool in seconds). The
baseline's completion does the same to its row. The medians go to stdout and
``bench/results/queue.md``, with the plans. When ``DATABASE_URL`` names a
server that preloads pg_stat_statements and has the extension in that
database, the report also lists what each statement cost per lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import uvloop

from bench._common import (
    EXCHANGES,
    CpuProbe,
    Endpoints,
    Figure,
    HttpConnection,
    RequestFailed,
    Run,
    Samples,
    Target,
    amount,
    close_all,
    closed_loop,
    describe_cpu,
    family,
    free_port,
    histogram_quantile,
    http_request,
    machine_line,
    markdown_table,
    median_shares,
    open_loop,
    parent_of,
    percentile,
    repetition_lines,
    running_service,
    running_stack,
    spread,
    start_healthy,
    tail,
    write_results,
)
from services.queue.repository import _LEASE_SQL, LEAD_COLUMNS
from services.queue.schemas import Hours, PoolRules, Window
from services.queue.settings import QueueSettings
from shared.compliance import FEDERAL_HOURS, callable_window
from shared.db import connect, create_pool
from shared.launcher.stack import ServiceProcess

POOL = "bench"
SCHEMA = "queue"
BASELINE_SCHEMA = "bench_queue_baseline"
ZONE_COUNT = 20
#: A zone is used only if its calling window opened this long ago and stays
#: open at least this long, so the whole run happens inside it.
ZONE_OPEN_FOR = dt.timedelta(minutes=5)
ZONE_OPEN_AHEAD = dt.timedelta(minutes=60)
#: Where places with people to call are (not Etc/, Antarctica/ or old aliases
#: such as US/ and Canada/).
_ZONE_AREAS = frozenset(
    {
        "Africa",
        "America",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
    }
)
#: Real area codes; the phone number space is area × exchange × line.
AREA_CODES = (
    "212", "213", "214", "305", "312", "404", "415", "503", "512", "602",
    "617", "702", "713", "720", "801", "813", "816", "904", "919", "971",
)  # fmt: skip
FIRST_NAMES = ("Maria", "James", "Aiko", "Olu", "Sofia", "Liam", "Priya", "Mateo")
LAST_NAMES = ("Garcia", "Smith", "Tanaka", "Adeyemi", "Rossi", "Novak", "Rao", "Kim")
#: Dispositions that count an attempt and re-plan the lead by cadence.
DISPOSITIONS = ("no_answer", "voicemail", "no_answer", "busy", "contacted")

#: The issue's targets (2 cores, everything on one machine).
CYCLES_TARGET = 1_500.0
NEXT_LEAD_P99_TARGET_MS = 15.0
RATIO_TARGET = 0.4
SIZE_SPREAD_TARGET = 20.0  # per cent, from the smallest to the largest pool

#: The rules of the bench pool: open all day every day (the law's 08:00-21:00
#: still applies), one zero gap repeated, a target no run reaches.
_ALL_DAY = Window(start=dt.time(0), end=dt.time(23, 59))
RULES = PoolRules(
    call_target=100,
    cadence=(0.0,),
    calling_hours=Hours(weekdays=_ALL_DAY, saturday=_ALL_DAY, sunday=_ALL_DAY),
    source_weights={"partner": 2.0},
)

# One row per lead, as the service's _enqueue and _schedule would have left it
# under RULES: 7 in 10 never called (class 0), the rest retries (class 2) with
# one to three attempts; queued over the last three days; due no later than
# now; open until their zone's window closes. planned_at is queued_at because
# every gap of the cadence is zero.
_LOAD_LEADS = f"""
INSERT INTO leads ({LEAD_COLUMNS})
SELECT
    gen_random_uuid(), $1, lead.source, 'spring-refi',
    ($2::text[])[1 + n % 8], ($3::text[])[1 + n / 8 % 8],
    '+1' || ($4::text[])[1 + n % 20]
        || ($5::text[])[1 + n / 20 / 10000] || lpad((n / 20 % 10000)::text, 4, '0'),
    'lead.' || n || '@example.org', NULL, NULL,
    ARRAY[($6::text[])[1 + n % $7]], lead.queued_at, lead.queued_at, 'ready',
    lead.attempts, $8, lead.last_call_at,
    CASE WHEN lead.last_call_at > $9::timestamptz - interval '50 hours'
         THEN ARRAY[lead.last_call_at] ELSE '{{}}'::timestamptz[] END,
    greatest(coalesce(lead.last_call_at, lead.queued_at),
             ($10::timestamptz[])[1 + n % $7]),
    ($11::timestamptz[])[1 + n % $7], NULL,
    CASE WHEN lead.attempts = 0 THEN 0 ELSE 2 END,
    lead.queued_at, floor(extract(epoch FROM lead.queued_at) / 300)::bigint,
    CASE WHEN lead.source = 'partner' THEN 2 ELSE 1 END,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, $9
FROM (
    -- random() in the select list keeps this subquery per row, not hoisted.
    SELECT n, $9::timestamptz - interval '3 days' * random() AS queued_at,
           random() AS share
    FROM generate_series($12::integer, $13::integer - 1) AS n
) AS drawn
CROSS JOIN LATERAL (
    SELECT
        CASE WHEN n % 10 < 6 THEN 'web' WHEN n % 10 < 9 THEN 'crm'
             ELSE 'partner' END AS source,
        drawn.queued_at,
        CASE WHEN n / 7 % 10 < 7 THEN 0 ELSE 1 + n % 3 END AS attempts,
        CASE WHEN n / 7 % 10 < 7 THEN NULL
             ELSE drawn.queued_at + ($9::timestamptz - drawn.queued_at) * drawn.share
        END AS last_call_at
) AS lead
"""
_LOAD_PHONES = """
INSERT INTO phones (phone, recent_calls, lifetime_calls)
SELECT phone, recent_calls, attempts FROM leads
"""
_QUEUE_TABLES = "leads, phones, leases, calls, lead_agents, dnc"

# The baseline: the least a SKIP LOCKED queue can do per cycle. One statement
# leases (the first ready row in priority order that nobody holds), one
# completes; each commits on its own, as next-lead and outcome each do.
_BASELINE_TABLE = f"""
CREATE TABLE {BASELINE_SCHEMA}.jobs (
    id bigint PRIMARY KEY,
    pool text NOT NULL,
    priority smallint NOT NULL,
    due_at timestamptz NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    phone text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email text NOT NULL,
    leased_by text,
    leased_until timestamptz,
    updated_at timestamptz NOT NULL
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
)
"""
_BASELINE_INDEX = f"""
CREATE INDEX jobs_ready ON {BASELINE_SCHEMA}.jobs (pool, priority, due_at, id)
WHERE state = 'ready'
"""
_LOAD_JOBS = f"""
INSERT INTO {BASELINE_SCHEMA}.jobs
    (id, pool, priority, due_at, state, attempts, phone, first_name, last_name,
     email, updated_at)
SELECT n, $1, CASE WHEN n / 7 % 10 < 7 THEN 0 ELSE 2 END,
       $2::timestamptz - interval '3 days' * random(), 'ready',
       CASE WHEN n / 7 % 10 < 7 THEN 0 ELSE 1 + n % 3 END,
       '+1' || (2000000000 + n)::text, 'Maria', 'Garcia',
       'lead.' || n || '@example.org', $2
FROM generate_series(0, $3 - 1) AS n
"""
_BARE_LEASE = """
WITH next AS (
    SELECT id FROM jobs
    WHERE pool = $1 AND state = 'ready'
    ORDER BY priority, due_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET state = 'leased', leased_by = $2,
    leased_until = now() + interval '120 seconds', updated_at = now()
FROM next WHERE jobs.id = next.id
RETURNING jobs.id, jobs.phone, jobs.first_name, jobs.last_name, jobs.email,
    jobs.attempts
"""
# Back among the ready rows as a retry, as the bench pool's outcome does.
_BARE_COMPLETE = """
UPDATE jobs SET state = 'ready', priority = 2, due_at = now(),
    attempts = attempts + 1, leased_by = NULL, leased_until = NULL,
    updated_at = now()
WHERE id = $1 AND state = 'leased'
"""

# Blocks read from cache or disk, so far, by the objects a lease walks.
_IO_COUNTERS = f"""
SELECT
    (SELECT idx_blks_hit + idx_blks_read FROM pg_statio_all_indexes
     WHERE indexrelid = '{SCHEMA}.leads_ready_by_priority'::regclass) AS ready_index,
    (SELECT heap_blks_hit + heap_blks_read FROM pg_statio_all_tables
     WHERE relid = '{SCHEMA}.leads'::regclass) AS leads_heap,
    (SELECT idx_blks_hit + idx_blks_read FROM pg_statio_all_indexes
     WHERE indexrelid = '{BASELINE_SCHEMA}.jobs_ready'::regclass) AS jobs_index,
    (SELECT heap_blks_hit + heap_blks_read FROM pg_statio_all_tables
     WHERE relid = '{BASELINE_SCHEMA}.jobs'::regclass) AS jobs_heap,
    (SELECT n_dead_tup FROM pg_stat_all_tables
     WHERE relid = '{SCHEMA}.leads'::regclass) AS leads_dead,
    (SELECT autovacuum_count FROM pg_stat_all_tables
     WHERE relid = '{SCHEMA}.leads'::regclass) AS leads_autovacuums
"""
_BACKLOG = f"SELECT count(*) FROM {SCHEMA}.outbox WHERE published_at IS NULL"
_HISTOGRAM = "redial_queue_next_lead_seconds_bucket"
_BUCKET = re.compile(rb"^" + _HISTOGRAM.encode() + rb"\{(.*)\} (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...]
    agents: int
    repetitions: int
    warmup: float
    duration: float
    baseline_connections: int
    quick: bool
    json: Path | None
    #: Copy counts of the queue to measure, ascending.
    copies: tuple[int, ...] = (1,)


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small pools, 1 repetition, 3 s runs"
    )
    parser.add_argument("--sizes", help="queued leads per measurement, comma-separated")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument(
        "--copies",
        default="1",
        help="queue processes sharing the agents, comma-separated counts (default 1)",
    )
    parser.add_argument("--seconds", type=float, help="timed window of each run")
    parser.add_argument("--repeats", type=int, help="repetitions per size")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args(argv)
    quick = bool(arguments.quick)
    default_sizes = "10000,50000" if quick else "10000,1000000"
    sizes = tuple(int(size) for size in (arguments.sizes or default_sizes).split(","))
    capacity = len(AREA_CODES) * len(EXCHANGES) * 10_000
    if min(sizes) < arguments.agents or max(sizes) > capacity:
        parser.error(f"sizes must lie between --agents and {capacity}")
    try:
        copies = tuple(sorted({int(count) for count in arguments.copies.split(",")}))
    except ValueError:
        parser.error("--copies takes whole numbers, comma-separated")
    if min(copies) < 1 or max(copies) > arguments.agents:
        parser.error("--copies must lie between 1 and --agents")
    return Options(
        sizes=tuple(sorted(sizes)),
        agents=arguments.agents,
        repetitions=arguments.repeats or (1 if quick else 3),
        warmup=1.0 if quick else 2.0,
        duration=arguments.seconds or (3.0 if quick else 8.0),
        # As many connections as the queue's own pool may open.
        baseline_connections=QueueSettings().database_pool_max,
        quick=quick,
        json=arguments.json,
        copies=copies,
    )


# -- time zones -------------------------------------------------------------


@dataclass(frozen=True)
class Zone:
    name: str
    opens_at: dt.datetime
    closes_at: dt.datetime


def open_zones(now: dt.datetime, count: int) -> list[Zone]:
    """``count`` zones whose calling window under RULES and the law is open
    now and stays open a while, one per UTC offset as far as they go."""
    hours = RULES.calling_hours.as_calling_hours()
    by_offset: dict[dt.timedelta, list[Zone]] = defaultdict(list)
    for name in sorted(zoneinfo.available_timezones()):
        if name.split("/")[0] not in _ZONE_AREAS:
            continue
        window = callable_window(now, [name], hours, FEDERAL_HOURS)
        if window is None or window[0] > now or window[1] < now + ZONE_OPEN_AHEAD:
            continue
        local = now.astimezone(zoneinfo.ZoneInfo(name))
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        opened = callable_window(midnight, [name], hours, FEDERAL_HOURS)
        if opened is None or opened[0] > now - ZONE_OPEN_FOR:
            continue
        offset = local.utcoffset() or dt.timedelta()
        by_offset[offset].append(Zone(name, opened[0], window[1]))
    picked: list[Zone] = []
    while len(picked) < count and any(by_offset.values()):
        for offset in sorted(by_offset):
            if by_offset[offset] and len(picked) < count:
                picked.append(by_offset[offset].pop(0))
    if len(picked) < count:
        raise RuntimeError(f"only {len(picked)} zones are inside calling hours now")
    return picked


# -- sessions ---------------------------------------------------------------


@dataclass
class Tally:
    """Per run: leases handed out (warm-up included), timed next-lead latencies,
    and how many next-lead calls found nothing due."""

    leases: int = 0
    next_lead: list[tuple[float, float]] = field(default_factory=list)
    empty: int = 0

    def timed(self, start: float, end: float) -> list[float]:
        """Latencies of the calls that started and ended inside [start, end)."""
        return [
            latency
            for sent, latency in self.next_lead
            if sent >= start and sent + latency < end
        ]


class CycleSession:
    """One agent's dialer: next-lead, then the outcome, on one connection."""

    def __init__(
        self, connection: HttpConnection, agent: str, host: str, tally: Tally
    ) -> None:
        self._connection = connection
        self._tally = tally
        self._next_lead = http_request(
            "POST", f"/v1/agents/{agent}/next-lead", host=host, headers={}, body=b""
        )
        self._host = host
        self._outcomes = [
            orjson.dumps({"disposition": disposition, "duration_seconds": 42})
            for disposition in DISPOSITIONS
        ]
        self._count = 0

    async def perform(self) -> int:
        sent = time.monotonic()
        status, body = await self._connection.exchange(self._next_lead)
        leased = time.monotonic()
        if status == 204:
            self._tally.empty += 1
        if status == 409 and b'"lease_id":"' in body:
            # The agent still holds a lease whose outcome failed: record it,
            # so one failure does not keep the agent out of the run.
            await self._connection.exchange(self._outcome(_lease_id(body)))
        if status != 200:
            raise RequestFailed(status, body)
        self._tally.leases += 1
        self._tally.next_lead.append((sent, leased - sent))
        status, body = await self._connection.exchange(self._outcome(_lease_id(body)))
        if status != 200:
            raise RequestFailed(status, body)
        return 1

    def _outcome(self, lease_id: str) -> bytes:
        self._count += 1
        return http_request(
            "POST",
            f"/v1/leases/{lease_id}/outcome",
            host=self._host,
            headers={"Content-Type": "application/json"},
            body=self._outcomes[self._count % len(self._outcomes)],
        )

    async def close(self) -> None:
        await self._connection.close()


def _lease_id(body: bytes) -> str:
    # The answer starts with the lease id; no need to parse the rest.
    start = body.index(b'"lease_id":"') + len(b'"lease_id":"')
    return body[start : start + 36].decode()


class BareSession:
    """The baseline's client: lease a row, complete it, through a shared pool."""

    def __init__(self, pool: asyncpg.Pool, agent: str, tally: Tally) -> None:
        self._pool = pool
        self._agent = agent
        self._tally = tally

    async def perform(self) -> int:
        sent = time.monotonic()
        row = await self._pool.fetchrow(_BARE_LEASE, POOL, self._agent)
        leased = time.monotonic()
        if row is None:
            self._tally.empty += 1
            raise RuntimeError("no ready row")
        self._tally.leases += 1
        self._tally.next_lead.append((sent, leased - sent))
        await self._pool.execute(_BARE_COMPLETE, row["id"])
        return 1

    async def close(self) -> None:
        pass  # the pool is closed by whoever made it


# -- the service's own view -------------------------------------------------


async def scrape_histogram(connection: HttpConnection, host: str) -> dict[float, float]:
    """Cumulative next-lead counts by upper bound, for leases that succeeded."""
    request = http_request("GET", "/metrics", host=host, headers={}, body=b"")
    status, body = await connection.exchange(request)
    if status != 200:
        raise RequestFailed(status, body)
    buckets: dict[float, float] = {}
    for labels, value in _BUCKET.findall(body):
        if b'result="leased"' in labels:
            bound = re.search(rb'le="([^"]+)"', labels)
            assert bound is not None
            buckets[float(bound[1])] = float(value)
    return buckets


class HistogramWatch:
    """Scrapes /metrics when the timed window opens and when it closes, on
    every copy, adding their buckets up (as ``sum by (le)`` would).

    Each scrape opens its own connection: uvicorn closes one left idle for
    five seconds, and the window is longer than that.
    """

    def __init__(self, services: Sequence[ServiceProcess]) -> None:
        self._ports = [service.port for service in services]
        self.before: dict[float, float] = {}
        self.after: dict[float, float] = {}

    async def watch(self, window_start: float, window_end: float) -> None:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        self.before = await self._scrape()
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        self.after = await self._scrape()

    async def _scrape(self) -> dict[float, float]:
        total: dict[float, float] = defaultdict(float)
        for histogram in await asyncio.gather(*map(self._scrape_one, self._ports)):
            for bound, count in histogram.items():
                total[bound] += count
        return dict(total)

    @staticmethod
    async def _scrape_one(port: int) -> dict[float, float]:
        connection = HttpConnection("127.0.0.1", port)
        try:
            return await scrape_histogram(connection, f"127.0.0.1:{port}")
        finally:
            await connection.close()

    def quantile(self, quantile: float) -> float:
        return histogram_quantile(self.before, self.after, quantile)


# -- the queue's copies -----------------------------------------------------


class QueueCopies:
    """The queue's running copies, each its own uvicorn process on its own
    port against the same database and broker.

    The first is started before the bench and stays up throughout (it is the
    outbox relay's leader, having taken the lock first); ``scale`` starts or
    stops the others, the last started first to go.
    """

    def __init__(
        self, first: ServiceProcess, log_path: Path, env: dict[str, str]
    ) -> None:
        self._env = env
        self._folder = log_path.parent
        self.services = [first]
        self.logs = [log_path]

    def __len__(self) -> int:
        return len(self.services)

    async def scale(self, count: int) -> None:
        if count == len(self.services):
            return
        print(f"… {copies_text(count)} of the queue", file=sys.stderr, flush=True)
        while len(self.services) > count:
            service = self.services.pop()
            self.logs.pop()
            await asyncio.to_thread(service.stop)
        while len(self.services) < count:
            log_path = self._folder / f"queue-{len(self.services) + 1}.log"
            service = ServiceProcess("queue", free_port(), self._env, log_path)
            # Listed before it starts, so that stop_extra stops it after an error.
            self.services.append(service)
            self.logs.append(log_path)
            await asyncio.to_thread(start_healthy, service, log_path)

    def stop_extra(self) -> None:
        """Every copy but the first, whose starter stops it."""
        for service in self.services[1:]:
            service.stop()
        del self.services[1:], self.logs[1:]

    def pids(self) -> list[int]:
        return [
            service.process.pid if service.process is not None else -1
            for service in self.services
        ]


def copies_text(count: int) -> str:
    return f"{count} cop{'y' if count == 1 else 'ies'}"


# -- plans ------------------------------------------------------------------


@dataclass
class Plan:
    """One EXPLAIN (ANALYZE, BUFFERS) of a statement, rolled back."""

    label: str
    text: str
    shared_hit: int
    shared_read: int
    milliseconds: float
    planning_milliseconds: float


async def explain(
    admin: asyncpg.Connection,
    label: str,
    schema: str,
    sql: str,
    *arguments: Any,
    generic: bool = False,
) -> Plan:
    """Runs ``sql`` under EXPLAIN twice, as JSON for the figures and as text
    for the report, each in a transaction rolled back afterwards.

    ``generic``: as a prepared statement under its generic plan, which is what
    a pooled connection runs once PostgreSQL stops planning it per execution
    (after five executions, when the generic plan costs no more).
    """
    options = "ANALYZE, BUFFERS"
    document = await _rolled_back(
        admin, schema, f"{options}, FORMAT JSON", sql, arguments, generic
    )
    text = await _rolled_back(admin, schema, options, sql, arguments, generic)
    top = document[0][0][0]
    hit, read = _statement_buffers(top["Plan"])
    return Plan(
        label=label,
        text="\n".join(row[0] for row in text),
        shared_hit=hit,
        shared_read=read,
        milliseconds=float(top["Execution Time"]),
        planning_milliseconds=float(top.get("Planning Time", 0.0)),
    )


def _statement_buffers(plan: dict[str, Any]) -> tuple[int, int]:
    """Buffers of the whole statement.

    A node's counts include the nodes below it, except data-modifying CTEs
    that nothing reads: PostgreSQL runs those after the main query, outside
    any node's instruments, so they are added here.
    """
    hit, read = plan["Shared Hit Blocks"], plan["Shared Read Blocks"]
    referenced = _cte_scans(plan)
    for child in plan.get("Plans", []):
        name = child.get("Subplan Name", "")
        if name.startswith("CTE ") and name[4:] not in referenced:
            hit += child["Shared Hit Blocks"]
            read += child["Shared Read Blocks"]
    return hit, read


def _cte_scans(plan: dict[str, Any]) -> set[str]:
    names = {plan["CTE Name"]} if plan.get("Node Type") == "CTE Scan" else set()
    for child in plan.get("Plans", []):
        names |= _cte_scans(child)
    return names


async def _rolled_back(
    admin: asyncpg.Connection,
    schema: str,
    options: str,
    sql: str,
    arguments: Sequence[Any],
    generic: bool,
) -> Any:
    prepared = False
    transaction = admin.transaction()
    await transaction.start()
    try:
        await admin.execute(f"SET LOCAL search_path = {schema}, public")
        if not generic:
            return await admin.fetch(f"EXPLAIN ({options}) {sql}", *arguments)
        await admin.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await admin.execute(f"PREPARE bench_plan AS {sql}")
        prepared = True
        # EXECUTE takes no parameters of its own: the values go in as literals.
        values = ", ".join(_literal(argument) for argument in arguments)
        return await admin.fetch(f"EXPLAIN ({options}) EXECUTE bench_plan({values})")
    finally:
        await transaction.rollback()
        if prepared:  # a rollback does not undo PREPARE
            await admin.execute("DEALLOCATE bench_plan")


def _literal(value: Any) -> str:
    """A SQL literal for the few kinds of values the bench's statements take."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    if isinstance(value, float):
        return f"{value!r}::float8"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return f"ARRAY[{', '.join(_literal(item) for item in value)}]::text[]"
    if isinstance(value, list) and all(isinstance(item, float) for item in value):
        return f"ARRAY[{', '.join(repr(item) for item in value)}]::float8[]"
    raise TypeError(f"no literal for {value!r}")


async def lease_plans(admin: asyncpg.Connection, agent: str, when: str) -> list[Plan]:
    """The service's lease statement as it would run for ``agent`` now, under
    its generic plan and a custom one, and the baseline's, on the tables as
    they stand."""
    now = dt.datetime.now(dt.UTC)
    lease_arguments = (
        agent,
        now,
        uuid.uuid4(),
        [POOL],
        [float(RULES.lease_seconds)],
        float(PoolRules().lease_seconds),
    )
    return [
        await explain(
            admin,
            f"queue lease statement, generic plan, {when}",
            SCHEMA,
            _LEASE_SQL,
            *lease_arguments,
            generic=True,
        ),
        await explain(
            admin,
            f"queue lease statement, custom plan, {when}",
            SCHEMA,
            _LEASE_SQL,
            *lease_arguments,
        ),
        await explain(
            admin,
            f"baseline lease, generic plan, {when}",
            BASELINE_SCHEMA,
            _BARE_LEASE,
            POOL,
            agent,
            generic=True,
        ),
    ]


# -- statements -------------------------------------------------------------

# Only read when the server preloads pg_stat_statements and the database has
# the extension (the embedded server does not): a diagnosis, not a figure.
_STATEMENTS = """
SELECT calls, total_exec_time, total_plan_time, plans,
       shared_blks_hit + shared_blks_read AS blocks, wal_bytes, query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND calls > 0
ORDER BY total_exec_time + total_plan_time DESC
LIMIT 15
"""


@dataclass(frozen=True)
class Statement:
    """One statement's share of a run, per lease made."""

    query: str
    calls: float
    exec_ms: float
    plan_ms: float
    blocks: float
    wal_bytes: float


async def _statements_readable(admin: asyncpg.Connection) -> bool:
    installed = await admin.fetchval(
        "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
    )
    if not installed:
        return False
    try:
        await admin.fetchval("SELECT count(*) FROM pg_stat_statements")
    except asyncpg.PostgresError:
        return False
    return True


async def reset_statements(admin: asyncpg.Connection) -> None:
    if await _statements_readable(admin):
        await admin.execute("SELECT pg_stat_statements_reset()")


async def statement_stats(admin: asyncpg.Connection, leases: int) -> list[Statement]:
    """The costliest statements since the reset, per lease; empty if unknown."""
    if not leases or not await _statements_readable(admin):
        return []
    rows = await admin.fetch(_STATEMENTS)
    return [
        Statement(
            query=" ".join(row["query"].split()),
            calls=row["calls"] / leases,
            exec_ms=row["total_exec_time"] / leases,
            plan_ms=row["total_plan_time"] / leases,
            blocks=row["blocks"] / leases,
            wal_bytes=float(row["wal_bytes"]) / leases,
        )
        for row in rows
    ]


# -- setting up -------------------------------------------------------------


def agent_name(index: int) -> str:
    return f"bench-agent-{index:04d}"


async def api_call(
    connection: HttpConnection, host: str, method: str, path: str, document: Any
) -> None:
    request = http_request(
        method,
        path,
        host=host,
        headers={"Content-Type": "application/json"},
        body=orjson.dumps(document),
    )
    status, body = await connection.exchange(request)
    if status not in (200, 201):
        raise RequestFailed(status, body)


async def create_pool_and_agents(service: ServiceProcess, agents: int) -> None:
    """The pool first, while it holds no leads (a changed pool re-plans all of
    them), then the agents, made available."""
    host = f"127.0.0.1:{service.port}"
    connection = HttpConnection("127.0.0.1", service.port)
    try:
        await api_call(
            connection, host, "PUT", f"/v1/pools/{POOL}", RULES.model_dump(mode="json")
        )
        for index in range(agents):
            agent = agent_name(index)
            team = {"pools": [POOL], "team": f"team-{index % 10}"}
            await api_call(connection, host, "PUT", f"/v1/agents/{agent}", team)
            status = {"status": "available"}
            await api_call(
                connection, host, "PUT", f"/v1/agents/{agent}/status", status
            )
    finally:
        await connection.close()


async def load(admin: asyncpg.Connection, dsn: str, size: int) -> dict[str, Any]:
    """Empties the queue's lead tables and the baseline's, fills both with
    ``size`` ready rows and leaves them vacuumed, analysed and checkpointed.

    The leads go in as two halves on two connections, beside the baseline's
    rows on a third: index upkeep, not generating rows, is what takes time.
    """
    now = dt.datetime.now(dt.UTC)
    zones = open_zones(now, ZONE_COUNT)
    began = time.monotonic()
    await admin.execute(f"TRUNCATE {_QUEUE_TABLES}")
    await admin.execute(
        "UPDATE agents SET status = 'available', status_at = $1, updated_at = $1"
        " WHERE agent_id LIKE 'bench-agent-%'",
        now,
    )
    await admin.execute(f"DROP TABLE IF EXISTS {BASELINE_SCHEMA}.jobs")
    await admin.execute(_BASELINE_TABLE)
    leads = (
        POOL,
        list(FIRST_NAMES),
        list(LAST_NAMES),
        list(AREA_CODES),
        [str(exchange) for exchange in EXCHANGES],
        [zone.name for zone in zones],
        len(zones),
        RULES.call_target,
        now,
        [zone.opens_at for zone in zones],
        [zone.closes_at for zone in zones],
    )
    half = size // 2
    await asyncio.gather(
        _on_own_connection(dsn, _LOAD_LEADS, *leads, 0, half),
        _on_own_connection(dsn, _LOAD_LEADS, *leads, half, size),
        _on_own_connection(dsn, _LOAD_JOBS, POOL, now, size),
    )
    await asyncio.gather(
        _on_own_connection(dsn, _LOAD_PHONES),
        _on_own_connection(dsn, _BASELINE_INDEX),
    )
    loaded = time.monotonic() - began
    for table in ("leads", "phones", "agents", f"{BASELINE_SCHEMA}.jobs"):
        await admin.execute(f"VACUUM ANALYZE {table}")
    await admin.execute("CHECKPOINT")
    return {
        "zones": zones,
        "load_seconds": loaded,
        "prepare_seconds": time.monotonic() - began,
        "leads_mb": await admin.fetchval(
            "SELECT pg_total_relation_size('leads') / 1048576.0::float8"
        ),
        "ready_index_mb": await admin.fetchval(
            "SELECT pg_relation_size('leads_ready_by_priority') / 1048576.0::float8"
        ),
    }


async def _on_own_connection(dsn: str, sql: str, *arguments: Any) -> None:
    """One loading statement on a connection of its own, without waiting for
    the WAL flush (a crash would only lose bench data)."""
    connection = await connect(
        dsn,
        server_settings={
            "search_path": f"{SCHEMA},public",
            "synchronous_commit": "off",
        },
    )
    try:
        await connection.execute(sql, *arguments)
    finally:
        await connection.close()


# -- runs -------------------------------------------------------------------


@dataclass
class Bench:
    """Runs against a started queue; one method per kind of run."""

    options: Options
    endpoints: Endpoints
    copies: QueueCopies
    admin: asyncpg.Connection
    #: The PostgreSQL server's postmaster, for the CPU probe.
    postmaster: int
    samples: Samples = field(default_factory=Samples)
    plans: dict[int, list[Plan]] = field(default_factory=dict)
    facts: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Per size (and copy count, see sample_key), the last closed-loop HTTP
    #: run's statements, when measurable.
    statements: dict[str, list[Statement]] = field(default_factory=dict)

    async def measure_size(self, size: int) -> None:
        print(f"… loading {size} leads", file=sys.stderr, flush=True)
        self.facts[size] = await load(self.admin, self.endpoints.database_url, size)
        self.plans[size] = await lease_plans(self.admin, agent_name(0), "fresh")
        copy_counts = self.options.copies
        for repetition in range(self.options.repetitions):
            print(f"… {size} leads, run {repetition + 1}", file=sys.stderr, flush=True)
            counters = await _io_counters(self.admin)
            leases = 0
            rates: dict[int, float] = {}
            for copies in copy_counts:
                await self.copies.scale(copies)
                key = sample_key(size, copies)
                await reset_statements(self.admin)
                closed = await self.http_run(size, copies, "http")
                self.statements[key] = await statement_stats(self.admin, closed)
                rates[copies] = rate = self.steady_rate(size, copies)
                self.samples.add(f"steady_{key}_offered", rate)
                leases += closed + await self.http_run(size, copies, "steady", rate)
            http_done = time.monotonic()
            # The baseline beside as few idle copies as were measured.
            await self.copies.scale(copy_counts[0])
            bare_leases = await self.bare_run(size, "bare")
            for copies in copy_counts:
                bare_leases += await self.bare_run(
                    size, "steady_bare", rates[copies], copies
                )
            # The service's backends report their block counts within ten
            # seconds of going idle (the baseline's, when their pool closes).
            await asyncio.sleep(max(0.0, http_done + 10.5 - time.monotonic()))
            after = await _io_counters(self.admin)
            self._add_blocks(size, counters, after, leases, bare_leases)
        self.plans[size] += await lease_plans(
            self.admin, agent_name(0), f"after {self.options.repetitions} run(s)"
        )

    def steady_rate(self, size: int, copies: int) -> float:
        """The open loop's offer: the issue's throughput, or half of what the
        closed loop managed so far at this size and copy count if that is less."""
        managed = statistics.median(
            self.samples.values[f"http_{sample_key(size, copies)}"]
        )
        return max(10.0, min(CYCLES_TARGET, managed / 2))

    async def http_run(
        self, size: int, copies: int, name: str, rate: float | None = None
    ) -> int:
        """Every agent's loop, back to back (closed) or at ``rate`` cycles/s
        (open), the agents dealt out in turn over the ``copies`` copies
        running; returns the leases it made, warm-up included."""
        services = self.copies.services
        assert len(services) == copies, (len(services), copies)
        await self.drain_outbox()
        tally = Tally()
        sessions = []
        try:
            for index in range(self.options.agents):
                port = services[index % copies].port
                connection = HttpConnection("127.0.0.1", port)
                await connection.open()
                host = f"127.0.0.1:{port}"
                sessions.append(
                    CycleSession(connection, agent_name(index), host, tally)
                )
            watch = HistogramWatch(services)
            window = self._window()
            run, _ = await asyncio.gather(
                self._loop(sessions, rate), watch.watch(*window)
            )
        finally:
            await close_all(sessions)
            self.check_alive()
        if run.errors and "service_log" not in self.facts[0]:
            self.facts[0]["service_log"] = "\n".join(
                tail(log_path, 12) for log_path in self.copies.logs
            )
        backlog, drained = await self.drain_outbox()
        kind = "closed loop" if rate is None else f"{amount(rate)} cycles/s offered"
        label = f"HTTP, {size} leads{self.copies_suffix(copies)}, {kind}"
        key = f"{name}_{sample_key(size, copies)}"
        self._add_run(label, key, run, tally.timed(*window), tally)
        samples = self.samples
        samples.add(f"{key}_service_p50", watch.quantile(0.50))
        samples.add(f"{key}_service_p99", watch.quantile(0.99))
        samples.add(f"{key}_backlog", backlog)
        samples.add(f"{key}_drain", drained)
        return tally.leases

    def copies_suffix(self, copies: int) -> str:
        return copies_suffix(self.options, copies)

    async def bare_run(
        self, size: int, name: str, rate: float | None = None, copies: int = 1
    ) -> int:
        """The baseline, as ``http_run``, through a pool made for the run;
        ``copies``: whose offer ``rate`` is, for the figure's name."""
        tally = Tally()
        pool = await create_pool(
            self.endpoints.database_url,
            schema=BASELINE_SCHEMA,
            min_size=self.options.baseline_connections,
            max_size=self.options.baseline_connections,
        )
        try:
            sessions = [
                BareSession(pool, agent_name(index), tally)
                for index in range(self.options.agents)
            ]
            window = self._window()
            run = await self._loop(sessions, rate)
        finally:
            # Closing the connections makes their backends report block counts.
            await pool.close()
        kind = "closed loop" if rate is None else f"{amount(rate)} cycles/s offered"
        if rate is not None and self.options.copies != (1,):
            kind += f" (the offer for {copies_text(copies)})"
        label = f"bare asyncpg, {size} rows, {kind}"
        key = f"{name}_{sample_key(size, copies)}"
        self._add_run(label, key, run, tally.timed(*window), tally)
        return tally.leases

    def _window(self) -> tuple[float, float]:
        """Where the timed window of a run starting now lies (monotonic): the
        drivers start their clock when called, right after this."""
        start = time.monotonic() + self.options.warmup
        return start, start + self.options.duration

    def _add_run(
        self, label: str, key: str, run: Run, latencies: list[float], tally: Tally
    ) -> None:
        """``latencies``: next-lead's (or the bare lease's) inside the window."""
        samples = self.samples
        samples.add_run(label, run)
        samples.add(key, run.operations_per_second)
        samples.add(f"{key}_p50", percentile(latencies, 0.50) * 1000)
        samples.add(f"{key}_p99", percentile(latencies, 0.99) * 1000)
        # Closed loop: a cycle from its start; open loop: from when it was due.
        samples.add(f"{key}_cycle_p99", run.latency_ms(0.99))
        samples.add(f"{key}_empty", tally.empty)

    def _add_blocks(
        self,
        size: int,
        before: asyncpg.Record,
        after: asyncpg.Record,
        leases: int,
        bare_leases: int,
    ) -> None:
        def per(name: str, count: int) -> float:
            if before[name] is None or after[name] is None or not count:
                return math.nan
            return (after[name] - before[name]) / count

        samples = self.samples
        samples.add(f"http_{size}_ready_index_blocks", per("ready_index", leases))
        samples.add(f"http_{size}_leads_heap_blocks", per("leads_heap", leases))
        samples.add(f"bare_{size}_index_blocks", per("jobs_index", bare_leases))
        samples.add(f"bare_{size}_heap_blocks", per("jobs_heap", bare_leases))
        samples.add(f"http_{size}_dead_tuples", after["leads_dead"] or 0)
        samples.add(
            f"http_{size}_autovacuums",
            (after["leads_autovacuums"] or 0) - (before["leads_autovacuums"] or 0),
        )

    async def _loop(self, sessions: Sequence[Any], rate: float | None) -> Run:
        if rate is None:
            return await closed_loop(
                sessions,
                warmup=self.options.warmup,
                duration=self.options.duration,
                cpu=self.cpu_probe(),
            )
        return await open_loop(
            sessions,
            rate=rate,
            warmup=self.options.warmup,
            duration=self.options.duration,
            cpu=self.cpu_probe(),
        )

    def cpu_probe(self) -> CpuProbe:
        """Our processes only, the queue's copies as they run now: the machine
        may run other servers of each kind."""
        return QueueCpuProbe(self.copies.pids(), self.postmaster)

    async def drain_outbox(self, timeout: float = 180.0) -> tuple[int, float]:
        """Wait until the queue's relay has published every event; returns the
        backlog found and how long it took to go."""
        started = time.monotonic()
        backlog = found = int(await self.admin.fetchval(_BACKLOG))
        while backlog:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"outbox still holds {backlog} events")
            await asyncio.sleep(0.1)
            backlog = int(await self.admin.fetchval(_BACKLOG))
        return found, time.monotonic() - started

    def check_alive(self) -> None:
        for number, (service, log_path) in enumerate(
            zip(self.copies.services, self.copies.logs, strict=True), start=1
        ):
            process = service.process
            if process is not None and process.poll() is not None:
                which = "queue" if len(self.copies) == 1 else f"queue copy {number}"
                raise RuntimeError(
                    f"{which} exited with {process.returncode}\n{tail(log_path)}"
                )


async def _io_counters(admin: asyncpg.Connection) -> asyncpg.Record:
    counters = await admin.fetchrow(_IO_COUNTERS)
    assert counters is not None  # one row, always
    return counters


async def measure(options: Options, endpoints: Endpoints, copies: QueueCopies) -> Bench:
    async with contextlib.AsyncExitStack() as cleanup:
        admin = await connect(
            endpoints.database_url, server_settings={"search_path": f"{SCHEMA},public"}
        )
        cleanup.push_async_callback(admin.close)
        await admin.execute(f"DROP SCHEMA IF EXISTS {BASELINE_SCHEMA} CASCADE")
        await admin.execute(f"CREATE SCHEMA {BASELINE_SCHEMA}")
        cleanup.push_async_callback(
            admin.execute, f"DROP SCHEMA IF EXISTS {BASELINE_SCHEMA} CASCADE"
        )
        await create_pool_and_agents(copies.services[0], options.agents)
        bench = Bench(
            options=options,
            endpoints=endpoints,
            copies=copies,
            admin=admin,
            postmaster=parent_of(await admin.fetchval("SELECT pg_backend_pid()")) or -1,
        )
        bench.facts[0] = {
            "postgres": await admin.fetchval("SHOW server_version"),
            "shared_buffers": await admin.fetchval("SHOW shared_buffers"),
            "synchronous_commit": await admin.fetchval("SHOW synchronous_commit"),
        }
        for size in options.sizes:
            await bench.measure_size(size)
        return bench
    raise AssertionError("unreachable")


class QueueCpuProbe(CpuProbe):
    """The groups every run reports, the queue's copies summed as ``queue``;
    with more than one copy, also each copy's share as ``queue copy N``, which
    ``other`` does not count a second time."""

    def __init__(self, copies: Sequence[int], postmaster: int) -> None:
        super().__init__(
            {
                "queue": lambda: [pid for copy in copies for pid in family(copy)],
                "postgres": lambda: family(postmaster, named="postgres"),
                "broker": lambda: family(os.getpid(), named="tansu"),
                "bench": lambda: [os.getpid()],
            }
        )
        self._several = len(copies) > 1
        self._each = CpuProbe(
            {
                f"queue copy {number}": functools.partial(family, pid)
                for number, pid in enumerate(copies, start=1)
            }
        )

    def start(self) -> None:
        super().start()
        if self._several:
            self._each.start()

    def stop(self) -> dict[str, float]:
        shares = super().stop()
        if not self._several:  # one copy: the shares as always
            return shares
        each = self._each.stop()
        return shares | {name: each[name] for name in each if name.startswith("queue")}


def describe_queue_cpu(shares: Mapping[str, float]) -> str:
    """As describe_cpu, each copy's share in brackets after the queue's sum."""
    copies = [name for name in shares if name.startswith("queue copy ")]
    if not copies:
        return describe_cpu(shares)
    text = describe_cpu({k: v for k, v in shares.items() if k not in copies})
    each = " + ".join(f"{shares[name]:.0f}" for name in copies)
    queue = f"queue {shares['queue']:.0f} %"
    return text.replace(queue, f"{queue} ({each} % by copy)", 1)


# -- report -----------------------------------------------------------------


def sample_key(size: int, copies: int) -> str:
    """What a run's samples are named after: the size, and the copy count
    unless it is one (``10000``, ``10000x2``)."""
    return str(size) if copies == 1 else f"{size}x{copies}"


def copies_suffix(options: Options, copies: int) -> str:
    """``, 2 copies`` for a figure's name, unless only one copy is measured."""
    return "" if options.copies == (1,) else f", {copies_text(copies)}"


def figures(samples: Samples, options: Options) -> list[Figure]:
    """Per size: throughput and its ratio, then next-lead latency at a steady
    offer, then what explains them, each for every copy count in turn; last,
    how throughput moves with size."""
    v = samples.values
    agents = options.agents
    bare_lease = "bare lease, same offer"
    rows: list[Figure] = []
    for size in options.sizes:
        leads = amount(size)
        by_copies = []
        for copies in options.copies:
            key, suffix = sample_key(size, copies), copies_suffix(options, copies)
            offers = v[f"steady_{key}_offered"]
            offered = amount(statistics.median(offers)) if offers else "—"
            http = Figure(
                f"cycles/s, {leads} leads, {agents} agents, closed loop (HTTP){suffix}",
                "/s",
                v[f"http_{key}"],
                v[f"bare_{size}"],
                "bare asyncpg SKIP LOCKED lease + complete",
                Target(CYCLES_TARGET, at_least=True),
            )
            by_copies.append(
                [
                    http,
                    Figure(
                        f"HTTP ÷ bare asyncpg, {leads} leads{suffix}",
                        "",
                        [] if http.ratio is None else [http.ratio],
                        target=Target(RATIO_TARGET, at_least=True),
                    ),
                    Figure(
                        f"next-lead p99, {leads} leads, {offered} cycles/s offered"
                        + suffix,
                        "ms",
                        v[f"steady_{key}_p99"],
                        v[f"steady_bare_{key}_p99"],
                        bare_lease,
                        Target(NEXT_LEAD_P99_TARGET_MS, at_least=False),
                    ),
                    Figure(
                        f"next-lead p50, {leads} leads, {offered} cycles/s offered"
                        + suffix,
                        "ms",
                        v[f"steady_{key}_p50"],
                        v[f"steady_bare_{key}_p50"],
                        bare_lease,
                    ),
                    Figure(
                        f"next-lead p99 in the service, {leads} leads, {offered}/s"
                        f" offered{suffix}",
                        "ms",
                        v[f"steady_{key}_service_p99"],
                    ),
                    Figure(
                        f"next-lead p99, {leads} leads, closed loop{suffix}",
                        "ms",
                        v[f"http_{key}_p99"],
                        v[f"bare_{size}_p99"],
                        "bare lease, closed loop",
                    ),
                    Figure(
                        f"next-lead p50, {leads} leads, closed loop{suffix}",
                        "ms",
                        v[f"http_{key}_p50"],
                        v[f"bare_{size}_p50"],
                        "bare lease, closed loop",
                    ),
                ]
            )
        # Each kind of figure for every copy count, then the next kind.
        rows += [figure for kind in zip(*by_copies, strict=True) for figure in kind]
    smallest, largest = options.sizes[0], options.sizes[-1]
    if smallest != largest:
        for copies in options.copies:
            small, large = sample_key(smallest, copies), sample_key(largest, copies)
            rows.append(
                Figure(
                    f"cycles/s change from {amount(smallest)} to"
                    f" {amount(largest)} leads{copies_suffix(options, copies)}",
                    " %",
                    [_change(v[f"http_{small}"], v[f"http_{large}"])],
                    [_change(v[f"bare_{smallest}"], v[f"bare_{largest}"])],
                    "same for bare asyncpg",
                    Target(SIZE_SPREAD_TARGET, at_least=False),
                )
            )
    return rows


def _change(small: Sequence[float], large: Sequence[float]) -> float:
    """|large ÷ small − 1| of the medians, in per cent."""
    if not small or not large:
        return math.nan
    return abs(statistics.median(large) / statistics.median(small) - 1) * 100


def report(bench: Bench, seconds: float) -> tuple[str, dict[str, Any]]:
    options, samples = bench.options, bench.samples
    rows = figures(samples, options)
    mode = "--quick" if options.quick else "full"
    lines = [
        "# Queue benchmark",
        "",
        f"{machine_line()}; {mode} run took {seconds:.0f} s.",
        "",
        markdown_table(rows),
        "",
        *_notes(bench, rows),
        "",
        *_statement_lines(bench),
        "## Lease plans",
        "",
        "`EXPLAIN (ANALYZE, BUFFERS)` of `repository._LEASE_SQL` for one available"
        " agent of the bench pool (and of the baseline's lease), each in a"
        " transaction rolled back; buffers are the whole statement's, shared"
        " blocks found in cache (hit) or not (read).",
        "",
    ]
    for size, plans in bench.plans.items():
        for plan in plans:
            lines += [
                f"### {amount(size)} leads: {plan.label} — {plan.shared_hit} hit,"
                f" {plan.shared_read} read; execution {plan.milliseconds:.2f} ms,"
                f" planning {plan.planning_milliseconds:.2f} ms",
                "",
                "```",
                plan.text,
                "```",
                "",
            ]
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "options": {**options.__dict__, "json": str(options.json)},
        "facts": {
            str(size): {k: v for k, v in facts.items() if k != "zones"}
            for size, facts in bench.facts.items()
        },
        "figures": [row.as_json() for row in rows],
        "samples": dict(samples.values),
        "cpu": {name: median_shares(shares) for name, shares in samples.cpu.items()},
        "plans": {
            str(size): [
                {
                    "label": plan.label,
                    "shared_hit": plan.shared_hit,
                    "shared_read": plan.shared_read,
                    "milliseconds": plan.milliseconds,
                    "planning_milliseconds": plan.planning_milliseconds,
                }
                for plan in plans
            ]
            for size, plans in bench.plans.items()
        },
        "statements": {
            key: [item.__dict__ for item in statements]
            for key, statements in bench.statements.items()
        },
        "errors": dict(samples.errors),
        "first_errors": samples.first_errors,
    }
    return "\n".join(lines), payload


def _notes(bench: Bench, rows: Sequence[Figure]) -> list[str]:
    options, samples, facts = bench.options, bench.samples, bench.facts
    v = samples.values
    server = facts[0]
    first = facts[options.sizes[0]]
    zones = ", ".join(zone.name for zone in first["zones"])
    per_count = "" if options.copies == (1,) else " and copy count"
    notes = [
        f"Medians of {options.repetitions} repetition(s) of {options.duration:g} s"
        f" after {options.warmup:g} s of warm-up; ratio = value ÷ baseline. The"
        " machine is shared with other work, so single figures are noisy."
        f" PostgreSQL {server['postgres']}, shared_buffers {server['shared_buffers']},"
        f" synchronous_commit={server['synchronous_commit']}. {_queue_line(options)}",
        "",
        f"Each agent loops next-lead → outcome on its own connection; outcomes"
        f" rotate over {', '.join(sorted(set(DISPOSITIONS)))}, each an attempt"
        " that re-plans the lead. The pool's cadence is one zero gap and its"
        f" target {RULES.call_target}, so the lead is ready again at once and the"
        " pool keeps its size through the run; the baseline's completion puts its"
        " row back the same way.",
        "",
        "Closed loop: every agent starts its next cycle as soon as the last one"
        " ends, which measures capacity; with no pause between cycles, each of"
        f" the {options.agents} agents waits its turn, so latency there is"
        f" {options.agents} ÷ throughput by Little's law and says nothing about"
        " the service's speed. Next-lead latency is therefore taken at a steady"
        " offer (open loop, as wrk2 sends): the issue's throughput, or half of"
        f" what the closed loop managed at that size{per_count} if that is less,"
        " spread over"
        " the agents; each cycle starts on schedule and its next-lead is timed"
        " from being sent to being answered (the cycle p99 below is counted from"
        " when it was due). The service's own figure is"
        ' `redial_queue_next_lead_seconds{result="leased"}` over the timed'
        " window, quantiles interpolated inside buckets as PromQL does.",
        "",
        f"Leads sit in {len(first['zones'])} zones inside their calling window"
        f" when loaded ({zones}); 7 in 10 never called, the rest retries with 1-3"
        " attempts; every lead has its own +1 number with a phones row.",
        "",
        "Loading, per size: "
        + "; ".join(
            f"{amount(size)} leads + as many baseline rows in"
            f" {facts[size]['load_seconds']:.0f} s, with VACUUM ANALYZE and"
            f" CHECKPOINT {facts[size]['prepare_seconds']:.0f} s (leads with"
            f" indexes {facts[size]['leads_mb']:.0f} MB, ready index"
            f" {facts[size]['ready_index_mb']:.1f} MB)"
            for size in options.sizes
        )
        + ".",
        "",
        "Blocks touched per lease during the runs (warm-up included; from"
        " pg_statio, so every statement of the cycle that reads them counts):",
        "",
    ]
    for size in options.sizes:
        runs = []
        for copies in options.copies:
            key = sample_key(size, copies)
            lead_in = (
                " Outbox"
                if options.copies == (1,)
                else f" With {copies_text(copies)}: outbox"
            )
            runs.append(
                f"{lead_in} backlog at the end of a closed-loop run"
                f" {spread(v[f'http_{key}_backlog'])} events, gone in"
                f" {spread(v[f'http_{key}_drain'])} s. At the steady offer:"
                f" answered {spread(v[f'steady_{key}'])} cycles/s (baseline"
                f" {spread(v[f'steady_bare_{key}'])}), cycle p99 from due time"
                f" {spread(v[f'steady_{key}_cycle_p99'])} ms (baseline"
                f" {spread(v[f'steady_bare_{key}_cycle_p99'])} ms), service p50"
                f" {spread(v[f'steady_{key}_service_p50'])} ms; closed loop,"
                f" service p99 {spread(v[f'http_{key}_service_p99'])} ms."
            )
        notes.append(
            f"- {amount(size)} leads: queue — leads_ready_by_priority"
            f" {spread(v[f'http_{size}_ready_index_blocks'])}, leads heap"
            f" {spread(v[f'http_{size}_leads_heap_blocks'])}; baseline — index"
            f" {spread(v[f'bare_{size}_index_blocks'])}, heap"
            f" {spread(v[f'bare_{size}_heap_blocks'])}. Dead lead tuples after"
            f" each repetition {spread(v[f'http_{size}_dead_tuples'])},"
            " autovacuums of leads during it"
            f" {spread(v[f'http_{size}_autovacuums'])}." + "".join(runs)
        )
    notes += ["", "CPU during the timed windows, medians:", ""]
    notes += [
        f"- {name}: {describe_queue_cpu(median_shares(shares))}"
        for name, shares in samples.cpu.items()
    ]
    notes += ["", "Each repetition (value; baseline):", ""]
    notes += repetition_lines(rows)
    errors = samples.error_lines()
    notes += ["", *(errors or ["No errors."])]
    if errors and facts[0].get("service_log"):
        notes += [
            "",
            "The end of the queue's log (each copy's) after the first run with errors:",
            "",
            "```",
            facts[0]["service_log"],
            "```",
        ]
    return notes


def _queue_line(options: Options) -> str:
    pool = options.baseline_connections
    baseline = (
        f"the baseline's pool has {pool} connections for its {options.agents} clients."
    )
    if options.copies == (1,):
        return (
            f"The queue is one uvicorn process (database pool ≤ {pool}, outbox"
            f" relay, scheduler and consumer inside it); {baseline}"
        )
    counts = ", ".join(str(copies) for copies in options.copies)
    return (
        f"The queue runs as {counts} uvicorn processes in turn, each on its own"
        f" port against the same database and broker (each with a database pool"
        f" ≤ {pool}, its scheduler and its consumer in the group; the first"
        " copy, up throughout, leads the outbox relay), the agents dealt out in"
        " turn over the copies; at each steady offer the baseline runs at the"
        f" same offer, beside {copies_text(options.copies[0])} left idle;"
        f" {baseline}"
    )


def _statement_lines(bench: Bench) -> list[str]:
    """pg_stat_statements over the last closed-loop run of each size, if read."""
    if not any(bench.statements.values()):
        return []
    lines = [
        "## Statements per lease",
        "",
        "From pg_stat_statements over the last closed-loop HTTP run of each size"
        " (warm-up included), divided by the leases made: every statement the"
        " queue process ran, its relay, scheduler and consumer included.",
        "",
    ]
    for key, statements in bench.statements.items():
        size, _, copies = key.partition("x")
        heading = f"{amount(int(size))} leads"
        if bench.options.copies != (1,):
            heading += copies_suffix(bench.options, int(copies or 1))
        lines += [
            f"### {heading}",
            "",
            "| calls | exec ms | plan ms | blocks | WAL bytes | statement |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {item.calls:.2f} | {item.exec_ms:.3f} | {item.plan_ms:.3f} |"
            f" {item.blocks:.1f} | {item.wal_bytes:.0f} |"
            f" `{item.query[:90].replace('|', '/')}` |"
            for item in statements
        ]
        lines.append("")
    return lines


# -- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    # SIGTERM takes the same way out as Ctrl-C, so everything started stops.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    began = time.monotonic()
    try:
        bench = run_stack(options)
    except KeyboardInterrupt:
        print("interrupted; everything started has been stopped", file=sys.stderr)
        return 130
    markdown, payload = report(bench, time.monotonic() - began)
    print(markdown)
    path = write_results("queue", markdown, payload, options.json)
    print(f"\nwritten to {path}", file=sys.stderr)
    return 0


def run_stack(options: Options) -> Bench:
    with tempfile.TemporaryDirectory(prefix="redial-bench-") as folder:
        workdir = Path(folder)
        with running_stack(workdir) as endpoints:
            log_path = workdir / "queue.log"
            env = endpoints.service_env()
            with (
                running_service("queue", env, log_path) as service,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                copies = QueueCopies(service, log_path, env)
                try:
                    return runner.run(measure(options, endpoints, copies))
                finally:
                    copies.stop_extra()


if __name__ == "__main__":
    sys.exit(main())
