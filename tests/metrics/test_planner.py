"""The call-target planner: the worked plans, the edges, and properties.

Pure logic, no database. The first three tests are the worked examples of
docs/target-planner.md, checked to the last digit: when one of them changes,
the document changes with it.
"""

from __future__ import annotations

import math
import typing
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.metrics.planner import PlanRequest, PlanResult, plan_targets

PROPERTIES = settings(max_examples=200, deadline=None, database=None)


def plan_for(**fields: typing.Any) -> PlanResult:
    """Plan worked example 1, with ``fields`` changed."""
    values: dict[str, typing.Any] = {
        "new_leads_per_day": 200,
        "agents": 10,
        "dialing_hours_per_day": 8,
        "minutes_per_call": 6,
        "minutes_between_calls": 120,
        "target_attempts": 8,
    }
    values.update(fields)
    return plan_targets(PlanRequest(**values))


# --- the worked examples of docs/target-planner.md ---------------------------


def test_example_1_a_team_with_half_the_capacity_reaches_half_the_target() -> None:
    result = plan_for()

    assert result == PlanResult(
        capacity_calls_per_day=800.0,
        calls_needed_per_day=1600.0,
        sustainable_attempts_per_lead=4.0,
        penetration=0.5,
        agents_needed=20,
        max_attempts_per_lead_per_day=4,
        days_to_reach_target=2,
        leads_in_progress=400.0,
        attempts_within_horizon=8,
        target_reachable_in_horizon=True,
    )


def test_example_2_a_team_whose_capacity_exactly_covers_the_target() -> None:
    result = plan_for(
        new_leads_per_day=70,
        agents=10,
        dialing_hours_per_day=6,
        minutes_per_call=6,
        occupancy=0.7,
        minutes_between_calls=240,
        target_attempts=6,
    )

    assert result == PlanResult(
        capacity_calls_per_day=420.0,
        calls_needed_per_day=420.0,
        sustainable_attempts_per_lead=6.0,
        penetration=1.0,
        agents_needed=10,
        max_attempts_per_lead_per_day=2,
        days_to_reach_target=3,
        leads_in_progress=210.0,
        attempts_within_horizon=6,
        target_reachable_in_horizon=True,
    )


def test_example_3_a_gap_over_a_day_pushes_the_target_past_the_horizon() -> None:
    result = plan_for(
        new_leads_per_day=45,
        agents=3,
        dialing_hours_per_day=6.5,
        minutes_per_call=7,
        minutes_between_calls=1560,
        target_attempts=10,
        horizon_days=10,
    )

    assert result == PlanResult(
        capacity_calls_per_day=167.14,
        calls_needed_per_day=450.0,
        sustainable_attempts_per_lead=3.71,
        penetration=0.3714,
        agents_needed=9,
        max_attempts_per_lead_per_day=1,
        days_to_reach_target=12,
        leads_in_progress=540.0,
        attempts_within_horizon=8,
        target_reachable_in_horizon=False,
    )


def test_example_2_with_one_agent_fewer_falls_a_tenth_short() -> None:
    result = plan_for(
        new_leads_per_day=70,
        agents=9,
        dialing_hours_per_day=6,
        minutes_per_call=6,
        occupancy=0.7,
        minutes_between_calls=240,
        target_attempts=6,
    )

    assert result.capacity_calls_per_day == 378.0
    assert result.sustainable_attempts_per_lead == 5.4
    assert result.penetration == 0.9
    assert result.agents_needed == 10


# --- capacity and need ---------------------------------------------------------


def test_no_agents_means_no_capacity_while_the_need_stands() -> None:
    result = plan_for(agents=0)

    assert result.capacity_calls_per_day == 0.0
    assert result.sustainable_attempts_per_lead == 0.0
    assert result.penetration == 0.0
    assert result.calls_needed_per_day == 1600.0
    assert result.agents_needed == 20


@pytest.mark.parametrize(
    ("hours", "minutes_per_call", "agents", "target", "new_leads"),
    [(6, 3, 8, 6, 112), (6, 4.5, 10, 8, 70), (6, 7.5, 10, 6, 56)],
)
def test_capacity_exactly_equal_to_the_need_is_enough(
    hours: float, minutes_per_call: float, agents: int, target: int, new_leads: int
) -> None:
    """Binary floats make 6 × 60 × 0.7 come out just under 252, which would
    leave these teams a hair short and ask for one agent more."""
    result = plan_for(
        new_leads_per_day=new_leads,
        agents=agents,
        dialing_hours_per_day=hours,
        minutes_per_call=minutes_per_call,
        occupancy=0.7,
        target_attempts=target,
    )

    assert result.capacity_calls_per_day == result.calls_needed_per_day
    assert result.penetration == 1.0
    assert result.agents_needed == agents


def test_spare_capacity_caps_penetration_at_one() -> None:
    result = plan_for(agents=50)

    assert result.sustainable_attempts_per_lead == 20.0
    assert result.penetration == 1.0
    assert result.agents_needed == 20


