"""``python -m shared.launcher run|prepare``.

``run`` starts what is missing (embedded PostgreSQL unless ``DATABASE_URL``
is set, Tansu unless ``KAFKA_BOOTSTRAP_SERVERS`` is set), prepares topics and
schemas, starts every service, provisions the ``demo`` source, prints the
URLs and waits; Ctrl-C stops everything it started.

``REDIAL_DATA_DIR`` (default ``.data``), ``REDIAL_BROKER_PORT`` (default 9092)
and ``REDIAL_PORT_OFFSET`` (added to the service ports 8001-8004) let a second
stack run beside a first, as the launcher's own test does.

While the stack is up, ``<data dir>/stack.json`` says where it is: the
launcher's pid, each service's URL, ``DATABASE_URL``, the Kafka bootstrap
servers and the ``demo`` source's API key and webhook secret (readable by the
owner only). Tools such as ``make demo`` find the stack through it. It is
written once every service is ready and removed before anything stops.

``tail [TOPIC] [--follow]`` prints a topic's records from the start, one JSON
document per line (``KAFKA_BOOTSTRAP_SERVERS``, default 127.0.0.1:9092).

``prepare`` only creates topics and applies migrations against the configured
``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` (docker-compose runs it once
before the services start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.clock import SystemClock
from shared.kafka import read_from_start
from shared.launcher.stack import (
    SERVICE_PORTS,
    Broker,
    Fleet,
    PortInUse,
    Postgres,
    ServiceProcess,
    ensure_database,
    existing_services,
    prepare,
    source_command,
    start_postgres,
)
from shared.logging import configure
from shared.settings import LEAD_EVENTS_TOPIC, ServiceSettings

logger = logging.getLogger("shared.launcher")

DATABASE_NAME = "redial"
#: Where a running stack describes itself, inside its data folder.
STACK_FILE = "stack.json"
DEV_WEBHOOK_SECRET = "whsec_demo_local_only"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.launcher")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="start the embedded stack and services")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("REDIAL_DATA_DIR", ".data")),
        help="where embedded PostgreSQL keeps its data (default .data)",
    )
    commands.add_parser("prepare", help="create topics and apply migrations")
    tail = commands.add_parser("tail", help="print a topic's events from the start")
    tail.add_argument("topic", nargs="?", default=LEAD_EVENTS_TOPIC)
    tail.add_argument("--follow", action="store_true", help="keep waiting for more")
    arguments = parser.parse_args(argv)
    configure(json=False)

    if arguments.command == "prepare":
        settings = ServiceSettings()
        asyncio.run(
            prepare(
                settings.database_url,
                settings.kafka_bootstrap_servers,
                partitions=settings.topic_partitions,
                replication=settings.topic_replication,
            )
        )
        print("topics and schemas are ready")
        return 0
    if arguments.command == "tail":
        bootstrap = ServiceSettings().kafka_bootstrap_servers
        asyncio.run(_tail(bootstrap, arguments.topic, follow=arguments.follow))
        return 0
    try:
        return _run(arguments.data_dir.resolve())
    except PortInUse as error:
        print(f"cannot start the stack: {error}", file=sys.stderr)
        return 2


async def _tail(bootstrap: str, topic: str, *, follow: bool) -> None:
    """Print every record of ``topic`` as one JSON line (value as sent)."""
    async for records in read_from_start(bootstrap, topic, idle_ms=2000):
        for record in records:
            print(record.value.decode(errors="replace"), flush=True)
        if not records and not follow:
            return


def _run(data_dir: Path) -> int:
    started_postgres: Postgres | None = None
    broker: Broker | None = None
    fleet: Fleet | None = None
    services: list[ServiceProcess] = []
    stack_file: Path | None = None
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            started_postgres = start_postgres(data_dir / "postgres", keep=True)
            database_url = asyncio.run(
                ensure_database(started_postgres.dsn, DATABASE_NAME)
            )
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker_port = int(os.environ.get("REDIAL_BROKER_PORT", "9092"))
            broker = Broker(broker_port, log_path=data_dir / "tansu.log")
            broker.start()
            bootstrap = broker.bootstrap
        partitions = ServiceSettings().topic_partitions
        asyncio.run(prepare(database_url, bootstrap, partitions=partitions))

        # An offset moves every service port, for a second stack beside a first.
        offset = int(os.environ.get("REDIAL_PORT_OFFSET", "0"))
        ports = {name: SERVICE_PORTS[name] + offset for name in existing_services()}
        env = {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "REDIAL_ENVIRONMENT": "development",
        }
        if "queue" in ports:
            # The manager's page (metrics) shows the queue's agents and depth.
            env["METRICS_QUEUE_URL"] = os.environ.get(
                "METRICS_QUEUE_URL", f"http://127.0.0.1:{ports['queue']}"
            )
        fleet = Fleet({name: [port] for name, port in ports.items()}, env)
        services = list(fleet)
        fleet.start()
        api_key, webhook_secret = _provision_demo_source(env)
        stack_file = _write_stack_file(
            data_dir, services, database_url, bootstrap, api_key, webhook_secret
        )
        _print_welcome(services, database_url, bootstrap, api_key)
        _wait_for_interrupt(services)
    finally:
        # First, so nothing finds a stack that is going away.
        if stack_file is not None:
            with contextlib.suppress(FileNotFoundError):
                stack_file.unlink()
        if fleet is not None:
            fleet.stop()
        if broker is not None:
            broker.stop()
        if started_postgres is not None:
            started_postgres.stop()
        print("stopped", flush=True)
    return 0


def _provision_demo_source(env: dict[str, str]) -> tuple[str, str]:
    """The ``demo`` source exists only in the embedded stack, for trying the API.

    Returns its API key and webhook secret.
    """
    api_key = (
        os.environ.get("REDIAL_DEV_API_KEY") or f"rdl_demo_{secrets.token_urlsafe(24)}"
    )
    webhook_secret = os.environ.get("REDIAL_DEV_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
    subprocess.run(
        source_command("demo", api_key=api_key, webhook_secret=webhook_secret),
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return api_key, webhook_secret


def _write_stack_file(
    data_dir: Path,
    services: list[ServiceProcess],
    database_url: str,
    bootstrap: str,
    api_key: str,
    webhook_secret: str,
) -> Path:
    """Describe the running stack in ``<data dir>/stack.json``, atomically.

    It holds credentials, so it is created readable by its owner only.
    """
    document = {
        "pid": os.getpid(),
        "started_at": SystemClock().now().isoformat(),
        "services": {service.name: service.url for service in services},
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "demo_source": {
            "name": "demo",
            "api_key": api_key,
            "webhook_secret": webhook_secret,
        },
    }
    path = data_dir / STACK_FILE
    partial = path.with_name(f".{STACK_FILE}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    os.replace(partial, path)
    return path


def _print_welcome(
    services: list[ServiceProcess], database_url: str, bootstrap: str, api_key: str
) -> None:
    lines = ["", "Redial is running:"]
    lines += [
        f"  {service.name:<8} {service.url}  (docs: {service.url}/docs)"
        for service in services
    ]
    lines += [
        f"  postgres {database_url}",
        f"  kafka    {bootstrap}",
        "",
        f"  demo source API key: {api_key}",
        "",
        "Try:",
        f"  curl -s -X POST {services[0].url}/v1/leads \\",
        f"    -H 'Authorization: Bearer {api_key}' \\",
        "    -H 'Content-Type: application/json' \\",
        """    -d '{"phone": "+1 305 555 0123", "first_name": "Ada"}'""",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


def _wait_for_interrupt(services: list[ServiceProcess]) -> None:
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            for service in services:
                if service.process is not None and service.process.poll() is not None:
                    print(f"{service.name} exited; stopping", flush=True)
                    return
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
