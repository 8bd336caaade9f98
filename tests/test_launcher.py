"""`make run`'s launcher, as a newcomer meets it: a real process tree."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from shared.launcher.stack import free_port
from tests.conftest import ROOT, free_service_port_offset
from tests.kafka_reader import events_about


def _launcher_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This environment without external servers, so the launcher starts its
    own, with its data under ``tmp_path``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    return env | {"REDIAL_DATA_DIR": str(tmp_path / "data"), **settings}


def _read_welcome(launcher: subprocess.Popen[str]) -> str:
    assert launcher.stdout is not None
    lines: list[str] = []
    for line in launcher.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    return "".join(lines)


async def _queued(queue_url: str, lead_id: str) -> dict[str, object]:
    """The lead as the queue shows it, once its consumer has routed it (the
    consumer's first group join on Tansu can take several seconds)."""
    async with httpx.AsyncClient(base_url=queue_url) as http:
        async with asyncio.timeout(90):
            while True:
                answer = await http.get(f"/v1/leads/{lead_id}")
                if answer.status_code == 200:
                    document: dict[str, object] = answer.json()
                    return document
                assert answer.status_code == 404, answer.text
                await asyncio.sleep(0.2)


async def _counted(metrics_url: str, lead_id: str) -> dict[str, object]:
    """The lead's penetration once the metrics service has seen it queued."""
    async with httpx.AsyncClient(base_url=metrics_url) as http:
        async with asyncio.timeout(90):
            while True:
                answer = await http.get(f"/v1/leads/{lead_id}/penetration")
                if answer.status_code == 200 and answer.json()["pool"]:
                    document: dict[str, object] = answer.json()
                    return document
                assert answer.status_code in (200, 404), answer.text
                await asyncio.sleep(0.2)


async def test_launcher_runs_the_stack_takes_a_lead_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    broker_port = free_port()
    offset = free_service_port_offset()
    env = _launcher_env(
        tmp_path,
        REDIAL_BROKER_PORT=str(broker_port),
        REDIAL_PORT_OFFSET=str(offset),
        REDIAL_DEV_API_KEY="rdl_demo_for_the_launcher_test",
    )
    # Starting the process does not block; reading its output is done in a
    # thread so the session's event loop keeps serving the other fixtures.
    launcher = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "shared.launcher", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        welcome = await asyncio.to_thread(_read_welcome, launcher)
        assert "demo source API key: rdl_demo_for_the_launcher_test" in welcome
        intake_url = f"http://127.0.0.1:{8001 + offset}"
        assert intake_url in welcome
        assert f"http://127.0.0.1:{8002 + offset}" in welcome
        assert f"http://127.0.0.1:{8003 + offset}" in welcome
        children = psutil.Process(launcher.pid).children(recursive=True)

        async with httpx.AsyncClient(base_url=intake_url) as http:
            answer = await http.post(
                "/v1/leads",
                headers={"Authorization": "Bearer rdl_demo_for_the_launcher_test"},
                json={"phone": "+1 305 555 0123", "first_name": "Ada"},
            )
        assert answer.status_code == 202, answer.text
        lead_id = answer.json()["lead_id"]
        [event] = await events_about(f"127.0.0.1:{broker_port}", {lead_id}, count=1)
        assert event.type == "lead.received.v1"
        queued = await _queued(f"http://127.0.0.1:{8002 + offset}", lead_id)
        assert queued["pool"] == "default"
        # Waiting or ready depends on the wall clock's hour in Florida.
        assert queued["state"] in ("waiting", "ready")
        # The queue's lead.queued reaches the metrics service: the lead is
        # counted in its pool, its first attempt planned at once.
        counted = await _counted(f"http://127.0.0.1:{8003 + offset}", lead_id)
        assert (counted["pool"], counted["call_target"]) == ("default", 8)
        assert counted["attempts"] == 0

        launcher.send_signal(signal.SIGINT)
        rest, _ = await asyncio.to_thread(launcher.communicate, timeout=60)
        assert launcher.returncode == 0, welcome + rest
        assert "stopped" in rest
        assert not [child for child in children if child.is_running()]
        # The data stays for the next run; the server itself is stopped.
        assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
        assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()


async def test_launcher_refuses_a_taken_broker_port(tmp_path: Path) -> None:
    """Regression: with 9092 taken, the launcher took the other program for
    its broker and went on against it."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = _launcher_env(tmp_path, REDIAL_BROKER_PORT=str(port))
        finished = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "shared.launcher", "run"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert finished.returncode == 2
    assert f"port {port} for the broker is already in use" in finished.stderr
