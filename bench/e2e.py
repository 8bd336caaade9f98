"""Speed to lead through intake and the queue, beside the event delivery in it.

    .venv/bin/python -m bench.e2e [--quick] [--rate 200] [--agents 100]
        [--poll-interval 1.0] [--seconds 45] [--repeats 3] [--env NAME=VALUE ...]
        [--json PATH]

Speed to lead is measured here as the system's own part of it: from intake's
202 for a lead to that lead coming back in the answer to ``POST
/v1/agents/{agent}/next-lead`` of an agent who was waiting for work.

Starts embedded PostgreSQL and Tansu (unless ``DATABASE_URL`` /
``KAFKA_BOOTSTRAP_SERVERS`` name servers to use), provisions an intake source
with the operator CLI and runs intake and the queue, each as its own uvicorn
process, the way production runs them. Metrics and nurture are not started:
they are not on the way from intake to an agent, and on two shared cores they
would only take CPU from it. Through the queue's API: one pool (cadence
``0s 1d``, calling hours open all day, so only the law's hours apply), routing
that sends every lead to it, and the agents, made available. Lead phones are
in area codes whose calling window (the pool's and the law's, in the lead's
own time, as the queue computes it) is open now and stays open for the whole
run, US states first (see :func:`open_areas`).

Then, three times (once with ``--quick``):

* every agent polls next-lead on its own keep-alive connection: when it gets
  a lead it reports ``no_answer`` at once (the cadence's next gap is a day, so
  the lead does not come back during the run) and polls again; on a 204 it
  polls again after ``--poll-interval`` ± 50 %, drawn at random each time
  (and each agent starts at a random point of it), so the polls spread out.
  The report says how often a lead found every agent busy, and what the wait
  for a poll cost (see ``DEFAULT_AGENTS`` for why 100 agents and 1 s);
* leads are posted one per request at a steady rate (open loop, as
  ``bench.intake``'s steady run: request *k* is due at *k* ÷ rate);
* for each lead whose 202 came inside the timed window the bench records when
  the 202 arrived, when intake's relay sent its ``lead.received`` (the Kafka
  record's timestamp, read by a :class:`LagProbe`), when the queue's consumer
  started on it (the queue's ``queued_at``), when its row was committed in
  the queue (a NOTIFY sent by a trigger the bench puts on ``queue.leads`` for
  the run; PostgreSQL delivers it at commit), and when the next-lead request
  that returned it was sent and answered.

The baseline is the outbox-to-consumer lag of the same leads in the same run
(202 → committed in the queue's tables, where next-lead can find it): the part
of speed to lead that is event delivery. The rest is the wait for an agent's
poll and the next-lead request itself. The medians go to stdout and
``bench/results/e2e.md``.

Known shortcomings: the probes cost a little of what they measure (one
``pg_notify`` per lead inside the queue consumer's transaction, and one more
consumer of ``lead-events`` on the broker, in the bench's process); every
moment is when the bench's event loop saw it, which a loaded machine delays
by a few milliseconds; ``queued_at`` is taken once per consumer batch, so
"the consumer starts on it" means it starts the batch holding the lead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import math
import os
import random
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench._common import (
    EXCHANGES,
    CpuProbe,
    Endpoints,
    Figure,
    HttpConnection,
    LagProbe,
    RequestFailed,
    RestartableService,
    Run,
    Samples,
    Stock,
    Target,
    add_env_option,
    amount,
    close_all,
    describe_cpu,
    env_option,
    family,
    http_request,
    machine_line,
    markdown_table,
    median_shares,
    open_loop,
    parent_of,
    percentile,
    provision_source,
    repetition_lines,
    run_bench,
    say,
    spread,
)
from services.intake.schemas import LeadIn
from services.queue.schemas import Hours, PoolRules, Window
from shared.compliance import callable_window, rules_for
from shared.db import connect
from shared.events import LeadReceived
from shared.settings import LEAD_EVENTS_TOPIC, ServiceSettings

SOURCE = "e2e"
POOL = "e2e"
#: Where the bench's trigger function lives for the run (dropped at the end).
PROBE_SCHEMA = "bench_e2e"
CHANNEL = "bench_e2e_routed"

#: The issue's target (2 cores, everything on one machine).
SPEED_P99_TARGET_MS = 1_000.0

#: Open all day every day: the law's hours (federal, and the state's) still
#: apply. The second gap keeps a called lead away for the rest of the run.
_ALL_DAY = Window(start=dt.time(0), end=dt.time(23, 59))
RULES = PoolRules(
    cadence=(0.0, 86_400.0),
    calling_hours=Hours(weekdays=_ALL_DAY, saturday=_ALL_DAY, sunday=_ALL_DAY),
)
OUTCOME = orjson.dumps({"disposition": "no_answer", "duration_seconds": 0})

#: The queue's consumer commits leads in groups (p99 about 50-90 leads in
#: scratch runs at 200/s), so that many agents must be free at once for no
#: lead to wait for one; resting about a second after a 204 keeps their
#: empty polls near 100/s, a load the queue carries beside its consumer.
#: (Scratch runs on the shared machine, so noisy: 20 agents resting 0.25 s
#: left most leads waiting for a free agent; 100 resting 0.5 s and 200
#: resting 1 s made 125-175 empty polls/s, and their consumer fell further
#: behind, though other work on the machine may account for part of that.)
DEFAULT_AGENTS = 100
DEFAULT_POLL_INTERVAL = 1.0

#: Where lead phones may come from: US states across every US zone first,
#: then places that cover the hours when no US state may be called
#: (07:00-13:00 UTC): Guam, Puerto Rico, Canada, London, Tokyo. Numbers are
#: ``prefix`` + a three-digit block + a four-digit line.
CANDIDATES = (
    ("+1212", "New York"),
    ("+1404", "Atlanta"),
    ("+1305", "Miami"),
    ("+1312", "Chicago"),
    ("+1214", "Dallas"),
    ("+1303", "Denver"),
    ("+1602", "Phoenix"),
    ("+1415", "San Francisco"),
    ("+1503", "Portland"),
    ("+1907", "Anchorage"),
    ("+1808", "Honolulu"),
    ("+1787", "San Juan"),
    ("+1671", "Guam"),
    ("+1416", "Toronto"),
    ("+1604", "Vancouver"),
    ("+44207", "London"),
    ("+8135", "Tokyo"),
)
_BLOCKS = tuple(range(200, 900))
#: The lease an agent still holds, named in next-lead's 409 answer.
_HELD_LEASE = re.compile(rb'"lease_id":"([0-9a-f-]{36})"')
_LINES = 10_000


@dataclass(frozen=True)
class Options:
    rate: float
    agents: int
    poll_interval: float
    repetitions: int
    warmup: float
    duration: float
    #: After a window, how long the leads posted may still take to be leased.
    drain: float
    connections: int
    quick: bool
    json: Path | None
    #: Extra environment of both service processes (``--env``).
    env: dict[str, str] = field(default_factory=dict)


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition of a 10 s window"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="leads/s offered")
    parser.add_argument(
        "--agents",
        type=int,
        default=DEFAULT_AGENTS,
        help="available agents polling next-lead",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help="seconds an agent waits (± 50 %%) after a 204 before polling again",
    )
    parser.add_argument("--seconds", type=float, help="timed window of each run")
    parser.add_argument("--repeats", type=int, help="repetitions (default 3)")
    parser.add_argument(
        "--connections", type=int, default=32, help="connections posting leads"
    )
    add_env_option(parser, what="intake and the queue")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args(argv)
    quick = bool(arguments.quick)
    env = env_option(parser, arguments.env)
    if arguments.rate <= 0 or arguments.agents < 1 or arguments.poll_interval < 0:
        parser.error("--rate and --agents must be positive, --poll-interval ≥ 0")
    return Options(
        rate=arguments.rate,
        agents=arguments.agents,
        poll_interval=arguments.poll_interval,
        repetitions=arguments.repeats or (1 if quick else 3),
        warmup=2.0 if quick else 5.0,
        duration=arguments.seconds or (10.0 if quick else 45.0),
        drain=60.0,
        connections=arguments.connections,
        quick=quick,
        json=arguments.json,
        env=env,
    )


# -- where leads live -------------------------------------------------------


@dataclass(frozen=True)
class Area:
    """Phone numbers under one prefix, and where intake will place them."""

    prefix: str
    place: str
    country: str | None
    region: str | None
    timezones: tuple[str, ...]
    blocks: tuple[int, ...]
    closes_at: dt.datetime

    def describe(self) -> str:
        where = self.region or self.country or "?"
        zones = ", ".join(self.timezones)
        closes = self.closes_at.strftime("%H:%M UTC")
        return f"{self.prefix} {self.place} ({where}; {zones}; closes {closes})"


def _located(phone: str) -> tuple[str | None, str | None, tuple[str, ...]] | None:
    """Country, region and zones as intake infers them; None if invalid."""
    try:
        lead = LeadIn.model_validate({"phone": phone}, context={"region": "US"})
    except ValueError:
        return None
    located = lead.located("US")
    return located.country, located.region, tuple(located.timezones)


@functools.cache
def _numbering(
    prefix: str,
) -> tuple[tuple[str | None, str | None, tuple[str, ...]], tuple[int, ...]] | None:
    """Where intake places numbers under ``prefix``, and the blocks whose
    numbers it takes and places there; None if there are none."""
    blocks = _BLOCKS if not prefix.startswith("+1") else EXCHANGES
    first = _located(f"{prefix}{blocks[0]:03d}0000")
    if first is None or not first[2]:
        return None
    valid = tuple(
        block
        for block in blocks
        if _located(f"{prefix}{block:03d}0000") == first
        and _located(f"{prefix}{block:03d}9999") == first
    )
    return (first, valid) if valid else None


def _area(prefix: str, place: str, now: dt.datetime, until: dt.datetime) -> Area | None:
    """The area if intake takes its numbers and the queue may call them from
    ``now`` to ``until``, under the bench pool's hours and the law's."""
    numbering = _numbering(prefix)
    if numbering is None:
        return None
    (country, region, zones), valid = numbering
    legal_hours, _, _ = rules_for(country, region)
    pool_hours = RULES.calling_hours.as_calling_hours()
    window = callable_window(now, list(zones), pool_hours, legal_hours)
    if window is None or window[0] > now or window[1] < until:
        return None
    return Area(prefix, place, country, region, zones, valid, window[1])


def open_areas(now: dt.datetime, needed: dt.timedelta) -> list[Area]:
    """The candidate areas callable for ``needed`` from ``now``: those in US
    states if there are any (the law the queue tables most carefully), else
    the others."""
    areas = [
        area
        for prefix, place in CANDIDATES
        if (area := _area(prefix, place, now, now + needed)) is not None
    ]
    in_states = [area for area in areas if area.country == "US" and area.region]
    if in_states or areas:
        return in_states or areas
    raise RuntimeError(
        f"no candidate area may be called from {now:%H:%M} UTC for"
        f" {needed.total_seconds() / 60:.0f} minutes; add one to CANDIDATES"
    )


class Leads:
    """Lead documents of which no two share a phone number or an e-mail.

    Numbers walk each area's block × line space with a stride coprime to it
    from a random start, so the order looks random and no number comes twice.
    """

    def __init__(self, areas: Sequence[Area], rng: random.Random) -> None:
        self._areas = areas
        self._tag = f"{rng.getrandbits(32):08x}"
        self._walks = []
        for area in areas:
            space = len(area.blocks) * _LINES
            step = rng.randrange(space // 3, space)
            while math.gcd(step, space) != 1:
                step += 1
            self._walks.append((rng.randrange(space), step, space))
        self._count = 0

    def document(self) -> dict[str, Any]:
        index = self._count
        self._count += 1
        which, turn = index % len(self._areas), index // len(self._areas)
        area = self._areas[which]
        start, step, space = self._walks[which]
        if turn >= space:
            raise RuntimeError(f"every number under {area.prefix} has been used")
        block, line = divmod((start + turn * step) % space, _LINES)
        return {
            "first_name": "Maria",
            "last_name": "Garcia",
            "phone": f"{area.prefix}{area.blocks[block]:03d}{line:04d}",
            "email": f"e2e.{self._tag}.{index}@example.org",
            "campaign": "spring-refi",
            "consent": {"call": True, "sms": False, "email": True},
            "attributes": {"utm_source": "bench"},
        }


# -- clients ----------------------------------------------------------------


@dataclass
class Leased:
    """One lead handed to an agent: when the winning poll left and came back,
    and whether the agent had been resting after a 204 (else it came straight
    from its last call, or was starting)."""

    sent: float
    answered: float
    rested: bool


@dataclass
class Tally:
    """Every moment recorded, by lead id, as ``time.time()`` of the bench
    (the bench, the services and PostgreSQL share one clock)."""

    agents: int
    accepted: dict[str, float] = field(default_factory=dict)
    committed: dict[str, float] = field(default_factory=dict)
    leased: dict[str, Leased] = field(default_factory=dict)
    #: Leads that, when committed, found more leads ready and unclaimed
    #: (themselves included) than agents not holding a lead.
    crowded: set[str] = field(default_factory=set)
    #: Committed leads not leased yet.
    unclaimed: int = 0
    #: Every poll: when it was sent, and whether it found nothing (a 204).
    polls: list[tuple[float, bool]] = field(default_factory=list)
    duplicates: int = 0
    leased_twice: int = 0
    busy: int = 0
    most_busy: int = 0
    errors: int = 0
    first_error: str | None = None

    def record_error(self, error: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(error).__name__}: {error}"

    def routed(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        """The NOTIFY listener: the lead's row has just been committed."""
        lead_id = str(payload)
        if lead_id in self.committed:
            return
        self.committed[lead_id] = time.time()
        if lead_id in self.leased:
            return  # the lease's answer was read before the notification
        self.unclaimed += 1
        if self.unclaimed > self.agents - self.busy:
            self.crowded.add(lead_id)

    def lease(self, lead_id: str, leased: Leased) -> None:
        if lead_id in self.leased:
            self.leased_twice += 1
            return
        self.leased[lead_id] = leased
        if lead_id in self.committed:
            self.unclaimed -= 1


