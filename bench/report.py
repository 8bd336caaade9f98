"""Every benchmark, one after the other, and one table of all their figures.

    .venv/bin/python -m bench.report [--only NAME[,NAME...]] [--list]
        [BENCH OPTIONS ...]

Finds the bench modules (every ``bench/*.py`` but ``_common.py``, other
private modules and this one), runs each as its own process (``python -m
bench.<name>``, with the options this module does not know passed on, such
as ``--quick``), and collects the figures each wrote to
``bench/results/<name>.json`` through ``write_results``. The table goes to
``bench/results/summary.md`` and to stdout, with the machine's core count and
the date; a bench that failed, or wrote no figures, has a row that says so,
and the benches after it still run. Each bench's own output (its table and
notes) goes to stderr as it runs, and stays in ``bench/results/<name>.md``.

Exit status: 0 when every bench succeeded, 1 when one did not, 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench._common import RESULTS_DIR, Figure, checkout

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
#: Modules under bench/ that are not benchmarks (besides private ``_*.py``).
NOT_BENCHES = frozenset({"report"})
#: Where a bench's own output goes: our stderr, by descriptor, so that it
#: works whatever Python has put in ``sys.stderr``.
_STDERR = 2
#: Set when we were sent SIGTERM: only then has the running bench not had the
#: terminal's SIGINT already (a second one would cut its clean-up short).
_terminated = False
SUMMARY = "summary"
HEADER = ("bench", "figure", "value", "baseline", "ratio", "target", "met?")
#: What the table's columns mean, for the summary and the docs.
HOW_TO_READ = (
    "Each row is one figure of one bench: **value** is the median of the"
    " bench's repetitions; **baseline** is the simplest thing that does the"
    " same work (named in brackets), measured on the same machine in the same"
    " run, also a median; **ratio** = value ÷ baseline, so above 1 the"
    " service does more, or for a latency takes longer, than the baseline;"
    " **target** is the bound the figure should reach and **met?** whether"
    " its value does. The machine is shared, so absolute values move between"
    " runs while ratios move much less: read the ratio first. A bench's own"
    " report, linked from its name, has its notes, CPU shares and every"
    " repetition."
)


# -- discovery ---------------------------------------------------------------


def discover(folder: Path = BENCH_DIR) -> list[str]:
    """The bench modules in ``folder``, by name, in alphabetical order."""
    return sorted(
        path.stem
        for path in folder.glob("*.py")
        if not path.stem.startswith("_") and path.stem not in NOT_BENCHES
    )


# -- running -----------------------------------------------------------------


@dataclass
class Outcome:
    """What one bench's run came to."""

    name: str
    exit_code: int
    seconds: float
    figures: list[Figure] = field(default_factory=list)
    #: Why there are no figures although the bench succeeded, if so.
    problem: str | None = None

    @property
    def failed(self) -> bool:
        return self.exit_code != 0 or self.problem is not None


