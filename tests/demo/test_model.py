"""The demo's call model: chance curves, outcomes, cadences."""

from __future__ import annotations

import re

import pytest

from demo.model import (
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


def _default_model(seed: int = 7) -> CallModel:
    return CallModel(ChanceCurve(DEFAULT_CONTACT), ChanceCurve(DEFAULT_CONVERT), seed)


def test_a_curve_parses_from_commas_and_repeats_its_last_value() -> None:
    curve = parse_curve("0.01, 0.02,0.5", "--convert-by-attempt")

    assert curve.chances == (0.01, 0.02, 0.5)
    assert [curve.at(n) for n in (1, 3, 4, 12)] == [0.01, 0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--convert-by-attempt: give chances separated by commas"),
        ("0.1,x", "--convert-by-attempt: value 2 ('x') is not a number"),
        ("0.1,,0.2", "--convert-by-attempt: value 2 ('') is not a number"),
        ("0.1,1.5", "--convert-by-attempt: attempt 2: 1.5 is not a chance between"),
        ("-0.1", "--convert-by-attempt: attempt 1: -0.1 is not a chance"),
        ("nan", "--convert-by-attempt: attempt 1: nan is not a chance"),
    ],
)
def test_a_bad_curve_is_refused_naming_the_option_and_the_value(
    text: str, message: str
) -> None:
    with pytest.raises(ModelError, match="^" + re.escape(message)):
        parse_curve(text, "--convert-by-attempt")


def test_a_conversion_chance_above_the_contact_chance_is_refused() -> None:
    with pytest.raises(ModelError, match=r"attempt 3: the conversion chance 0\.4 is"):
        CallModel(ChanceCurve((0.5, 0.5, 0.3)), ChanceCurve((0.1, 0.2, 0.4)), seed=1)


def test_the_default_curve_converts_few_before_call_three_most_on_five_to_eight() -> (
    None
):
    shares = _default_model().conversion_shares(call_target=8)

    assert sum(shares) == pytest.approx(1.0)
    assert sum(shares[:2]) < 0.10  # attempts 1 and 2
    assert sum(shares[4:8]) > 0.70  # attempts 5 to 8
    assert sum(shares[3:]) > 0.85  # lost had agents stopped at the third call


def test_conversion_chances_follow_the_leads_still_open() -> None:
    model = CallModel(ChanceCurve((0.5,)), ChanceCurve((0.5,)), seed=1)

    assert model.conversion_chances(3) == [0.5, 0.25, 0.125]


def test_outcomes_depend_only_on_seed_lead_and_attempt() -> None:
    calls = [(lead, attempt) for lead in range(1, 200) for attempt in range(1, 9)]
    first = [_default_model(7).outcome(lead, attempt) for lead, attempt in calls]
    # Another order of asking, as agents' loops interleave differently.
    again = {
        (lead, attempt): _default_model(7).outcome(lead, attempt)
        for lead, attempt in reversed(calls)
    }
    other_seed = [_default_model(8).outcome(lead, attempt) for lead, attempt in calls]

    assert first == [again[call] for call in calls]
    assert first != other_seed


def test_outcomes_follow_the_curves_over_many_calls() -> None:
    model = CallModel(
        ChanceCurve((0.5, 0.2)), ChanceCurve((0.1, 0.2)), seed=3, call_seconds=(1, 2)
    )
    first = [model.outcome(lead, 1) for lead in range(1, 4001)]
    second = [model.outcome(lead, 2) for lead in range(1, 4001)]

    assert sum(o.converted for o in first) / 4000 == pytest.approx(0.1, abs=0.02)
    assert sum(o.contacted for o in first) / 4000 == pytest.approx(0.5, abs=0.03)
    # On attempt 2 every contact converts: the two chances are equal.
    assert all(o.converted for o in second if o.contacted)
    assert {o.disposition for o in first} == {
        "converted", "contacted", "no_answer", "voicemail", "busy"
    }  # fmt: skip
    talks = [o.talk_seconds for o in first if o.contacted]
    assert min(talks) >= 1
    assert max(talks) <= 2


def test_a_cadence_parses_like_the_queue_reads_it() -> None:
    gaps = parse_cadence("0s 5s 1m 1.5m")

    assert gaps == (0.0, 5.0, 60.0, 90.0)
    # Attempts 1-6 with the last gap repeated, as the queue plans them.
    assert cadence_span(gaps, 6) == 0 + 5 + 60 + 90 + 90 + 90


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--cadence: give at least one gap"),
        ("0s 5x", r"--cadence: gap 2 \('5x'\) is not a duration"),
        ("-5s", r"--cadence: gap 1 \('-5s'\) is not a duration"),
    ],
)
def test_a_bad_cadence_is_refused_naming_the_gap(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_cadence(text)


def test_call_seconds_are_a_range_or_one_value() -> None:
    assert parse_range("0.1-0.4", "--call-seconds") == (0.1, 0.4)
    assert parse_range("0.2", "--call-seconds") == (0.2, 0.2)
    with pytest.raises(ModelError, match=r"--call-seconds: '0\.5-0\.1' is not a range"):
        parse_range("0.5-0.1", "--call-seconds")
    with pytest.raises(ModelError, match="--call-seconds: 'soon' is not MIN-MAX"):
        parse_range("soon", "--call-seconds")