class PostSession:
    """Posts pre-built leads to intake on one keep-alive connection."""

    def __init__(self, port: int, stock: Stock[bytes], tally: Tally) -> None:
        self._connection = HttpConnection("127.0.0.1", port)
        self._stock = stock
        self._tally = tally

    async def perform(self) -> int:
        status, body = await self._connection.exchange(self._stock.take())
        accepted = time.time()
        if status != 202:
            raise RequestFailed(status, body)
        answer = orjson.loads(body)
        if answer["status"] != "accepted":
            self._tally.duplicates += 1
        self._tally.accepted[answer["lead_id"]] = accepted
        return 1

    async def open(self) -> None:
        await self._connection.open()

    async def close(self) -> None:
        await self._connection.close()


class Agent:
    """One dialer seat: polls next-lead, reports each call at once."""

    def __init__(
        self,
        name: str,
        port: int,
        tally: Tally,
        poll_interval: float,
        rng: random.Random,
    ) -> None:
        host = f"127.0.0.1:{port}"
        self._connection = HttpConnection("127.0.0.1", port)
        self._host = host
        self._tally = tally
        self._poll_interval = poll_interval
        self._rng = rng
        self._next_lead = http_request(
            "POST", f"/v1/agents/{name}/next-lead", host=host, headers={}, body=b""
        )
        self._rested = False

    async def work(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; the lease in hand is reported first."""
        await self._pause(stop, self._rng.uniform(0, self._poll_interval))
        try:
            while not stop.is_set():
                try:
                    await self._poll(stop)
                except (OSError, asyncio.IncompleteReadError, RequestFailed) as error:
                    self._tally.record_error(error)
                    await self._pause(stop, max(self._poll_interval, 0.05))
        finally:
            await self._connection.close()

    async def _poll(self, stop: asyncio.Event) -> None:
        tally = self._tally
        sent = time.time()
        status, body = await self._connection.exchange(self._next_lead)
        answered = time.time()
        tally.polls.append((sent, status == 204))
        if status == 204:
            # The interval ± 50 %, drawn anew each time: agents that ended
            # their calls together would otherwise keep polling together,
            # leaving most of each interval without a poll.
            await self._pause(stop, self._poll_interval * self._rng.uniform(0.5, 1.5))
            self._rested = True
            return
        held = _HELD_LEASE.search(body) if status == 409 else None
        if held is not None:
            # A lease whose outcome failed earlier: report it and go on.
            await self._report(held[1].decode())
            return
        if status != 200:
            raise RequestFailed(status, body)
        answer = orjson.loads(body)
        tally.lease(answer["lead"]["lead_id"], Leased(sent, answered, self._rested))
        self._rested = False
        tally.busy += 1
        tally.most_busy = max(tally.most_busy, tally.busy)
        try:
            await self._report(answer["lease_id"])
        finally:
            tally.busy -= 1

    async def _report(self, lease_id: str) -> None:
        request = http_request(
            "POST",
            f"/v1/leases/{lease_id}/outcome",
            host=self._host,
            headers={"Content-Type": "application/json"},
            body=OUTCOME,
        )
        status, body = await self._connection.exchange(request)
        if status != 200:
            raise RequestFailed(status, body)

    @staticmethod
    async def _pause(stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


# -- one repetition ---------------------------------------------------------


@dataclass
class Journey:
    """One lead's way, in seconds from intake's 202 (inf: never got there)."""

    published: float
    started: float
    committed: float
    polled: float
    leased: float
    #: More leads were ready than agents free when it was committed.
    crowded: bool
    #: Found by an agent that had been resting after a 204.
    rested: bool


def journeys(
    tally: Tally,
    published: dict[str, float],
    queued_at: dict[str, float],
    start: float,
    end: float,
) -> list[Journey]:
    """The leads whose 202 came inside [start, end)."""
    inf = math.inf
    found = []
    for lead_id, accepted in tally.accepted.items():
        if not start <= accepted < end:
            continue
        leased = tally.leased.get(lead_id)
        found.append(
            Journey(
                published=published.get(lead_id, inf) - accepted,
                started=queued_at.get(lead_id, inf) - accepted,
                committed=tally.committed.get(lead_id, inf) - accepted,
                polled=(leased.sent if leased else inf) - accepted,
                leased=(leased.answered if leased else inf) - accepted,
                crowded=lead_id in tally.crowded,
                rested=leased is not None and leased.rested,
            )
        )
    return found


def commit_groups(times: Sequence[float], *, gap: float = 0.001) -> list[int]:
    """For each committed lead, how many leads became visible with it: the
    notifications of one transaction arrive together, so a group is a run of
    times less than ``gap`` apart."""
    ordered = sorted(times)
    sizes: list[int] = []
    size = 0
    for index, moment in enumerate(ordered):
        size += 1
        if index + 1 == len(ordered) or ordered[index + 1] - moment >= gap:
            sizes += [size] * size
            size = 0
    return sizes


def _ms(values: Sequence[float], quantile: float) -> float:
    return percentile(values, quantile) * 1000


def _between(later: float, earlier: float) -> float:
    """A stage's length; infinite when either end was never reached (the
    difference of two infinities would be NaN, which sorts nowhere)."""
    if math.isfinite(later) and math.isfinite(earlier):
        return later - earlier
    return math.inf


def add_journeys(samples: Samples, found: Sequence[Journey]) -> None:
    """Per repetition: each stage's p50 and p99, in ms, and the shares."""
    stages: dict[str, list[float]] = {
        "speed": [j.leased for j in found],
        "lag": [j.committed for j in found],
        "to_broker": [j.published for j in found],
        "to_consumer": [_between(j.started, j.published) for j in found],
        "in_consumer": [_between(j.committed, j.started) for j in found],
        "poll_wait": [_between(j.polled, j.committed) for j in found],
        "request": [_between(j.leased, j.polled) for j in found],
    }
    for name, values in stages.items():
        samples.add(f"{name}_p50", _ms(values, 0.50))
        samples.add(f"{name}_p99", _ms(values, 0.99))
    complete = [
        j for j in found if math.isfinite(j.leased) and math.isfinite(j.committed)
    ]
    samples.add("leads", len(found))
    samples.add("crowded", 100 * sum(j.crowded for j in found) / max(1, len(found)))
    samples.add("rested", 100 * sum(j.rested for j in found) / max(1, len(found)))
    for name, rested in (("rested", True), ("straight", False)):
        waits = [_between(j.polled, j.committed) for j in found if j.rested is rested]
        samples.add(f"poll_wait_{name}_p50", _ms(waits, 0.50))
        samples.add(f"poll_wait_{name}_p99", _ms(waits, 0.99))
    samples.add("not_leased", sum(not math.isfinite(j.leased) for j in found))
    samples.add("not_committed", sum(not math.isfinite(j.committed) for j in found))
    if complete:
        speed = statistics.fmean(j.leased for j in complete)
        for name, part in (
            ("lag", lambda j: j.committed),
            ("poll_wait", lambda j: j.polled - j.committed),
            ("request", lambda j: j.leased - j.polled),
        ):
            samples.add(
                f"{name}_share", 100 * statistics.fmean(map(part, complete)) / speed
            )
        samples.add("speed_mean", 1000 * speed)
        samples.add(
            "poll_wait_mean",
            1000 * statistics.fmean(j.polled - j.committed for j in complete),
        )