def bench_command(name: str, arguments: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", f"bench.{name}", *arguments]


def run_one(
    name: str,
    arguments: Sequence[str],
    *,
    folder: Path = RESULTS_DIR,
    command: Sequence[str] | None = None,
) -> Outcome:
    """Run one bench to its end and collect what it wrote.

    The figures a previous run left are removed first, so a bench that fails
    cannot be shown with old ones. The bench's stdout goes to our stderr.
    Interrupted (Ctrl-C, or SIGTERM, which is passed on as SIGINT), the bench
    is given time to stop what it started, and KeyboardInterrupt propagates.
    """
    results = folder / f"{name}.json"
    results.unlink(missing_ok=True)
    # Its page too, or a failed bench's row would link to the last run's.
    (folder / f"{name}.md").unlink(missing_ok=True)
    began = time.monotonic()
    process = subprocess.Popen(
        list(command or bench_command(name, arguments)),
        cwd=ROOT,
        stdout=_STDERR,
    )
    try:
        code = process.wait()
    except KeyboardInterrupt:
        _stop(process)
        raise
    seconds = time.monotonic() - began
    if code != 0:
        return Outcome(name, code, seconds)
    try:
        figures = collect(results)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return Outcome(name, code, seconds, problem=f"no figures read: {error}")
    return Outcome(name, code, seconds, figures)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Let an interrupted bench clean up (it got the terminal's SIGINT too,
    unless we were sent SIGTERM); kill it if it takes too long."""
    if _terminated and process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def collect(path: Path) -> list[Figure]:
    """The figures in a bench's JSON, as ``write_results`` wrote them."""
    payload = orjson.loads(path.read_bytes())
    return [Figure.from_json(document) for document in payload["figures"]]


def run_all(
    names: Sequence[str],
    arguments: Sequence[str],
    *,
    runner: Callable[[str, Sequence[str]], Outcome] = run_one,
    announce: Callable[[str], None] = lambda text: None,
) -> list[Outcome]:
    """Each bench in turn; one that fails does not stop the others."""
    outcomes = []
    for number, name in enumerate(names, start=1):
        announce(f"== bench {number}/{len(names)}: {name} {' '.join(arguments)}")
        outcome = runner(name, arguments)
        announce(
            f"== {name}: "
            + (_failure(outcome) if outcome.failed else "done")
            + f" in {outcome.seconds:.0f} s"
        )
        outcomes.append(outcome)
    return outcomes


# -- the table ---------------------------------------------------------------


def _failure(outcome: Outcome) -> str:
    if outcome.exit_code != 0:
        return f"**failed** (exit code {outcome.exit_code})"
    return f"**failed** ({outcome.problem})"


def _cells(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def table(outcomes: Sequence[Outcome]) -> str:
    """One markdown table: every figure of every bench, or its failure."""
    lines = [_cells(HEADER), _cells(["---"] * len(HEADER))]
    for outcome in outcomes:
        bench = f"[{outcome.name}]({outcome.name}.md)"
        if outcome.failed:
            lines.append(_cells([bench, _failure(outcome), *["—"] * 5]))
            continue
        if not outcome.figures:
            lines.append(_cells([bench, "(no figures)", *["—"] * 5]))
        lines += [_cells([bench, *figure.row()]) for figure in outcome.figures]
    return "\n".join(lines)


def render(
    outcomes: Sequence[Outcome],
    *,
    arguments: Sequence[str],
    cores: int | None,
    date: dt.datetime,
    measured: str,
) -> str:
    """The whole summary page."""
    took = ", ".join(f"{o.name} {o.seconds:.0f} s" for o in outcomes)
    failed = [outcome.name for outcome in outcomes if outcome.failed]
    command = " ".join(["python -m bench.report", *arguments])
    lines = [
        "# Benchmark summary",
        "",
        f"{cores} cores (`os.cpu_count()`), {date:%Y-%m-%d %H:%M} UTC;"
        f" `{command}` on {measured}; {len(outcomes)} benches"
        f" ({took}).",
        "",
        HOW_TO_READ,
        "",
        table(outcomes),
        "",
        "Failed: " + ", ".join(failed) + "." if failed else "Every bench ran.",
    ]
    return "\n".join(lines)


def summary_json(outcomes: Sequence[Outcome], *, date: dt.datetime) -> bytes:
    document: dict[str, Any] = {
        "date": date.isoformat(),
        "cpu_count": os.cpu_count(),
        "benches": [
            {
                "name": outcome.name,
                "exit_code": outcome.exit_code,
                "seconds": outcome.seconds,
                "failed": outcome.failed,
                "problem": outcome.problem,
                "figures": [figure.as_json() for figure in outcome.figures],
            }
            for outcome in outcomes
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


# -- entry point -------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other option is passed to each bench (e.g. --quick).",
    )
    parser.add_argument("--only", help="comma-separated bench names to run")
    parser.add_argument(
        "--list", action="store_true", help="print the bench names and stop"
    )
    known, passed = parser.parse_known_args(argv)
    names = discover()
    if known.only:
        wanted = [name.strip() for name in known.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"no such bench: {', '.join(unknown)} (have {names})")
        names = [name for name in names if name in wanted]
    known.names = names
    return known, passed


def _on_sigterm(*_: object) -> None:
    global _terminated
    _terminated = True
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    options, passed = parse(argv)
    if options.list:
        print("\n".join(options.names))
        return 0
    # SIGTERM takes the same way out as Ctrl-C: the running bench is stopped.
    signal.signal(signal.SIGTERM, _on_sigterm)
    measured = checkout()
    date = dt.datetime.now(dt.UTC)

    def announce(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        outcomes = run_all(options.names, passed, announce=announce)
    except KeyboardInterrupt:
        print("interrupted; the running bench was stopped", file=sys.stderr)
        return 130
    page = render(
        outcomes,
        arguments=passed,
        cores=os.cpu_count(),
        date=date,
        measured=measured,
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{SUMMARY}.md").write_text(page + "\n")
    (RESULTS_DIR / f"{SUMMARY}.json").write_bytes(summary_json(outcomes, date=date))
    print(page)
    print(f"\nwritten to {RESULTS_DIR / (SUMMARY + '.md')}", file=sys.stderr)
    return 1 if any(outcome.failed for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
