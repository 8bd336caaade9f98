"""What Redial's benchmarks share: the stack, a lean client, load, CPU, report.

A benchmark runs on the same two cores as the services and PostgreSQL it
measures, so the client side must cost as little as possible: request bytes
are built before a run, HTTP is a bare keep-alive HTTP/1.1 exchange on asyncio
streams, and a run records one float per request.

Every figure is reported beside a baseline measured in the same run, as the
median of a few repetitions, because the machine is shared and noisy.
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
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import (
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.launcher.stack import (
    Broker,
    ServiceProcess,
    ensure_database,
    free_port,
    prepare,
    source_command,
    start_postgres,
)
from shared.settings import ServiceSettings

T = TypeVar("T")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# -- the stack --------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where PostgreSQL and the broker answer."""

    database_url: str
    bootstrap: str

    def service_env(self, **extra: str) -> dict[str, str]:
        """The environment a service process gets, as production sets it."""
        return {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "REDIAL_LOG_LEVEL": "WARNING",
            **extra,
        }


@contextlib.contextmanager
def running_stack(workdir: Path, *, database: str = "redial") -> Iterator[Endpoints]:
    """PostgreSQL and the broker, prepared (topics, every service's schema).

    ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS``, when set, name servers to
    use instead of starting embedded ones. Whatever is started here is stopped
    on the way out, also after an error or Ctrl-C.
    """
    with contextlib.ExitStack() as cleanup:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            # keep=False: the data folder goes away with the server.
            server = start_postgres(workdir / "postgres", keep=False)
            cleanup.callback(server.stop)
            database_url = asyncio.run(ensure_database(server.dsn, database))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = Broker(free_port(), log_path=workdir / "broker.log")
            cleanup.callback(broker.stop)
            broker.start()
            bootstrap = broker.bootstrap
        partitions = ServiceSettings().topic_partitions
        asyncio.run(prepare(database_url, bootstrap, partitions=partitions))
        yield Endpoints(database_url=database_url, bootstrap=bootstrap)


@contextlib.contextmanager
def running_service(
    name: str, env: dict[str, str], log_path: Path
) -> Iterator[ServiceProcess]:
    """One service as its own uvicorn process on a free port, until the exit."""
    service = ServiceProcess(name, free_port(), env, log_path=log_path)
    try:
        start_healthy(service, log_path)
        yield service
    finally:
        service.stop()


def start_healthy(service: ServiceProcess, log_path: Path) -> None:
    """Start ``service`` and wait until it is ready; the caller stops it, also
    after an error here."""
    service.start()
    try:
        service.wait_healthy()
    except (RuntimeError, TimeoutError) as error:
        raise RuntimeError(f"{service.name}: {error}\n{tail(log_path)}") from error


class RestartableService:
    """One service as its own uvicorn process that a bench stops and starts
    again between runs (to reset its tables, or to time a start from cold).

    Each start logs to its own file (``<name>-<n>.log`` in ``folder``), so
    that :meth:`complaints` can count what every start's log mentions.
    """

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self._env = env
        self._folder = folder
        self.process: ServiceProcess | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self._folder / f"{self.name}-{self.starts}.log"

    def start(self) -> ServiceProcess:
        """Start and wait until ready; a running copy is stopped first."""
        self.stop()
        self.starts += 1
        service = ServiceProcess(self.name, free_port(), self._env, self.log_path)
        self.process = service
        start_healthy(service, self.log_path)
        return service

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def pid(self) -> int:
        """The running process's id (-1 when stopped, which no process has)."""
        if self.process is None or self.process.process is None:
            return -1
        return self.process.process.pid

    @property
    def port(self) -> int:
        assert self.process is not None
        return self.process.port

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        process = self.process.process if self.process else None
        if process is None or process.poll() is not None:
            code = process.returncode if process else None
            raise RuntimeError(f"{self.name} exited with {code}\n{tail(self.log_path)}")

    def complaints(self, patterns: Iterable[str]) -> dict[str, int]:
        """How many lines of every start's log contain each of ``patterns``."""
        wanted = list(patterns)
        found: dict[str, int] = {}
        for number in range(1, self.starts + 1):
            path = self._folder / f"{self.name}-{number}.log"
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    for pattern in wanted:
                        if pattern in line:
                            found[pattern] = found.get(pattern, 0) + 1
        return found