@dataclass
class Bench:
    """Runs against a started intake and queue."""

    options: Options
    intake_port: int
    queue_port: int
    bootstrap: str
    admin: asyncpg.Connection
    listener: asyncpg.Connection
    cpu: CpuProbe
    build_post: Callable[[], bytes]
    areas: list[Area]
    facts: dict[str, Any]
    samples: Samples = field(default_factory=Samples)
    rng: random.Random = field(default_factory=lambda: random.Random(time.time_ns()))
    #: Per repetition: leads the agents held at once, at most; polls per
    #: second in the window, and of them 204s.
    most_busy: list[float] = field(default_factory=list)
    polls_per_second: list[float] = field(default_factory=list)
    empty_per_second: list[float] = field(default_factory=list)

    async def repetition(self) -> None:
        tally = Tally(agents=self.options.agents)
        probe = LagProbe(self.bootstrap, LEAD_EVENTS_TOPIC)
        await probe.start()
        await self.listener.add_listener(CHANNEL, tally.routed)
        try:
            async with self._agents(tally):
                run = await self._posts(tally)
                await self._drain(tally)
        finally:
            await self.listener.remove_listener(CHANNEL, tally.routed)
            await probe.stop()
        published = probe.published(type_=LeadReceived.event_type)
        queued_at = await self._queued_at(list(tally.accepted))
        found = journeys(tally, published, queued_at, run.wall_start, run.wall_end)
        samples = self.samples
        add_journeys(samples, found)
        samples.add_run("speed to lead run", run)
        samples.add("intake_p50", run.latency_ms(0.50))
        samples.add("intake_p99", run.latency_ms(0.99))
        samples.add("answered_rate", run.achieved_per_second)
        start, end = run.wall_start, run.wall_end
        committed = tally.committed.values()
        groups = commit_groups([t for t in committed if start <= t < end])
        samples.add("group_p50", percentile(groups, 0.50))
        samples.add("group_p99", percentile(groups, 0.99))
        samples.add(
            "committed_rate", sum(start <= t < end for t in committed) / run.window
        )
        samples.add(
            "backlog_at_end",
            sum(
                accepted < end and tally.committed.get(lead_id, math.inf) >= end
                for lead_id, accepted in tally.accepted.items()
            ),
        )
        samples.errors["agents"] += tally.errors
        if tally.first_error and "agents" not in samples.first_errors:
            samples.first_errors["agents"] = tally.first_error
        self.most_busy.append(tally.most_busy)
        timed = [
            empty
            for sent, empty in tally.polls
            if run.wall_start <= sent < run.wall_end
        ]
        self.polls_per_second.append(len(timed) / run.window)
        self.empty_per_second.append(sum(timed) / run.window)
        self.facts["duplicates"] += tally.duplicates
        self.facts["leased_twice"] += tally.leased_twice

    @contextlib.asynccontextmanager
    async def _agents(self, tally: Tally) -> AsyncIterator[None]:
        """Every agent polling from a second before the load until the exit."""
        stop = asyncio.Event()
        agents = [
            Agent(
                agent_name(index),
                self.queue_port,
                tally,
                self.options.poll_interval,
                random.Random(self.rng.random()),
            )
            for index in range(self.options.agents)
        ]
        tasks = [asyncio.create_task(agent.work(stop)) for agent in agents]
        try:
            await asyncio.sleep(1.0)
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _posts(self, tally: Tally) -> Run:
        # A fresh stock each time, sized by the schedule: a Stock sizes itself
        # by what the last run took, which is less when intake fell behind.
        options = self.options
        needed = options.rate * (options.warmup + options.duration + 2) * 1.05
        stock = Stock(self.build_post, initial=math.ceil(needed))
        stock.refill()
        sessions = [
            PostSession(self.intake_port, stock, tally)
            for _ in range(self.options.connections)
        ]
        try:
            # Connections open before the clock starts; the run measures requests.
            await asyncio.gather(*(session.open() for session in sessions))
            return await open_loop(
                sessions,
                rate=self.options.rate,
                warmup=self.options.warmup,
                duration=self.options.duration,
                cpu=self.cpu,
            )
        finally:
            await close_all(sessions)
            self.facts["built_late"] += stock.built_late

    async def _drain(self, tally: Tally) -> None:
        """Until every lead posted has been leased, or time is up: the next
        repetition starts with an empty pool, and a lead still unleased then
        counts as never leased."""
        deadline = time.monotonic() + self.options.drain
        while time.monotonic() < deadline:
            if len(tally.leased.keys() & tally.accepted.keys()) == len(tally.accepted):
                return
            await asyncio.sleep(0.1)

    async def _queued_at(self, lead_ids: list[str]) -> dict[str, float]:
        rows = await self.admin.fetch(
            "SELECT lead_id::text, queued_at FROM queue.leads"
            " WHERE lead_id = ANY($1::uuid[])",
            lead_ids,
        )
        return {row["lead_id"]: row["queued_at"].timestamp() for row in rows}

    async def prime(self) -> None:
        """A few leads through the whole way before measuring: the consumer
        has joined its group and every path is warm. Raises if they never
        reach an agent."""
        tally = Tally(agents=self.options.agents)
        async with self._agents(tally):
            # Built on the spot, not taken from the stock, which sizes itself
            # by what the last run took.
            priming = Stock(self.build_post, initial=20)
            priming.refill()
            session = PostSession(self.intake_port, priming, tally)
            try:
                for _ in range(20):
                    await session.perform()
            finally:
                await session.close()
            deadline = time.monotonic() + 60
            while set(tally.accepted) - set(tally.leased):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{len(set(tally.accepted) - set(tally.leased))} of 20"
                        " priming leads never reached an agent in 60 s"
                        f" (first agent error: {tally.first_error})"
                    )
                await asyncio.sleep(0.1)


