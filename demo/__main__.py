"""``python -m demo [options]``: a simulated call floor against a real stack.

Uses the stack ``make run`` started (found through ``<REDIAL_DATA_DIR>/
stack.json``) or starts one and stops it at the end. Exits 0 when the
report's figures agree with the demo's own tally, 1 when they differ, 2 when
the options or the stack are unusable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import shutil
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from demo import places
from demo.crm import CRMS
from demo.floor import Floor, FloorOptions, ProvisioningFailed, expected_run_seconds
from demo.model import (
    DEFAULT_CADENCE,
    DEFAULT_CONTACT,
    DEFAULT_CONVERT,
    CallModel,
    ChanceCurve,
    ModelError,
    cadence_span,
    parse_cadence,
    parse_curve,
    parse_range,
)
from demo.report import Check, RunFacts, checks, render
from demo.stack import (
    OwnStack,
    Stack,
    StackUnavailable,
    answers,
    default_stack_file,
    launcher_alive,
    read_stack_file,
)
from shared.clock import SystemClock
from shared.logging import configure

logger = logging.getLogger("demo")

#: Leads must stay callable this much longer than the run is expected to last.
CALLABLE_MARGIN_SECONDS = 300


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="python -m demo",
        description="A simulated call floor: CRMs post leads, agents dial them, "
        "and the metrics service reports penetration, speed to lead and the "
        "attempt at which deals closed.",
    )
    add = arguments.add_argument
    add("--duration", type=float, default=60.0, help="seconds the CRMs post leads (60)")
    add("--rate", type=float, default=1.0, help="leads per second, on average (1)")
    add("--agents", type=int, default=5, help="agents dialling (5)")
    add("--seed", type=int, default=7, help="the same seed gives the same outcomes (7)")
    add(
        "--contact-by-attempt",
        default=",".join(f"{chance:g}" for chance in DEFAULT_CONTACT),
        metavar="CHANCES",
        help="chance that call n reaches the lead, comma-separated; the last value"
        " repeats (default %(default)s)",
    )
    add(
        "--convert-by-attempt",
        default=",".join(f"{chance:g}" for chance in DEFAULT_CONVERT),
        metavar="CHANCES",
        help="chance that call n converts, at most the contact chance"
        " (default %(default)s)",
    )
    add(
        "--cadence",
        default=DEFAULT_CADENCE,
        help="gaps before each call ('%(default)s')",
    )
    add("--call-target", type=int, default=8, help="calls per lead (8)")
    add("--lease", type=int, default=15, help="lease length in seconds (15)")
    add(
        "--call-seconds",
        default="0.1-0.4",
        metavar="MIN-MAX",
        help="simulated talk time per call (0.1-0.4)",
    )
    add(
        "--drain",
        type=float,
        default=None,
        help="seconds to keep dialling after the last lead (default: the cadence's"
        " span + 20)",
    )
    add(
        "--stack-file",
        type=Path,
        default=None,
        help="the running stack's description (default $REDIAL_DATA_DIR/stack.json)",
    )
    add("--report-json", type=Path, default=None, help="also write the report here")
    return arguments


def options_from(arguments: argparse.Namespace) -> FloorOptions:
    """Checked options; raises ModelError naming the option that is wrong."""
    positive = {
        "--duration": arguments.duration,
        "--rate": arguments.rate,
        "--agents": arguments.agents,
        "--call-target": arguments.call_target,
    }
    for option, value in positive.items():
        if not value > 0:
            raise ModelError(f"{option}: must be more than 0, not {value}")
    if not 5 <= arguments.lease <= 3600:
        raise ModelError(
            f"--lease: the queue takes 5 to 3600 seconds, not {arguments.lease}"
        )
    if arguments.call_target > 100:
        raise ModelError("--call-target: the queue takes at most 100")
    contact: ChanceCurve = parse_curve(
        arguments.contact_by_attempt, "--contact-by-attempt"
    )
    convert: ChanceCurve = parse_curve(
        arguments.convert_by_attempt, "--convert-by-attempt"
    )
    call_seconds = parse_range(arguments.call_seconds, "--call-seconds")
    if call_seconds[1] >= arguments.lease:
        raise ModelError("--call-seconds: a call must end well inside the --lease")
    model = CallModel(contact, convert, arguments.seed, call_seconds)
    cadence = parse_cadence(arguments.cadence)
    drain = arguments.drain
    if drain is None:
        drain = cadence_span(cadence, arguments.call_target) + 20
    if drain < 0:
        raise ModelError(f"--drain: must be 0 or more, not {drain}")
    return FloorOptions(
        arrival_seconds=arguments.duration,
        leads_per_second=arguments.rate,
        agents=arguments.agents,
        seed=arguments.seed,
        model=model,
        cadence=cadence,
        call_target=arguments.call_target,
        lease_seconds=arguments.lease,
        drain_seconds=drain,
    )


class Progress:
    """One line rewritten in place on a terminal; a line every 5 s otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._count = 0

    def __call__(self, line: str) -> None:
        if self._tty:
            width = shutil.get_terminal_size().columns - 1
            self._stream.write("\r\x1b[2K" + line[:width])
            self._stream.flush()
            return
        if line and self._count % 5 == 0:
            print(line, file=self._stream, flush=True)
        self._count += 1


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    configure(json=False, level="WARNING")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        options = options_from(arguments)
    except ModelError as error:
        print(f"python -m demo: {error}", file=sys.stderr)
        return 2
    stack_file = arguments.stack_file or default_stack_file()
    own_holder: list[OwnStack] = []
    try:
        return asyncio.run(_demo(options, arguments, stack_file, own_holder))
    except (StackUnavailable, ProvisioningFailed) as error:
        print(f"python -m demo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for own in own_holder:
            print("stopping the stack the demo started…", flush=True)
            own.stop()


async def _demo(
    options: FloorOptions,
    arguments: argparse.Namespace,
    stack_file: Path,
    own_holder: list[OwnStack],
) -> int:
    stack = await _find_or_start(stack_file, own_holder)
    clock = SystemClock()
    now = clock.now()
    run_seconds = expected_run_seconds(options) + CALLABLE_MARGIN_SECONDS
    choice = places.choose(now, run_seconds)
    run_id = secrets.token_hex(3)
    floor = Floor(
        stack,
        options,
        run_id=run_id,
        places=choice.places,
        clock=clock,
        progress=Progress(sys.stdout),
    )
    _introduce(floor, options, choice)
    figures = await floor.run()
    pools = list(floor.pools.values())
    facts = RunFacts(
        run_id=run_id,
        seed=options.seed,
        arrivals_seconds=options.arrival_seconds,
        total_seconds=floor.elapsed,
        agents=options.agents,
        call_target=options.call_target,
        cadence=arguments.cadence,
        open_leads=floor.tally.open_leads,
    )
    print("\n".join(render(figures, floor.tally, pools, facts)), flush=True)
    found = checks(figures, floor.tally, pools)
    if arguments.report_json is not None:
        _write_json(arguments.report_json, floor, figures.as_json(), found, facts)
    return 0 if all(check.ok for check in found) else 1


async def _find_or_start(stack_file: Path, own_holder: list[OwnStack]) -> Stack:
    stack = read_stack_file(stack_file)
    if stack is not None and await answers(stack):
        print(f"Using the running stack described in {stack_file}.", flush=True)
        return stack
    if stack is not None and launcher_alive(stack):
        # Starting a second launcher on the same data folder would fail on
        # its ports and PostgreSQL, after removing the live stack's file.
        raise StackUnavailable(
            f"the stack described in {stack_file} (launcher pid"
            f" {stack.launcher_pid}) is running but not ready: try again in a"
            " moment, or remove the file if that process is not the launcher"
        )
    own = OwnStack(stack_file)
    own_holder.append(own)
    print(
        f"No running stack in {stack_file.parent}; starting one (log:"
        f" {own.log_path}). The first start initialises PostgreSQL…",
        flush=True,
    )
    return await own.start()


def _introduce(floor: Floor, options: FloorOptions, choice: places.Choice) -> None:
    shares = options.model.conversion_shares(options.call_target)
    early, late = sum(shares[:2]), sum(shares[3:])
    rate = options.leads_per_second
    paragraphs = [
        f"Run {floor.run_id}: pools {', '.join(floor.pools.values())}; sources"
        f" {', '.join(crm.source for crm in CRMS)}; {_agents(options.agents)}.",
        f"For {options.arrival_seconds:.0f} s the CRMs post {rate:g}"
        f" lead{'' if rate == 1 else 's'} a second on average through intake's"
        " signed webhook; then the agents work the cadence to its end (at most"
        f" {options.drain_seconds:.0f} s more). The model expects"
        f" {100 * early:.0f} % of conversions before call 3 and {100 * late:.0f} %"
        " after it.",
    ]
    lines = [""]
    for paragraph in paragraphs:
        lines += textwrap.wrap(paragraph, places.WIDTH, break_on_hyphens=False)
    print("\n".join([*lines, *choice.described(), ""]), flush=True)


def _agents(count: int) -> str:
    return f"{count} agent{'' if count == 1 else 's'}"


def _write_json(
    path: Path,
    floor: Floor,
    figures: dict[str, object],
    found: list[Check],
    facts: RunFacts,
) -> None:
    tally = floor.tally
    document = {
        "run_id": facts.run_id,
        "seed": facts.seed,
        "window": floor.window,
        "pools": list(floor.pools.values()),
        "sources": sorted({lead.source for lead in tally.leads.values()}),
        "metrics": figures,
        "tally": {
            "leads": len(tally.leads),
            "duplicates": tally.duplicates,
            "refused": tally.refused,
            "calls": tally.calls,
            "failed_outcomes": tally.failed_outcomes,
            "calls_by_pool": dict(tally.calls_by_pool),
            "calls_by_source": dict(tally.calls_by_source),
            "conversions_by_attempt": {
                str(attempt): count
                for attempt, count in sorted(tally.conversions_by_attempt.items())
            },
            "first_contacts_by_attempt": {
                str(attempt): count
                for attempt, count in sorted(tally.first_contacts_by_attempt.items())
            },
            "exhausted": tally.exhausted,
            "open_leads": tally.open_leads,
        },
        "checks": [check.as_json() for check in found],
        "generated_at": SystemClock().now().isoformat(),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