def tail(path: Path, lines: int = 20) -> str:
    """The end of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def provision_source(endpoints: Endpoints, name: str) -> str:
    """Create intake source ``name`` with the operator CLI; returns its API key."""
    api_key = f"rdl_{name}_{secrets.token_urlsafe(24)}"
    subprocess.run(
        source_command(
            name, api_key=api_key, webhook_secret=f"whsec_{secrets.token_urlsafe(24)}"
        ),
        env={**os.environ, **endpoints.service_env()},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return api_key


# -- topics -----------------------------------------------------------------


async def topic_partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, in number order (empty if it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()
        numbers = consumer.partitions_for_topic(topic) or set()
        return [TopicPartition(topic, number) for number in sorted(numbers)]
    finally:
        await consumer.stop()


async def end_offsets(
    bootstrap: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offset the next record of each partition will get."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(
            list(partitions)
        )
        return offsets
    finally:
        await consumer.stop()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Create a scratch topic for a baseline, unless it exists."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="redial-bench")
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, name: str) -> None:
    """Delete a scratch topic where the broker can (Tansu's memory engine
    cannot: the topic then stays until the broker stops)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="redial-bench")
    with contextlib.suppress(Exception):
        await admin.start()
        await admin.delete_topics([name])
    with contextlib.suppress(Exception):
        await admin.close()


# -- leads ------------------------------------------------------------------

#: Real area codes with a ZIP code, state and time zone of each.
AREAS = (
    ("212", "10001", "NY", "America/New_York"),
    ("305", "33131", "FL", "America/New_York"),
    ("415", "94103", "CA", "America/Los_Angeles"),
    ("312", "60601", "IL", "America/Chicago"),
    ("617", "02108", "MA", "America/New_York"),
    ("702", "89101", "NV", "America/Los_Angeles"),
    ("503", "97201", "OR", "America/Los_Angeles"),
)
#: Exchanges 200-899 without the N11 service codes (211, 311 … 811).
EXCHANGES = tuple(exchange for exchange in range(200, 900) if exchange % 100 != 11)
LINES = 10_000
PHONE_SPACE = len(AREAS) * len(EXCHANGES) * LINES
FIRST_NAMES = ("Maria", "James", "Aiko", "Olu", "Sofia", "Liam", "Priya", "Mateo")
LAST_NAMES = ("Garcia", "Smith", "Tanaka", "Adeyemi", "Rossi", "Novak", "Rao", "Kim")