def agent_name(index: int) -> str:
    return f"e2e-agent-{index:03d}"


# -- setting up -------------------------------------------------------------


async def api_call(port: int, method: str, path: str, document: Any) -> None:
    connection = HttpConnection("127.0.0.1", port)
    request = http_request(
        method,
        path,
        host=f"127.0.0.1:{port}",
        headers={"Content-Type": "application/json"},
        body=orjson.dumps(document),
    )
    try:
        status, body = await connection.exchange(request)
    finally:
        await connection.close()
    if status not in (200, 201):
        raise RequestFailed(status, body)


async def create_pool_and_agents(port: int, agents: int) -> None:
    """The pool, routing that sends every lead to it, and the agents."""
    await api_call(port, "PUT", f"/v1/pools/{POOL}", RULES.model_dump(mode="json"))
    await api_call(port, "PUT", "/v1/routing", {"default_pool": POOL, "routes": []})
    for index in range(agents):
        agent = agent_name(index)
        await api_call(port, "PUT", f"/v1/agents/{agent}", {"pools": [POOL]})
        await api_call(
            port, "PUT", f"/v1/agents/{agent}/status", {"status": "available"}
        )


async def install_probe(admin: asyncpg.Connection) -> None:
    """A trigger that NOTIFYs each lead id the queue inserts; PostgreSQL
    delivers it when the consumer's transaction commits."""
    await admin.execute(f"DROP SCHEMA IF EXISTS {PROBE_SCHEMA} CASCADE")
    await admin.execute(f"CREATE SCHEMA {PROBE_SCHEMA}")
    await admin.execute(
        f"""
        CREATE FUNCTION {PROBE_SCHEMA}.routed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', NEW.lead_id::text);
            RETURN NULL;
        END
        $$
        """
    )
    await admin.execute(
        f"CREATE TRIGGER {CHANNEL} AFTER INSERT ON queue.leads"
        f" FOR EACH ROW EXECUTE FUNCTION {PROBE_SCHEMA}.routed()"
    )


