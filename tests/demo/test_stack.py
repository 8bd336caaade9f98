"""Finding a stack through the launcher's stack file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from demo.stack import answers, launcher_alive, read_stack_file
from shared.launcher.stack import free_port


def _describe(path: Path, port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    path.write_text(
        json.dumps(
            {
                "pid": 12345,
                "services": {"intake": url, "queue": url, "metrics": url},
                "database_url": "postgresql://postgres:@/redial?host=/tmp/x",
            }
        )
    )


async def test_a_file_left_by_a_killed_launcher_reads_but_does_not_answer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stack.json"
    _describe(path, free_port())  # nothing listens there

    stack = read_stack_file(path)

    assert stack is not None
    assert stack.launcher_pid == 12345
    assert not await answers(stack)


def test_no_file_or_a_broken_one_means_no_stack(tmp_path: Path) -> None:
    assert read_stack_file(tmp_path / "stack.json") is None
    (tmp_path / "stack.json").write_text('{"pid": 1}')
    assert read_stack_file(tmp_path / "stack.json") is None


def test_a_launcher_is_alive_while_its_pid_runs(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    _describe(path, free_port())
    stack = read_stack_file(path)
    assert stack is not None
    assert launcher_alive(replace(stack, launcher_pid=os.getpid()))
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert not launcher_alive(replace(stack, launcher_pid=finished.pid))
