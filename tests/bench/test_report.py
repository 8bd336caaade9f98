"""The bench aggregator's pure parts: discovery, collecting, the table.

No stack is started: benches are stand-in scripts and payloads written the
way ``bench._common.write_results`` writes them.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path

import orjson
import pytest

from bench import report
from bench._common import Figure, Target, write_results
from bench.report import Outcome

DATE = dt.datetime(2026, 12, 3, 20, 0, tzinfo=dt.UTC)


def posts_figure() -> Figure:
    return Figure(
        "single posts/s",
        "/s",
        [100.0, 120.0, 110.0],
        [200.0, 220.0, 210.0],
        "asyncpg txn",
        Target(150.0, at_least=True),
    )


def latency_figure() -> Figure:
    return Figure(
        "speed to lead p99",
        "ms",
        [900.0, math.nan, 700.0],
        [450.0, 400.0, 500.0],
        "outbox → consumer lag",
        Target(1_000.0, at_least=False),
    )


def write_bench(folder: Path, name: str, figures: list[Figure]) -> Path:
    payload = {"figures": [figure.as_json() for figure in figures], "note": Path()}
    write_results(name, f"# {name}", payload, None, folder=folder)
    return folder / f"{name}.json"


def test_discovery_lists_benches_but_not_private_modules_or_the_aggregator(
    tmp_path: Path,
) -> None:
    for file in ("_common.py", "__init__.py", "report.py", "queue.py", "e2e.py"):
        (tmp_path / file).write_text("")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "intake.py").write_text("")
    (tmp_path / "notes.md").write_text("")

    assert report.discover(tmp_path) == ["e2e", "queue"]


def test_discovery_of_the_real_folder_includes_every_bench() -> None:
    names = report.discover()

    assert {"intake", "queue", "metrics", "nurture", "e2e"} <= set(names)
    assert "report" not in names
    assert "_common" not in names


def test_write_results_leaves_json_that_collect_reads_back(tmp_path: Path) -> None:
    path = write_bench(tmp_path, "intake", [posts_figure(), latency_figure()])

    figures = report.collect(path)

    assert (tmp_path / "intake.md").read_text() == "# intake\n"
    assert [figure.name for figure in figures] == [
        "single posts/s",
        "speed to lead p99",
    ]
    assert figures[0].row() == posts_figure().row()
    # A NaN repetition is written as null and read back as NaN, not as a value.
    assert figures[1].value == 800.0
    assert figures[1].row() == latency_figure().row()


def test_table_shows_value_beside_baseline_ratio_target_and_met() -> None:
    outcome = Outcome("intake", 0, 12.0, [posts_figure(), latency_figure()])

    lines = report.table([outcome]).splitlines()

    assert lines[0] == "| bench | figure | value | baseline | ratio | target | met? |"
    assert lines[2] == (
        "| [intake](intake.md) | single posts/s | 110/s | 210/s (asyncpg txn)"
        " | 0.52 | ≥ 150/s | **no** |"
    )
    assert lines[3] == (
        "| [intake](intake.md) | speed to lead p99 | 800 ms"
        " | 450 ms (outbox → consumer lag) | 1.78 | ≤ 1 000 ms | yes |"
    )


def test_a_failed_bench_is_a_row_with_its_exit_code_and_the_others_still_run(
    tmp_path: Path,
) -> None:
    # The stand-in queue bench writes its figures as a real one would.
    written = write_bench(tmp_path / "made", "queue", [posts_figure()])
    copy = f"import shutil; shutil.copy({str(written)!r}, {str(tmp_path)!r})"
    scripts = {
        "intake": [sys.executable, "-c", "import sys; sys.exit(3)"],
        "queue": [sys.executable, "-c", copy],
    }
    ran: list[str] = []

    def runner(name: str, arguments: object) -> Outcome:
        ran.append(name)
        return report.run_one(name, [], folder=tmp_path, command=scripts[name])

    outcomes = report.run_all(["intake", "queue"], ["--quick"], runner=runner)
    page = report.render(
        outcomes,
        arguments=["--quick"],
        cores=2,
        date=DATE,
        measured="commit abc1234",
    )

    assert ran == ["intake", "queue"]
    assert outcomes[0].failed
    assert outcomes[0].exit_code == 3
    assert not outcomes[1].failed
    assert "| [intake](intake.md) | **failed** (exit code 3) | — | — | — | — | — |" in (
        page
    )
    assert "| [queue](queue.md) | single posts/s | 110/s |" in page
    assert "Failed: intake." in page
    assert page.splitlines()[2].startswith(
        "2 cores (`os.cpu_count()`), 2026-12-03 20:00 UTC;"
        " `python -m bench.report --quick` on commit abc1234"
    )


def test_figures_a_failed_run_left_behind_are_not_shown(tmp_path: Path) -> None:
    write_bench(tmp_path, "metrics", [posts_figure()])

    outcome = report.run_one(
        "metrics",
        [],
        folder=tmp_path,
        command=[sys.executable, "-c", "import sys; sys.exit(1)"],
    )

    assert outcome.failed
    assert outcome.figures == []
    assert not (tmp_path / "metrics.json").exists()


def test_a_bench_that_exits_0_without_figures_is_shown_as_failed(
    tmp_path: Path,
) -> None:
    outcome = report.run_one(
        "nurture", [], folder=tmp_path, command=[sys.executable, "-c", "pass"]
    )

    row = report.table([outcome]).splitlines()[2]

    assert outcome.failed
    assert row.startswith("| [nurture](nurture.md) | **failed** (no figures read:")


def test_summary_json_lists_every_bench_and_its_figures() -> None:
    outcomes = [
        Outcome("e2e", 0, 30.0, [latency_figure()]),
        Outcome("queue", 2, 1.0),
    ]

    document = orjson.loads(report.summary_json(outcomes, date=DATE))

    assert [bench["name"] for bench in document["benches"]] == ["e2e", "queue"]
    assert document["benches"][0]["figures"][0]["value"] == 800.0
    assert document["benches"][1]["failed"] is True


def test_options_the_aggregator_does_not_know_go_to_every_bench() -> None:
    options, passed = report.parse(["--only", "e2e,queue", "--quick", "--seconds=5"])

    assert options.names == ["e2e", "queue"]
    assert passed == ["--quick", "--seconds=5"]


def test_an_unknown_bench_name_is_refused() -> None:
    with pytest.raises(SystemExit):
        report.parse(["--only", "nosuch"])