async def _cpu_probe(
    admin: asyncpg.Connection, intake: RestartableService, queue: RestartableService
) -> CpuProbe:
    """Our processes only: the machine may run other servers of each kind."""
    postmaster = parent_of(await admin.fetchval("SELECT pg_backend_pid()")) or -1
    intake_pid, queue_pid = intake.pid, queue.pid
    return CpuProbe(
        {
            "intake": lambda: family(intake_pid),
            "queue": lambda: family(queue_pid),
            "postgres": lambda: family(postmaster, named="postgres"),
            "broker": lambda: family(os.getpid(), named="tansu"),
            "bench": lambda: [os.getpid()],
        }
    )


def _post_request(port: int, api_key: str, leads: Leads) -> Callable[[], bytes]:
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    def build() -> bytes:
        body = orjson.dumps(leads.document())
        return http_request(
            "POST", "/v1/leads", host=f"127.0.0.1:{port}", headers=headers, body=body
        )

    return build


async def measure(options: Options, endpoints: Endpoints, folder: Path) -> Bench:
    run_seconds = options.repetitions * (
        options.warmup + options.duration + options.drain + 5
    )
    # Setup and priming take a minute or two; the window must outlast them.
    areas = open_areas(
        dt.datetime.now(dt.UTC), dt.timedelta(seconds=2 * run_seconds + 300)
    )
    say("… " + "; ".join(area.describe() for area in areas))
    async with contextlib.AsyncExitStack() as cleanup:
        admin = await connect(endpoints.database_url)
        cleanup.push_async_callback(admin.close)
        api_key = await asyncio.to_thread(provision_source, endpoints, SOURCE)
        env = endpoints.service_env(**options.env)
        intake = RestartableService("intake", env, folder)
        cleanup.callback(intake.stop)
        queue = RestartableService("queue", env, folder)
        cleanup.callback(queue.stop)
        await asyncio.to_thread(intake.start)
        await asyncio.to_thread(queue.start)
        await create_pool_and_agents(queue.port, options.agents)
        await install_probe(admin)
        cleanup.push_async_callback(
            admin.execute, f"DROP SCHEMA IF EXISTS {PROBE_SCHEMA} CASCADE"
        )
        listener = await connect(endpoints.database_url)
        cleanup.push_async_callback(listener.close)
        leads = Leads(areas, random.Random(time.time_ns()))
        build_post = _post_request(intake.port, api_key, leads)
        bench = Bench(
            options=options,
            intake_port=intake.port,
            queue_port=queue.port,
            bootstrap=endpoints.bootstrap,
            admin=admin,
            listener=listener,
            cpu=await _cpu_probe(admin, intake, queue),
            build_post=build_post,
            areas=areas,
            facts={
                "postgres": await admin.fetchval("SHOW server_version"),
                "synchronous_commit": await admin.fetchval("SHOW synchronous_commit"),
                "partitions": ServiceSettings().topic_partitions,
                "duplicates": 0,
                "leased_twice": 0,
                "built_late": 0,
            },
        )
        say("… priming: 20 leads through intake and the queue to an agent")
        await bench.prime()
        for repetition in range(options.repetitions):
            say(f"… run {repetition + 1} of {options.repetitions}")
            await bench.repetition()
            intake.check_alive()
            queue.check_alive()
        return bench