@dataclass(frozen=True)
class Contact:
    index: int
    phone: str
    email: str
    postal_code: str
    region: str
    timezone: str

    @property
    def first_name(self) -> str:
        return FIRST_NAMES[self.index % len(FIRST_NAMES)]

    @property
    def last_name(self) -> str:
        return LAST_NAMES[self.index // len(FIRST_NAMES) % len(LAST_NAMES)]


class UniqueLeads:
    """Valid US leads of which no two share a phone number or an e-mail.

    Numbers walk the whole phone space (area × exchange × line) through an
    affine map modulo its size whose step is coprime with it: every number
    comes once, in an order that looks random, with a random start so two
    runs against one database rarely meet. E-mails carry a per-run tag.
    """

    def __init__(self, rng: random.Random) -> None:
        self._step = rng.randrange(PHONE_SPACE // 3, PHONE_SPACE)
        while math.gcd(self._step, PHONE_SPACE) != 1:
            self._step += 1
        self._offset = rng.randrange(PHONE_SPACE)
        self._tag = f"{rng.getrandbits(32):08x}"
        self._count = 0

    def contact(self) -> Contact:
        index = self._count
        if index >= PHONE_SPACE:
            raise RuntimeError("every phone number of the space has been used")
        self._count += 1
        slot, line = divmod((self._offset + index * self._step) % PHONE_SPACE, LINES)
        area, exchange = divmod(slot, len(EXCHANGES))
        code, postal_code, region, zone = AREAS[area]
        return Contact(
            index=index,
            phone=f"+1{code}{EXCHANGES[exchange]}{line:04d}",
            email=f"lead.{self._tag}.{index}@example.org",
            postal_code=postal_code,
            region=region,
            timezone=zone,
        )

    def document(self) -> dict[str, Any]:
        """One lead as a web form or CRM posts it to intake."""
        contact = self.contact()
        return {
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "phone": contact.phone,
            "email": contact.email,
            "postal_code": contact.postal_code,
            "campaign": "spring-refi",
            "consent": {"call": True, "sms": False, "email": True},
            "attributes": {"utm_source": "bench", "loan_amount": 250_000},
        }


# -- HTTP -------------------------------------------------------------------

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)


def http_request(
    method: str, path: str, *, host: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """The bytes of one HTTP/1.1 request with a Content-Length body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; one exchange at a time.

    Only what the services send is understood: a status line, headers and a
    Content-Length body. A broken connection is reopened on the next call.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``; returns the response's status and body."""
        if self._reader is None or self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        try:
            # No drain(): the response cannot come before the request is out,
            # and awaiting the buffer would cost a scheduling round per call.
            self._writer.write(request)
            head = await self._reader.readuntil(b"\r\n\r\n")
            body = await self._read_body(head)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self.close()
            raise
        if _CLOSE.search(head):
            await self.close()
        return int(head[9:12]), body

    async def _read_body(self, head: bytes) -> bytes:
        assert self._reader is not None
        if _CHUNKED.search(head):
            raise OSError("chunked responses are not supported by this client")
        length = _CONTENT_LENGTH.search(head)
        return await self._reader.readexactly(int(length[1])) if length else b""

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self._host, self._port
        )

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class RequestFailed(Exception):
    """A response other than the one expected."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


# -- payloads ---------------------------------------------------------------


class Stock(Generic[T]):
    """Payloads built before a run, so building costs nothing during it.

    A run that takes more than was built gets the rest built on the spot;
    ``built_late`` says how many, so a report can tell.
    """

    def __init__(self, build: Callable[[], T], *, initial: int) -> None:
        self._build = build
        self._items: list[T] = []
        self._next_size = initial
        self._taken = 0
        self.built_late = 0

    def refill(self) -> None:
        """Top up to what the last run took, with a margin (the first guess
        before any run)."""
        if self._taken:
            self._next_size = math.ceil(self._taken * 1.3)
        self._items += [
            self._build() for _ in range(self._next_size - len(self._items))
        ]
        self._taken = 0

    def take(self) -> T:
        self._taken += 1
        if self._items:
            return self._items.pop()
        self.built_late += 1
        return self._build()


# -- load -------------------------------------------------------------------


class Session(Protocol):
    """One client: a connection and what it sends, one request at a time."""

    async def perform(self) -> int:
        """Send one request; returns how many leads (units) it carried.

        Raises on any failure; the driver counts it and carries on.
        """
        ...

    async def close(self) -> None: ...


@dataclass
class Run:
    """What one timed window saw."""

    window: float
    #: Wall-clock time (``time.time()``) the window started, to match events.
    wall_start: float
    units: int = 0
    operations: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    #: Open loop: how long after the window the last timed request came back.
    overrun: float = 0.0

    @property
    def wall_end(self) -> float:
        return self.wall_start + self.window

    @property
    def units_per_second(self) -> float:
        return self.units / self.window

    @property
    def operations_per_second(self) -> float:
        return self.operations / self.window

    @property
    def achieved_per_second(self) -> float:
        """Open loop: answered requests over the time they took to answer."""
        return self.operations / (self.window + self.overrun)

    def latency_ms(self, quantile: float) -> float:
        return percentile(self.latencies, quantile) * 1000

    def record_error(self, error: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(error).__name__}: {error}"


@dataclass
class Samples:
    """Per-repetition figures by name, CPU shares by run, and what went wrong."""

    values: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_errors: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values[name].append(value)

    def add_run(self, name: str, run: Run) -> None:
        self.cpu[name].append(run.cpu)
        self.errors[name] += run.errors
        if run.first_error and name not in self.first_errors:
            self.first_errors[name] = run.first_error

    def error_lines(self) -> list[str]:
        """One line per run that had errors, with the first error seen."""
        return [
            f"Errors: {name} {count} ({self.first_errors.get(name, '')})"
            for name, count in self.errors.items()
            if count
        ]


def add_env_option(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--env NAME=VALUE`` (repeatable): a variable for ``what``."""
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"an environment variable for {what} (repeatable)",
    )


