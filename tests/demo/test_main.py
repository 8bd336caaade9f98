"""``python -m demo``'s options: refused with a message that names them."""

from __future__ import annotations

import pytest

from demo.__main__ import main, options_from, parser


def test_the_defaults_make_a_run_of_two_to_three_minutes() -> None:
    options = options_from(parser().parse_args([]))

    # Arrivals, then the cadence's last lead runs its course.
    assert options.arrival_seconds + options.drain_seconds <= 180
    assert options.call_target == 8
    assert options.cadence[-1] <= 60


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--convert-by-attempt", "0.1,x"], "--convert-by-attempt: value 2 ('x')"),
        (
            ["--contact-by-attempt", "0.01"],
            "attempt 3: the conversion chance 0.02 is above",
        ),
        (["--rate", "0"], "--rate: must be more than 0"),
        (["--agents", "0"], "--agents: must be more than 0"),
        (["--lease", "2"], "--lease: the queue takes 5 to 3600 seconds"),
        (["--call-seconds", "1-20"], "--call-seconds: a call must end well inside"),
        (["--cadence", "soon"], "--cadence: gap 1 ('soon') is not a duration"),
    ],
)
def test_a_bad_option_exits_2_before_touching_a_stack(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*arguments, "--stack-file", "/nonexistent/stack.json"]) == 2
    assert message in capsys.readouterr().err
