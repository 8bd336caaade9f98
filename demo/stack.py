"""Finding the stack ``make run`` started, or starting one for the demo.

The launcher describes a running stack in ``<REDIAL_DATA_DIR>/stack.json``
(service URLs, ``DATABASE_URL``, …). A file whose services do not answer is
left over from a launcher that was killed; the demo then starts the launcher
itself, as a child in its own session (so a Ctrl-C reaches the demo, which
stops it in order), and stops it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

logger = logging.getLogger(__name__)

STACK_FILE = "stack.json"
#: A first start initialises PostgreSQL's data folder, which takes a while.
START_TIMEOUT_SECONDS = 180.0


class StackUnavailable(RuntimeError):
    """No stack could be found or started; the message says why."""


@dataclass(frozen=True)
class Stack:
    intake: str
    queue: str
    metrics: str
    database_url: str
    launcher_pid: int

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Stack:
        services = document["services"]
        return cls(
            intake=services["intake"],
            queue=services["queue"],
            metrics=services["metrics"],
            database_url=document["database_url"],
            launcher_pid=int(document["pid"]),
        )


def default_stack_file() -> Path:
    return Path(os.environ.get("REDIAL_DATA_DIR", ".data")) / STACK_FILE


def read_stack_file(path: Path) -> Stack | None:
    """The stack a file describes; None when there is no usable file."""
    try:
        document = json.loads(path.read_text())
        return Stack.from_document(document)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("stack.file_unreadable path=%s error=%s", path, error)
        return None


def launcher_alive(stack: Stack) -> bool:
    """Whether the launcher that wrote the file still runs (a killed one
    leaves its file behind; a live one removes it before it stops)."""
    try:
        os.kill(stack.launcher_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to replace
    return True


async def answers(stack: Stack) -> bool:
    """Whether every service the demo needs is ready."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        for url in (stack.intake, stack.queue, stack.metrics):
            try:
                answer = await http.get(f"{url}/readyz")
            except httpx.HTTPError:
                return False
            if answer.status_code != 200:
                return False
    return True


class OwnStack:
    """A launcher the demo started, with its output in a log file."""

    def __init__(self, stack_file: Path) -> None:
        # The launcher always writes <data dir>/stack.json, whatever name the
        # demo was pointed at, so that is the file to wait for.
        self.stack_file = stack_file.with_name(STACK_FILE)
        self.log_path = stack_file.with_name("demo-stack.log")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> Stack:
        """Start the launcher and wait until it describes a ready stack."""
        process = self._spawn()
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                while True:
                    if process.poll() is not None:
                        raise StackUnavailable(
                            f"the launcher exited with {process.returncode}:\n"
                            + self._log_tail()
                        )
                    stack = read_stack_file(self.stack_file)
                    if stack is not None and stack.launcher_pid == process.pid:
                        return stack
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise StackUnavailable(
                f"the stack was not ready after {START_TIMEOUT_SECONDS:.0f} s:\n"
                + self._log_tail()
            ) from None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.stack_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.stack_file.unlink()  # left by a killed launcher
        env = os.environ | {"REDIAL_DATA_DIR": str(self.stack_file.parent)}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop
        self._process = subprocess.Popen(
            [sys.executable, "-m", "shared.launcher", "run"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self._process

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT, as Ctrl-C would: the launcher stops what it started."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("stack.stop_timeout pid=%s", process.pid)
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        return ""