def env_option(parser: argparse.ArgumentParser, pairs: Sequence[str]) -> dict[str, str]:
    """The ``--env`` pairs as a mapping; a malformed one is a usage error."""
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


async def closed_loop(
    sessions: Sequence[Session],
    *,
    warmup: float,
    duration: float,
    cpu: CpuProbe | None = None,
) -> Run:
    """Every session sends back to back; measures the window after the warm-up.

    Throughput counts what completed inside the window; latencies are those
    of requests that started and ended inside it.
    """
    start = time.monotonic()
    window_start, end = start + warmup, start + warmup + duration
    run = Run(window=duration, wall_start=time.time() + warmup)

    async def client(session: Session) -> None:
        while (sent := time.monotonic()) < end:
            try:
                units = await session.perform()
            except Exception as error:  # noqa: BLE001 - counted, the run goes on
                if sent >= window_start:
                    run.record_error(error)
                await asyncio.sleep(0.01)  # no busy loop against a dead server
                continue
            done = time.monotonic()
            if window_start <= done < end:
                run.units += units
                run.operations += 1
                if sent >= window_start:
                    run.latencies.append(done - sent)

    await asyncio.gather(
        *(client(session) for session in sessions),
        _watch_cpu(cpu, run, window_start, end),
    )
    return run


async def open_loop(
    sessions: Sequence[Session],
    *,
    rate: float,
    warmup: float,
    duration: float,
    cpu: CpuProbe | None = None,
    grace: float = 2.0,
) -> Run:
    """Requests on a fixed schedule of ``rate`` per second, as wrk2 sends them.

    Request *k* is due at ``start + k / rate`` and goes to session ``k mod n``.
    Each latency counts from the request's due time, not from when it was
    sent, so a server that falls behind shows the queueing it causes instead
    of slowing the client down. Requests still unsent ``grace`` seconds after
    the window count as errors.
    """
    interval = 1.0 / rate
    start = time.monotonic()
    window_start, end = start + warmup, start + warmup + duration
    give_up = end + grace
    run = Run(window=duration, wall_start=time.time() + warmup)
    count = len(sessions)

    async def client(index: int, session: Session) -> None:
        number = index
        while (due := start + number * interval) < end:
            number += count
            timed = due >= window_start
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.monotonic() > give_up:
                if timed:
                    run.record_error(TimeoutError(f"unsent {grace:g}s after the end"))
                continue
            try:
                units = await session.perform()
            except Exception as error:  # noqa: BLE001 - counted, the run goes on
                if timed:
                    run.record_error(error)
                continue
            if timed:
                done = time.monotonic()
                run.units += units
                run.operations += 1
                run.latencies.append(done - due)
                run.overrun = max(run.overrun, done - end)

    await asyncio.gather(
        *(client(index, session) for index, session in enumerate(sessions)),
        _watch_cpu(cpu, run, window_start, end),
    )
    return run


async def _watch_cpu(
    cpu: CpuProbe | None, run: Run, window_start: float, end: float
) -> None:
    if cpu is None:
        return
    await asyncio.sleep(max(0.0, window_start - time.monotonic()))
    cpu.start()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    run.cpu = cpu.stop()


async def close_all(sessions: Iterable[Session]) -> None:
    for session in sessions:
        with contextlib.suppress(Exception):
            await session.close()


# -- events -----------------------------------------------------------------


