"""``python -m demo`` end to end against a stack the launcher started."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from shared.launcher.stack import free_port
from tests.conftest import ROOT, free_service_port_offset


def _stack_file(path: Path, launcher: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The launcher's description of its stack, once it is up (in a thread)."""
    deadline = time.monotonic() + 90
    while not path.exists():
        assert launcher.poll() is None, "the launcher exited"
        assert time.monotonic() < deadline, "no stack file after 90 s"
        time.sleep(0.1)
    document: dict[str, Any] = json.loads(path.read_text())
    return document


async def _metrics(url: str, report: dict[str, Any]) -> dict[str, Any]:
    """What the metrics API answers now, for the run's pools."""
    window = report["window"]
    async with httpx.AsyncClient(base_url=url) as http:
        by_pool = await http.get(
            "/v1/penetration", params={"group_by": "pool", "window": window}
        )
        distributions = {
            pool: (
                await http.get(
                    "/v1/attempts-distribution", params={"pool": pool, "window": window}
                )
            ).json()
            for pool in report["pools"]
        }
    return {
        "by_pool": [
            group
            for group in by_pool.json()["groups"]
            if group["pool"] in report["pools"]
        ],
        "distributions": distributions,
    }


async def test_the_demo_reports_what_the_metrics_api_and_its_tally_both_say(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    offset = free_service_port_offset()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    } | {
        "REDIAL_DATA_DIR": str(data_dir),
        "REDIAL_BROKER_PORT": str(free_port()),
        "REDIAL_PORT_OFFSET": str(offset),
    }
    launcher = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-m", "shared.launcher", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        stack = await asyncio.to_thread(_stack_file, data_dir / "stack.json", launcher)
        assert stack["pid"] == launcher.pid
        assert stack["services"]["metrics"] == f"http://127.0.0.1:{8003 + offset}"
        assert stack["demo_source"]["api_key"].startswith("rdl_demo_")
        assert stat.S_IMODE((data_dir / "stack.json").stat().st_mode) == 0o600

        report_path = tmp_path / "report.json"
        demo = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "demo", "--duration", "6", "--rate", "2"],
            *["--agents", "3", "--seed", "11", "--call-target", "4"],
            *["--cadence", "0s 1s 2s 3s", "--contact-by-attempt", "0.6"],
            *["--convert-by-attempt", "0.1,0.2,0.3,0.5", "--call-seconds", "0.05-0.1"],
            *["--drain", "25", "--report-json", str(report_path)],
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(75):
            output_bytes, _ = await demo.communicate()
        output = output_bytes.decode()
        assert demo.returncode == 0, output
        assert "Using the running stack described in" in output
        assert "Calling hours: it is" in output
        assert "All figures agree." in output

        report = json.loads(report_path.read_text())
        tally = report["tally"]
        assert tally["leads"] > 0
        assert tally["open_leads"] == 0, output
        assert (tally["duplicates"], tally["refused"], tally["failed_outcomes"]) == (
            0,
            0,
            0,
        )
        assert all(check["ok"] for check in report["checks"]), report["checks"]

        # The report printed the API's figures as they stand: every lead has
        # ended, so nothing more falls due and the answers no longer move.
        now = await _metrics(stack["services"]["metrics"], report)
        assert now["by_pool"] == report["metrics"]["by_pool"]
        assert now["distributions"] == report["metrics"]["distributions"]
        # ... and they are the demo's own counts, exactly.
        assert sum(group["attempts"] for group in now["by_pool"]) == tally["calls"]
        assert sum(group["leads"] for group in now["by_pool"]) == tally["leads"]
        converted: Counter[str] = Counter()
        for document in now["distributions"].values():
            for row in document["attempts"]:
                if row["converted"]:
                    converted[str(row["attempt"])] += row["converted"]
        assert dict(converted) == tally["conversions_by_attempt"]
        late = sum(
            d["conversions_after_third_attempt"] for d in now["distributions"].values()
        )
        assert late == tally["conversions_by_attempt"].get("4", 0)
        calls = tally["calls"]
        assert re.search(rf"\n  ok +calls +metrics {calls}  demo {calls}\n", output)

        # The demo tidied up after itself: routes back, agents offline.
        async with httpx.AsyncClient(base_url=stack["services"]["queue"]) as http:
            routing = (await http.get("/v1/routing")).json()
            agent = (await http.get("/v1/agents/demo-agent-01")).json()
        assert not [r for r in routing["routes"] if r["pool"] in report["pools"]]
        assert agent["status"] == "offline"

        launcher.send_signal(signal.SIGINT)
        await asyncio.to_thread(launcher.wait, 60)
        assert launcher.returncode == 0
        assert not (data_dir / "stack.json").exists()
    finally:
        if launcher.poll() is None:
            # Let it stop what it started; its session goes if it will not.
            launcher.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(launcher.wait, 60)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
