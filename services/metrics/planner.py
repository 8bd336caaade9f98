"""The call-target planner: what a team can dial, and what a target asks of it.

Pure arithmetic behind ``POST /v1/targets/plan``, with no I/O. The model is a
steady state: every day the same number of new leads arrive, each is meant to
get ``target_attempts`` attempts, and once the daily cohorts overlap the team
must make ``new_leads_per_day × target_attempts`` calls a day. The minimum
gap between two calls to one lead decides how many days a lead needs, not how
many calls the team makes. docs/target-planner.md derives every formula and
works three plans by hand; the tests check those numbers exactly.

Inputs are read at the decimal value they are written with (``0.7`` is
seven tenths, not the nearest binary float) and all arithmetic is exact, so a
team whose capacity exactly covers the need is reported as covering it.
Outputs are rounded against the team: what it can make is rounded down, what
the plan needs is rounded up, and counts are whole numbers.

Known shortcomings:

* One uniform gap stands in for a pool's cadence, whose gaps grow from
  minutes to days. Planning with the cadence's shortest gap gives the fastest
  possible days to reach the target; with its longest, the slowest.
* Every lead is assumed to be first called when dialing opens on its first
  day, so the days to reach the target is a lower bound: a lead that arrives
  late in the day may need one day more.
* Capacity is assumed to be spread evenly over the leads. If some leads get
  more than the target while others get fewer, the real penetration is lower.
"""

from __future__ import annotations

import math
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

MINUTES_PER_DAY = 24 * 60
#: Decimal places kept on calls, attempts and leads per day.
RATE_PLACES = 2
#: Decimal places kept on penetration, a ratio between 0 and 1.
RATIO_PLACES = 4


class PlanRequest(BaseModel):
    """A team, the leads it receives, and the call target proposed for them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new_leads_per_day: float = Field(
        gt=0, le=1_000_000, description="Leads that arrive a day, on average"
    )
    agents: int = Field(
        ge=0, le=100_000, description="Agents dialing; 0 means no capacity"
    )
    dialing_hours_per_day: float = Field(
        gt=0, le=24, description="Hours a day the team dials, one stretch a day"
    )
    minutes_per_call: float = Field(
        gt=0,
        le=MINUTES_PER_DAY,
        description="Average agent minutes per attempt, answered or not, "
        "including ringing and wrap-up",
    )
    minutes_between_calls: float = Field(
        gt=0,
        le=30 * MINUTES_PER_DAY,
        description="Least time from the start of one call to a lead to the "
        "start of the next call to the same lead",
    )
    target_attempts: int = Field(
        ge=1, le=100, description="Proposed call target: attempts per lead"
    )
    occupancy: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of dialing time agents really spend on calls",
    )
    horizon_days: int = Field(
        30,
        ge=1,
        le=365,
        description="Days within which a lead should reach the target",
    )


class PlanResult(BaseModel):
    """What the team sustains, and what the proposed target needs.

    Rates the team can make (capacity, sustainable attempts, penetration) are
    rounded down; rates the plan needs (calls needed, leads in progress) are
    rounded up; the rest are exact counts.
    """

    model_config = ConfigDict(frozen=True)

    capacity_calls_per_day: float = Field(description="Calls a day the team can make")
    calls_needed_per_day: float = Field(
        description="Calls a day the target needs in steady state"
    )
    sustainable_attempts_per_lead: float = Field(
        description="Attempts per lead the capacity sustains in steady state"
    )
    penetration: float = Field(
        description="Share of the target the capacity reaches, 0 to 1 "
        "(Σ min(attempts, target) / Σ target with every lead alike)"
    )
    agents_needed: int = Field(
        description="Fewest agents whose capacity covers the calls needed"
    )
    max_attempts_per_lead_per_day: int = Field(
        description="Most attempts the gap lets one lead have in a dialing day"
    )
    days_to_reach_target: int = Field(
        description="Days from a lead's first attempt to its last, both "
        "counted, when it is called as soon as the gap allows"
    )
    leads_in_progress: float = Field(
        description="Leads between their first attempt and the target at any "
        "one time in steady state"
    )
    attempts_within_horizon: int = Field(
        description="Attempts of the target the gap fits into the horizon"
    )
    target_reachable_in_horizon: bool = Field(
        description="Whether the gap lets a lead reach the target in the horizon"
    )


def plan_targets(request: PlanRequest) -> PlanResult:
    """Plan ``request``; pure, and exact until the final rounding."""
    new_leads = _as_written(request.new_leads_per_day)
    target = request.target_attempts
    calls_per_agent = _calls_per_agent_per_day(request)
    capacity = request.agents * calls_per_agent
    calls_needed = new_leads * target
    penetration = min(Fraction(1), capacity / calls_needed)

    dialing_minutes = _as_written(request.dialing_hours_per_day) * 60
    gap = _as_written(request.minutes_between_calls)
    days = _attempt_days(dialing_minutes, gap, target)
    within_horizon = sum(1 for day in days if day <= request.horizon_days)

    return PlanResult(
        capacity_calls_per_day=_round_down(capacity, RATE_PLACES),
        calls_needed_per_day=_round_up(calls_needed, RATE_PLACES),
        sustainable_attempts_per_lead=_round_down(capacity / new_leads, RATE_PLACES),
        penetration=_round_down(penetration, RATIO_PLACES),
        agents_needed=math.ceil(calls_needed / calls_per_agent),
        max_attempts_per_lead_per_day=math.ceil(dialing_minutes / gap),
        days_to_reach_target=days[-1],
        leads_in_progress=_round_up(new_leads * days[-1], RATE_PLACES),
        attempts_within_horizon=within_horizon,
        target_reachable_in_horizon=within_horizon == target,
    )


def _calls_per_agent_per_day(request: PlanRequest) -> Fraction:
    dialing_minutes = _as_written(request.dialing_hours_per_day) * 60
    minutes_on_calls = dialing_minutes * _as_written(request.occupancy)
    return minutes_on_calls / _as_written(request.minutes_per_call)


def _attempt_days(open_minutes: Fraction, gap: Fraction, attempts: int) -> list[int]:
    """The day (the first is 1) of each of a lead's first ``attempts`` attempts.

    Dialing is open from minute 0 of each day until ``open_minutes`` later,
    end excluded. The first attempt is at the first opening; each next one is
    at the first open moment at least ``gap`` after the one before.
    """
    days: list[int] = []
    at = Fraction(0)
    for _ in range(attempts):
        days.append(int(at // MINUTES_PER_DAY) + 1)
        at = _first_open_moment(at + gap, open_minutes)
    return days


def _first_open_moment(at: Fraction, open_minutes: Fraction) -> Fraction:
    day, into_day = divmod(at, MINUTES_PER_DAY)
    if into_day < open_minutes:
        return at
    return Fraction((day + 1) * MINUTES_PER_DAY)


def _as_written(value: float) -> Fraction:
    # repr() is the shortest decimal that reads back as the same float: the
    # number as the caller wrote it, so 0.7 × 360 is 252 and not 251.99…
    return Fraction(repr(value))


def _round_down(value: Fraction, places: int) -> float:
    scale = 10**places
    return math.floor(value * scale) / scale


def _round_up(value: Fraction, places: int) -> float:
    scale = 10**places
    return math.ceil(value * scale) / scale
