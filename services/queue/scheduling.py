"""When a lead is next called, and what each disposition does to it.

Pure functions over plain values, so the rules can be tested (and property
tested) without a database; the service feeds them rows and writes back the
result.

A lead's next call is the latest of: its cadence gap after the last call (or
after arrival), a callback time it asked for, the moment its frequency caps
allow another call, and the opening of a calling window that is open in every
zone the lead may be in, under both the pool's hours and the law's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.queue.schemas import PoolRules
from shared.compliance import callable_window, cap_free_at, rules_for
from shared.events import Disposition

#: Width of a priority slot. Leads whose planned call falls in the same slot
#: are "equally behind", and source weight decides between them.
PRIORITY_SLOT_SECONDS = 300
#: Calls older than this are dropped from the per-day and 24-hour counts (a
#: local calendar day is at most 25 hours long).
RECENT_CALLS_KEPT = dt.timedelta(hours=50)

NEVER_CALLED, CALLBACK, RETRY = 0, 1, 2

PlanState = Literal["waiting", "ready", "exhausted", "not_callable"]
WaitReason = Literal[
    "cadence", "callback", "cap", "calling_hours", "lifetime_cap", "no_window"
]


@dataclass(frozen=True)
class LeadFacts:
    """What scheduling needs to know about a lead and its phone number."""

    attempts: int
    #: When the lead entered its pool: the cadence counts from here.
    queued_at: dt.datetime
    last_call_at: dt.datetime | None
    recent_calls: Sequence[dt.datetime]
    phone_calls: Sequence[dt.datetime]
    phone_lifetime_calls: int
    timezones: Sequence[str]
    country: str | None
    region: str | None
    callback_at: dt.datetime | None = None


@dataclass(frozen=True)
class Plan:
    state: PlanState
    due_at: dt.datetime
    closes_at: dt.datetime
    wait_reason: WaitReason | None
    priority_class: int
    planned_at: dt.datetime
    planned_slot: int


def zones_of(facts: LeadFacts, rules: PoolRules) -> list[str]:
    return list(facts.timezones) or [rules.timezone]


def cadence_due(facts: LeadFacts, rules: PoolRules) -> dt.datetime:
    """The earliest time the cadence allows the next attempt."""
    gap = dt.timedelta(seconds=rules.gap_before(facts.attempts + 1))
    if facts.attempts == 0 or facts.last_call_at is None:
        return facts.queued_at + gap
    return facts.last_call_at + gap


def planned_at(facts: LeadFacts, rules: PoolRules) -> dt.datetime:
    """When the cadence, followed from arrival without delay, puts this attempt."""
    seconds = sum(rules.gap_before(n) for n in range(1, facts.attempts + 2))
    return facts.queued_at + dt.timedelta(seconds=seconds)


def plan(facts: LeadFacts, rules: PoolRules, now: dt.datetime) -> Plan:
    """Where the lead stands after its last change, seen at ``now``."""
    zones = zones_of(facts, rules)
    legal_hours, legal_caps, _ = rules_for(facts.country, facts.region)
    caps = rules.caps.as_frequency_caps().stricter(legal_caps)
    target_at = planned_at(facts, rules)
    priority = NEVER_CALLED if facts.attempts == 0 else RETRY

    due, reason = cadence_due(facts, rules), "cadence"
    if facts.callback_at is not None:
        priority, target_at = CALLBACK, facts.callback_at
        if facts.callback_at > due:
            due, reason = facts.callback_at, "callback"
    at = max(due, now)

    if (
        caps.lifetime is not None
        and max(facts.attempts, facts.phone_lifetime_calls) >= caps.lifetime
    ):
        return _final("exhausted", "lifetime_cap", at, priority, target_at)
    rolling = caps.rolling()
    lead_free = cap_free_at(at, facts.recent_calls, rolling, zones[0])
    phone_free = cap_free_at(at, facts.phone_calls, rolling, zones[0])
    free = max(lead_free or at, phone_free or at)
    if free > at:
        at, reason = free, "cap"

    window = callable_window(
        at, zones, rules.calling_hours.as_calling_hours(), legal_hours
    )
    if window is None:
        return _final("not_callable", "no_window", at, priority, target_at)
    start, end = window
    if start > at:
        reason = "calling_hours"
    state: PlanState = "ready" if start <= now else "waiting"
    return Plan(
        state=state,
        due_at=start,
        closes_at=end,
        wait_reason=None if state == "ready" else reason,  # type: ignore[arg-type]
        priority_class=priority,
        planned_at=target_at,
        planned_slot=slot_of(target_at),
    )


def slot_of(when: dt.datetime) -> int:
    return int(when.timestamp() // PRIORITY_SLOT_SECONDS)


def recent(calls: Sequence[dt.datetime], now: dt.datetime) -> list[dt.datetime]:
    """The calls still relevant to the rolling caps."""
    horizon = now - RECENT_CALLS_KEPT
    return sorted(call for call in calls if call > horizon)


def _final(
    state: PlanState,
    reason: WaitReason,
    at: dt.datetime,
    priority: int,
    target_at: dt.datetime,
) -> Plan:
    return Plan(
        state=state,
        due_at=at,
        closes_at=at,
        wait_reason=reason,
        priority_class=priority,
        planned_at=target_at,
        planned_slot=slot_of(target_at),
    )


# What a disposition does. ``ends`` is the final state it puts the lead in
# (None: the lead is scheduled again); every disposition is a call, so every
# one counts an attempt.
@dataclass(frozen=True)
class Effect:
    ends: Literal["converted", "invalid", "opted_out"] | None = None
    #: The agent who made the call is not given this lead again.
    exclude_agent: bool = False


EFFECTS: dict[Disposition, Effect] = {
    "no_answer": Effect(),
    "busy": Effect(),
    "voicemail": Effect(),
    "contacted": Effect(),
    "callback": Effect(),
    "appointment": Effect(ends="converted"),
    "converted": Effect(ends="converted"),
    "not_interested": Effect(exclude_agent=True),
    "wrong_number": Effect(ends="invalid"),
    "dnc": Effect(ends="opted_out"),
}