# -- report -----------------------------------------------------------------


def figures(bench: Bench) -> list[Figure]:
    v, options = bench.samples.values, bench.options
    rate = f"{amount(options.rate)} leads/s offered"
    lag = "outbox → consumer lag: 202 → lead committed in the queue"
    return [
        Figure(
            f"speed to lead p99 (202 → next-lead answer), {rate}",
            "ms",
            v["speed_p99"],
            v["lag_p99"],
            lag,
            Target(SPEED_P99_TARGET_MS, at_least=False),
        ),
        Figure(
            f"speed to lead p50, {rate}",
            "ms",
            v["speed_p50"],
            v["lag_p50"],
            lag,
        ),
        Figure(
            "leads/s the queue's consumer committed in the window",
            "/s",
            v["committed_rate"],
            v["answered_rate"],
            "leads/s intake accepted",
        ),
        Figure(
            f"wait for an agent's poll p99 (committed → poll sent; {options.agents}"
            f" agents, {options.poll_interval:g} s after a 204)",
            "ms",
            v["poll_wait_p99"],
        ),
        Figure("wait for an agent's poll p50", "ms", v["poll_wait_p50"]),
        Figure("next-lead that found the lead p99", "ms", v["request_p99"]),
        Figure("poll wait share of mean speed to lead", " %", v["poll_wait_share"]),
        Figure(f"intake 202 p99 from due time, {rate}", "ms", v["intake_p99"]),
        Figure("leads measured per window", " leads", v["leads"]),
    ]