class LagProbe:
    """Reads a topic during a run to measure how late events reach it.

    Per CloudEvent: the Kafka record's timestamp (the producer's create time,
    ms) minus the event's ``time``. The consumer's own speed does not enter
    the figure, so the probe may read lazily; records are decoded after the
    run to keep the client cheap while it lasts.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
        )
        self._records: list[tuple[int, bytes]] = []
        self._last_record = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin at the topic's end; returns once every partition has a position."""
        await self._consumer.start()
        async with asyncio.timeout(15):
            while not self._consumer.assignment():
                await asyncio.sleep(0.05)
            for partition in self._consumer.assignment():
                await self._consumer.position(partition)
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                self._records += [
                    (record.timestamp, record.value) for record in records
                ]
                self._last_record = time.monotonic()

    async def settle(self, *, idle: float = 1.0, timeout: float = 30.0) -> None:
        """Wait until nothing new has arrived for ``idle`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() - self._last_record < idle:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def lags(self, wall_start: float, wall_end: float, *, type_: str) -> list[float]:
        """Seconds from ``time`` to broker, for events of ``type_`` timed then."""
        lags: list[float] = []
        for timestamp, value in self._records:
            event = orjson.loads(value)
            if event.get("type") != type_:
                continue
            accepted = dt.datetime.fromisoformat(event["time"]).timestamp()
            if wall_start <= accepted < wall_end:
                lags.append(timestamp / 1000 - accepted)
        return lags

    def published(self, *, type_: str) -> dict[str, float]:
        """When each event of ``type_`` was sent (the record's timestamp, in
        seconds since the epoch), by its ``subject`` (the lead id); the first
        copy of a subject counts."""
        sent: dict[str, float] = {}
        for timestamp, value in self._records:
            event = orjson.loads(value)
            if event.get("type") == type_:
                sent.setdefault(str(event.get("subject")), timestamp / 1000)
        return sent


# -- CPU --------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from field 3 on (state, ppid, …); empty if gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may contain spaces; count after its ")".
    return stat.rpartition(")")[2].split()


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def family(pid: int, *, named: str = "") -> list[int]:
    """``pid`` and its children whose command name starts with ``named``.

    PostgreSQL's backends are children of its postmaster, so the family of the
    postmaster is the whole server, and no other server on the machine.
    """
    pids = [pid] if _comm(pid).startswith(named) else []
    for entry in _PROC.glob("[0-9]*"):
        child = int(entry.name)
        if parent_of(child) == pid and _comm(child).startswith(named):
            pids.append(child)
    return pids


def _comm(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "comm").read_text()
    except OSError:
        return ""


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields else 0.0


def _machine_busy_idle() -> tuple[float, float]:
    with contextlib.suppress(OSError):
        numbers = [
            int(n) for n in (_PROC / "stat").read_text().split("\n")[0].split()[1:]
        ]
        idle = numbers[3] + numbers[4]  # idle + iowait
        return float(sum(numbers[:8]) - idle), float(idle)
    return 0.0, 0.0


class CpuProbe:
    """CPU used by named groups of processes over a window, in % of one core.

    ``machine`` is the share of all cores that was busy (100 % = every core).
    Outside Linux the probe reports nothing.
    """

    def __init__(self, groups: Mapping[str, Callable[[], Iterable[int]]]) -> None:
        self._groups = groups
        self._begin: tuple[float, dict[str, dict[int, float]], tuple[float, float]]
        self._begin = (0.0, {}, (0.0, 0.0))

    def _read(self) -> dict[str, dict[int, float]]:
        return {
            name: {pid: _cpu_seconds(pid) for pid in pids()}
            for name, pids in self._groups.items()
        }

    def start(self) -> None:
        self._begin = (time.monotonic(), self._read(), _machine_busy_idle())

    def stop(self) -> dict[str, float]:
        if not _PROC.is_dir():
            return {}
        began, before, (busy_before, idle_before) = self._begin
        wall = time.monotonic() - began
        shares = {}
        for name, now in self._read().items():
            used = sum(
                seconds - before[name].get(pid, 0.0) for pid, seconds in now.items()
            )
            shares[name] = 100 * used / wall
        busy, idle = _machine_busy_idle()
        total = (busy - busy_before) + (idle - idle_before)
        machine = (busy - busy_before) / total if total else 0.0
        # What no group accounts for: other processes, and kernel work (such
        # as network interrupts) that is charged to no process.
        cores = os.cpu_count() or 1
        shares["other"] = max(0.0, 100 * machine * cores - sum(shares.values()))
        shares["machine"] = 100 * machine
        return shares


def describe_cpu(shares: Mapping[str, float]) -> str:
    """``intake 98 %, postgres 71 % … (machine 96 % busy)``."""
    if not shares:
        return "not measured"
    groups = [
        f"{name} {share:.0f} %" for name, share in shares.items() if name != "machine"
    ]
    return f"{', '.join(groups)} of one core (machine {shares['machine']:.0f} % busy)"


def median_shares(samples: Sequence[Mapping[str, float]]) -> dict[str, float]:
    present = [sample for sample in samples if sample]
    if not present:
        return {}
    return {name: statistics.median(s[name] for s in present) for name in present[0]}


# -- figures ----------------------------------------------------------------


def percentile(values: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile (``quantile`` in 0..1); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


def _median(values: Sequence[float]) -> float | None:
    present = [value for value in values if not math.isnan(value)]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Target:
    """A bound a figure must reach: at least or at most ``bound``."""

    bound: float
    at_least: bool

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


@dataclass
class Figure:
    """One row of the report: a median over repetitions beside its baseline.

    ``ratio`` is always value ÷ baseline: above 1 the service does more (or,
    for latencies, takes longer) than the baseline.
    """

    name: str
    unit: str
    values: list[float]
    baseline: list[float] = field(default_factory=list)
    baseline_name: str = ""
    target: Target | None = None

    @property
    def value(self) -> float | None:
        return _median(self.values)

    @property
    def baseline_value(self) -> float | None:
        return _median(self.baseline)

    @property
    def ratio(self) -> float | None:
        value, baseline = self.value, self.baseline_value
        if value is None or not baseline:
            return None
        return value / baseline

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.target.met(self.value)

    def row(self) -> list[str]:
        baseline = self.baseline_value
        baseline_cell = "—"
        if baseline is not None:
            baseline_cell = (
                f"{format_value(baseline, self.unit)} ({self.baseline_name})"
            )
        target = "—"
        if self.target is not None:
            sign = "≥" if self.target.at_least else "≤"
            target = f"{sign} {format_value(self.target.bound, self.unit)}"
        met = {None: "—", True: "yes", False: "**no**"}[self.met]
        ratio = "—" if self.ratio is None else _ratio(self.ratio)
        return [
            self.name,
            format_value(self.value, self.unit),
            baseline_cell,
            ratio,
            target,
            met,
        ]

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Figure:
        """The figure :meth:`as_json` wrote (a NaN repetition comes back as
        JSON ``null``, and is NaN again here)."""
        target = document.get("target")
        return cls(
            name=str(document["figure"]),
            unit=str(document.get("unit", "")),
            values=_floats(document.get("repetitions") or []),
            baseline=_floats(document.get("baseline_repetitions") or []),
            baseline_name=str(document.get("baseline_name") or ""),
            target=None
            if target is None
            else Target(float(target["bound"]), bool(target["at_least"])),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "figure": self.name,
            "unit": self.unit,
            "value": self.value,
            "repetitions": self.values,
            "baseline": self.baseline_value,
            "baseline_repetitions": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "target": None
            if self.target is None
            else {"bound": self.target.bound, "at_least": self.target.at_least},
            "met": self.met,
        }


def _floats(values: Iterable[Any]) -> list[float]:
    return [math.nan if value is None else float(value) for value in values]


def _ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}".replace(",", " ")
    return f"{ratio:.1f}" if ratio >= 10 else f"{ratio:.2f}"


def format_value(value: float | None, unit: str) -> str:
    """``2 500/s``, ``12.3 ms``, ``0.42``; a dash when nothing was measured."""
    if value is None or math.isnan(value):
        return "—"
    if unit == "ms":
        return (
            f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms".replace(",", " ")
        )
    if unit == "":
        return f"{value:.2f}"
    return f"{value:,.0f}{unit}".replace(",", " ")


def markdown_table(figures: Sequence[Figure], *, value_header: str = "value") -> str:
    """The report's table; ``value_header`` names the column of the values."""
    header = ["figure", value_header, "baseline", "ratio", "target", "met?"]
    lines = [_markdown_row(header), _markdown_row(["---"] * len(header))]
    lines += [_markdown_row(figure.row()) for figure in figures]
    return "\n".join(lines)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def machine_line() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{os.cpu_count()} cores (`os.cpu_count()`), {now}"