def test_what_the_team_can_make_is_rounded_down() -> None:
    # One agent, one hour, 90 minutes a call: two thirds of a call a day.
    result = plan_for(
        new_leads_per_day=1,
        agents=1,
        dialing_hours_per_day=1,
        minutes_per_call=90,
        target_attempts=1,
    )

    assert result.capacity_calls_per_day == 0.66
    assert result.sustainable_attempts_per_lead == 0.66
    assert result.penetration == 0.6666
    assert result.agents_needed == 2


def test_what_the_plan_needs_is_rounded_up() -> None:
    result = plan_for(new_leads_per_day=0.333, target_attempts=7)

    assert result.calls_needed_per_day == 2.34
    assert result.days_to_reach_target == 2
    assert result.leads_in_progress == 0.67


def test_fractional_leads_per_day_are_planned_as_an_average() -> None:
    result = plan_for(new_leads_per_day=12.5)

    assert result.calls_needed_per_day == 100.0
    assert result.sustainable_attempts_per_lead == 64.0
    assert result.leads_in_progress == 25.0


def test_occupancy_scales_capacity_and_agents_needed() -> None:
    result = plan_for(occupancy=0.8)

    assert result.capacity_calls_per_day == 640.0
    assert result.penetration == 0.4
    assert result.agents_needed == 25


# --- the gap between calls to one lead -----------------------------------------


def test_a_gap_that_fits_the_day_fills_each_day_until_the_target() -> None:
    result = plan_for(minutes_between_calls=60, target_attempts=20)

    assert result.max_attempts_per_lead_per_day == 8
    assert result.days_to_reach_target == 3
    assert result.leads_in_progress == 600.0


def test_a_call_may_not_start_the_moment_dialing_closes() -> None:
    """An 8-hour day with a 4-hour gap holds calls at 0 h and 4 h, not at 8 h."""
    result = plan_for(minutes_between_calls=240, target_attempts=5)

    assert result.max_attempts_per_lead_per_day == 2
    assert result.days_to_reach_target == 3


def test_a_gap_as_long_as_the_dialing_day_allows_one_attempt_a_day() -> None:
    result = plan_for(minutes_between_calls=480, target_attempts=5)

    assert result.max_attempts_per_lead_per_day == 1
    assert result.days_to_reach_target == 5


def test_a_gap_longer_than_the_dialing_day_allows_one_attempt_a_day() -> None:
    result = plan_for(minutes_between_calls=600, target_attempts=5)

    assert result.max_attempts_per_lead_per_day == 1
    assert result.days_to_reach_target == 5
    assert result.leads_in_progress == 1000.0


def test_a_gap_of_exactly_a_day_calls_at_each_opening() -> None:
    result = plan_for(minutes_between_calls=1440, target_attempts=5)

    assert result.days_to_reach_target == 5


def test_a_gap_of_two_days_calls_every_other_day() -> None:
    result = plan_for(minutes_between_calls=2880, target_attempts=5)

    assert result.max_attempts_per_lead_per_day == 1
    assert result.days_to_reach_target == 9


def test_round_the_clock_dialing_never_closes() -> None:
    result = plan_for(
        dialing_hours_per_day=24, minutes_between_calls=60, target_attempts=100
    )

    assert result.max_attempts_per_lead_per_day == 24
    assert result.days_to_reach_target == 5


def test_the_last_day_of_the_horizon_still_counts() -> None:
    # One attempt a day: the 8th attempt falls on day 8.
    on_time = plan_for(minutes_between_calls=600, horizon_days=8)
    late = plan_for(minutes_between_calls=600, horizon_days=7)

    assert on_time.target_reachable_in_horizon
    assert on_time.attempts_within_horizon == 8
    assert not late.target_reachable_in_horizon
    assert late.attempts_within_horizon == 7


def test_the_gap_does_not_change_capacity_or_need() -> None:
    slow = plan_for(minutes_between_calls=10_000)
    fast = plan_for(minutes_between_calls=1)

    assert slow.capacity_calls_per_day == fast.capacity_calls_per_day
    assert slow.penetration == fast.penetration
    assert slow.agents_needed == fast.agents_needed


# --- the request -------------------------------------------------------------


def test_occupancy_and_horizon_have_defaults() -> None:
    request = PlanRequest(
        new_leads_per_day=1,
        agents=1,
        dialing_hours_per_day=1,
        minutes_per_call=1,
        minutes_between_calls=1,
        target_attempts=1,
    )

    assert request.occupancy == 1.0
    assert request.horizon_days == 30


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("new_leads_per_day", 0),
        ("new_leads_per_day", -5),
        ("agents", -1),
        ("dialing_hours_per_day", 0),
        ("dialing_hours_per_day", 24.5),
        ("minutes_per_call", 0),
        ("minutes_between_calls", 0),
        ("minutes_between_calls", 30 * 1440 + 1),
        ("target_attempts", 0),
        ("target_attempts", 101),
        ("occupancy", 0),
        ("occupancy", 1.01),
        ("horizon_days", 0),
        ("minutes_per_call", float("nan")),
        ("new_leads_per_day", float("inf")),
    ],
)
def test_out_of_range_inputs_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as refused:
        plan_for(**{field: value})

    assert refused.value.errors()[0]["loc"] == (field,)