def report(bench: Bench, seconds: float, measured: str) -> tuple[str, dict[str, Any]]:
    rows = figures(bench)
    options = bench.options
    mode = "--quick" if options.quick else "full"
    lines = [
        "# End-to-end benchmark: speed to lead",
        "",
        f"{machine_line()}; {mode} run of {measured} took {seconds:.0f} s.",
        "",
        markdown_table(rows),
        "",
        *_notes(bench, rows),
    ]
    samples = bench.samples
    payload = {
        "date": dt.datetime.now(dt.UTC).isoformat(),
        "cpu_count": os.cpu_count(),
        "seconds": seconds,
        "checkout": measured,
        "options": {**options.__dict__, "json": str(options.json)},
        "areas": [area.describe() for area in bench.areas],
        "facts": bench.facts,
        "figures": [row.as_json() for row in rows],
        "samples": dict(samples.values),
        "agents_busy_at_most": bench.most_busy,
        "polls_per_second": bench.polls_per_second,
        "cpu": {name: median_shares(shares) for name, shares in samples.cpu.items()},
        "errors": dict(samples.errors),
        "first_errors": samples.first_errors,
    }
    return "\n".join(lines), payload


def _notes(bench: Bench, rows: Sequence[Figure]) -> list[str]:
    options, facts, v = bench.options, bench.facts, bench.samples.values
    stages = (
        (
            "202 → intake's relay sends lead.received (the record's timestamp)",
            "to_broker",
        ),
        (
            "relay sends → the queue's consumer starts its batch (`queued_at`)",
            "to_consumer",
        ),
        ("consumer starts → lead committed (the NOTIFY)", "in_consumer"),
        ("committed → the poll that found it was sent", "poll_wait"),
        ("that poll sent → answered", "request"),
    )
    notes = [
        f"Medians of {options.repetitions} repetition(s) of {options.duration:g} s"
        f" after {options.warmup:g} s of warm-up; ratio = value ÷ baseline, the"
        " baseline being the outbox → consumer lag of the same leads in the same"
        " run. The machine is shared with other work, so single figures are"
        f" noisy. PostgreSQL {facts['postgres']}, synchronous_commit="
        f"{facts['synchronous_commit']}; intake and the queue are one uvicorn"
        f" process each; lead-events has {facts['partitions']} partitions;"
        " metrics and nurture are not running."
        + (
            " Both services ran with "
            + ", ".join(f"`{name}={value}`" for name, value in options.env.items())
            + "."
            if options.env
            else ""
        ),
        "",
        f"Leads are posted one per request over {options.connections} connections"
        f" at {amount(options.rate)}/s (open loop; answered"
        f" {spread(v['answered_rate'])}/s). The queue's consumer committed"
        f" {spread(v['committed_rate'])} leads/s in the window, and at its end"
        f" {spread(v['backlog_at_end'])} accepted leads were not yet in the queue"
        " (a backlog that grows through the window means the figures are a"
        " growing queue, not a steady state). Leads became visible in groups"
        " (one consumer transaction, or several committed together) of, per"
        f" lead, p50 {spread(v['group_p50'])} and p99 {spread(v['group_p99'])}."
        " A lead counts when its 202 came inside"
        f" the window: {spread(v['leads'])} leads a window"
        f" ({amount(sum(v['leads']))} in all), of which"
        f" {spread(v['not_leased'])} reached no agent within"
        f" {options.drain:g} s of the window's end and"
        f" {spread(v['not_committed'])} sent no NOTIFY (such leads count as"
        " infinitely late). Their phones are in "
        + "; ".join(area.describe() for area in bench.areas)
        + f" (pool cadence {' '.join(f'{gap:g}s' for gap in RULES.cadence)},"
        " calling hours 00:00-23:59 every day, so the law's hours decide).",
        "",
        f"{options.agents} agents poll next-lead; after a 204 an agent waits"
        f" {options.poll_interval:g} s ± 50 % (at random), after a lead it"
        " reports `no_answer` and"
        " polls again at once. Agents holding a lead at once, at most:"
        f" {spread(bench.most_busy)} of {options.agents}. Leads that, when"
        " committed, found more leads ready and unclaimed than agents not"
        f" holding one: {spread(v['crowded'])} %. Leads found by an agent that"
        f" had been resting after a 204: {spread(v['rested'])} % (the others by"
        " one polling straight after its last call); their wait for the poll,"
        f" p50 / p99: {spread(v['poll_wait_rested_p50'])} /"
        f" {spread(v['poll_wait_rested_p99'])} ms (what the poll interval costs),"
        f" against {spread(v['poll_wait_straight_p50'])} /"
        f" {spread(v['poll_wait_straight_p99'])} ms for the others (waiting for"
        " an agent to finish a call). Polls per second in the"
        f" window (all agents): {spread(bench.polls_per_second)}, of which 204s"
        f" {spread(bench.empty_per_second)}.",
        "",
        "Where speed to lead goes, p50 / p99 in ms per stage (medians of the"
        " repetitions; percentiles of parts do not add up to the whole's):",
        "",
    ]
    notes += [
        f"- {label}: {amount(_median(v[f'{key}_p50']))} /"
        f" {amount(_median(v[f'{key}_p99']))}"
        for label, key in stages
    ]
    notes += [
        f"- whole (speed to lead): {amount(_median(v['speed_p50']))} /"
        f" {amount(_median(v['speed_p99']))}",
        "",
        "Shares of the mean speed to lead"
        f" ({spread(v['speed_mean'])} ms): event delivery"
        f" {spread(v['lag_share'])} %, waiting for a poll"
        f" {spread(v['poll_wait_share'])} % (mean {spread(v['poll_wait_mean'])}"
        " ms), the next-lead request that found the lead"
        f" {spread(v['request_share'])} %.",
        "",
        "CPU during the timed windows, medians:",
        "",
    ]
    notes += [
        f"- {name}: {describe_cpu(median_shares(shares))}"
        for name, shares in bench.samples.cpu.items()
    ]
    notes += ["", "Each repetition (value; baseline):", ""]
    notes += repetition_lines(rows)
    notes += ["", *_problems(bench)]
    return notes


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _problems(bench: Bench) -> list[str]:
    samples, facts = bench.samples, bench.facts
    lines = samples.error_lines()
    if facts["duplicates"]:
        lines.append(f"{facts['duplicates']} leads were answered as duplicates.")
    if facts["leased_twice"]:
        lines.append(f"{facts['leased_twice']} leads were handed out twice.")
    if facts.get("built_late"):
        lines.append(f"{facts['built_late']} requests had to be built during runs.")
    return lines or ["No errors, no duplicates, no lead handed out twice."]


# -- entry point ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    return run_bench(
        "e2e",
        lambda endpoints, workdir: measure(options, endpoints, workdir),
        report,
        options.json,
    )


if __name__ == "__main__":
    sys.exit(main())