def say(text: str) -> None:
    """A progress line, on stderr so that stdout carries only the report."""
    print(text, file=sys.stderr, flush=True)


def checkout() -> str:
    """The checkout measured: its commit, and whether files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit {head}" + (" with uncommitted changes" if changed else "")


BenchT = TypeVar("BenchT")


def run_bench(
    name: str,
    measure: Callable[[Endpoints, Path], Coroutine[Any, Any, BenchT]],
    report: Callable[[BenchT, float, str], tuple[str, dict[str, Any]]],
    json_path: Path | None,
) -> int:
    """A bench's ``main``: the stack in a scratch folder, ``measure`` on a
    uvloop, then ``report(result, seconds, checkout)`` to stdout and
    ``bench/results/<name>.md``. Ctrl-C or SIGTERM stop everything started."""
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    began = time.monotonic()
    measured = checkout()  # before the run: the code it loads
    try:
        with tempfile.TemporaryDirectory(prefix="redial-bench-") as folder:
            workdir = Path(folder)
            with (
                running_stack(workdir) as endpoints,
                asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
            ):
                result = runner.run(measure(endpoints, workdir))
    except KeyboardInterrupt:
        print("interrupted; everything started has been stopped", file=sys.stderr)
        return 130
    markdown, payload = report(result, time.monotonic() - began, measured)
    print(markdown)
    path = write_results(name, markdown, payload, json_path)
    print(f"\nwritten to {path}", file=sys.stderr)
    return 0


def write_results(
    name: str,
    markdown: str,
    payload: dict[str, Any],
    json_path: Path | None,
    *,
    folder: Path | None = None,
) -> Path:
    """Write ``bench/results/<name>.md`` and ``<name>.json`` (the payload, whose
    ``figures`` are :meth:`Figure.as_json` documents: what ``bench.report``
    collects), and the JSON to ``json_path`` too if asked; returns the first.

    ``folder`` replaces ``bench/results`` (for tests).
    """
    folder = RESULTS_DIR if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text(markdown + "\n")
    # default=str: a fact of a type JSON lacks (a Path, a zone) cannot cost
    # the run its figures.
    document = orjson.dumps(payload, default=str, option=orjson.OPT_INDENT_2)
    (folder / f"{name}.json").write_bytes(document)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(document)
    return path


def spread(values: Sequence[float]) -> str:
    """Several runs' values for a report line: "1 234, 1 250, 1 198"."""
    return ", ".join(amount(value) for value in values) or "—"


def amount(value: float) -> str:
    """A figure for prose: whole above 100, else 3 significant digits."""
    if math.isnan(value):
        return "—"
    if value >= 100 or value == int(value):
        return f"{value:,.0f}".replace(",", " ")
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def histogram_quantile(
    before: dict[float, float], after: dict[float, float], quantile: float
) -> float:
    """Like PromQL's histogram_quantile over ``after`` minus ``before``
    (cumulative counts by bucket bound), in ms: interpolated in the bucket."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    if not counts or counts[-1] <= 0:
        return math.nan
    rank = quantile * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower * 1000
            share = (rank - below) / (count - below) if count > below else 0.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, count
    return math.nan


def repetition_lines(rows: Sequence[Any]) -> list[str]:
    """A report's "each repetition" list: every run's value, then baseline."""
    return [
        f"- {row.name}: {spread(row.values)}"
        + (f"; {spread(row.baseline)}" if row.baseline else "")
        for row in rows
    ]