def test_unknown_inputs_are_refused() -> None:
    with pytest.raises(ValidationError):
        plan_for(calls_per_hour=12)


def test_the_result_carries_the_documented_fields() -> None:
    assert list(PlanResult.model_fields) == [
        "capacity_calls_per_day",
        "calls_needed_per_day",
        "sustainable_attempts_per_lead",
        "penetration",
        "agents_needed",
        "max_attempts_per_lead_per_day",
        "days_to_reach_target",
        "leads_in_progress",
        "attempts_within_horizon",
        "target_reachable_in_horizon",
    ]


# --- properties ----------------------------------------------------------------

# Quarter-hour and quarter-minute steps, as people plan, and so that the
# decimals the planner reads are the ones drawn.
hours = st.integers(4, 96).map(lambda quarters: quarters / 4)
call_minutes = st.integers(1, 120).map(lambda quarters: quarters / 4)
occupancies = st.integers(50, 100).map(lambda percent: percent / 100)
lead_flows = st.integers(1, 20_000).map(lambda tenths: tenths / 10)


@st.composite
def requests(draw: st.DrawFn) -> PlanRequest:
    return PlanRequest(
        new_leads_per_day=draw(lead_flows),
        agents=draw(st.integers(0, 2_000)),
        dialing_hours_per_day=draw(hours),
        minutes_per_call=draw(call_minutes),
        minutes_between_calls=draw(st.integers(1, 3_000)),
        target_attempts=draw(st.integers(1, 100)),
        occupancy=draw(occupancies),
    )


def with_agents(request: PlanRequest, agents: int) -> PlanRequest:
    return PlanRequest.model_validate({**request.model_dump(), "agents": agents})


@PROPERTIES
@given(requests())
def test_penetration_is_a_share_reached_exactly_from_agents_needed(
    request: PlanRequest,
) -> None:
    result = plan_targets(request)

    assert 0.0 <= result.penetration <= 1.0
    assert (result.penetration == 1.0) == (request.agents >= result.agents_needed)


@PROPERTIES
@given(requests(), st.integers(1, 500))
def test_more_agents_never_plan_worse(request: PlanRequest, more: int) -> None:
    fewer = plan_targets(request)
    bigger = plan_targets(with_agents(request, request.agents + more))

    assert bigger.capacity_calls_per_day >= fewer.capacity_calls_per_day
    assert bigger.sustainable_attempts_per_lead >= fewer.sustainable_attempts_per_lead
    assert bigger.penetration >= fewer.penetration
    assert bigger.agents_needed == fewer.agents_needed
    assert bigger.days_to_reach_target == fewer.days_to_reach_target


@PROPERTIES
@given(requests())
def test_agents_needed_is_the_fewest_that_cover_the_need(
    request: PlanRequest,
) -> None:
    needed = plan_targets(request).agents_needed
    assume(needed <= 100_000)

    enough = plan_targets(with_agents(request, needed))
    short = plan_targets(with_agents(request, needed - 1))

    assert enough.capacity_calls_per_day >= enough.calls_needed_per_day
    assert enough.penetration == 1.0
    assert short.capacity_calls_per_day < short.calls_needed_per_day
    assert short.penetration < 1.0


def attempt_days_by_the_minute(open_minutes: int, gap: int, target: int) -> list[int]:
    """Walk the clock a minute at a time, calling whenever dialing is open and
    the gap since the last call has passed: the day of each attempt."""
    days: list[int] = []
    last_call: int | None = None
    minute = 0
    while len(days) < target:
        is_open = minute % 1440 < open_minutes
        if is_open and (last_call is None or minute - last_call >= gap):
            days.append(minute // 1440 + 1)
            last_call = minute
        minute += 1
    return days


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.integers(1, 96),
    st.integers(1, 2_000),
    st.integers(1, 12),
    st.integers(1, 30),
)
def test_days_to_reach_target_match_a_minute_by_minute_walk(
    open_quarters: int, gap: int, target: int, horizon: int
) -> None:
    result = plan_for(
        dialing_hours_per_day=open_quarters / 4,
        minutes_between_calls=gap,
        target_attempts=target,
        horizon_days=horizon,
    )

    days = attempt_days_by_the_minute(open_quarters * 15, gap, target)
    per_day = Counter(days)
    assert result.days_to_reach_target == days[-1]
    assert result.attempts_within_horizon == sum(day <= horizon for day in days)
    assert per_day[1] == min(target, result.max_attempts_per_lead_per_day)
    assert max(per_day.values()) <= result.max_attempts_per_lead_per_day


@PROPERTIES
@given(requests())
def test_a_gap_that_fits_the_night_fills_every_day(request: PlanRequest) -> None:
    night_minutes = (24 - request.dialing_hours_per_day) * 60
    assume(request.minutes_between_calls <= night_minutes)

    result = plan_targets(request)

    per_day = result.max_attempts_per_lead_per_day
    assert result.days_to_reach_target == math.ceil(request.target_attempts / per_day)
