"""What happens to one lead when the scheduler looks at it: pure decisions.

The scheduler claims a lead whose ``next_at`` has passed and hands its row
here with the steps of its campaign version; :func:`advance` says which steps
go out now, which are skipped and why, and when the lead is next due. Nothing
here reads a clock or a database, so every rule is tested in isolation.

The rules:

* A lead waiting for enrolment is enrolled at the moment it is looked at
  (the service has already left out leads that stopped being eligible); step
  days count from that moment, in the lead's own zone, so a step keeps its
  local time of day across DST changes.
* A step falls due at enrolment + its day offset. Every due step is dealt
  with in order: sent, or skipped for a reason (no consent, opted out, no
  address for the channel); a text message outside the SMS hours in any of
  the lead's zones waits for the next opening instead, and the steps behind
  it wait with it.
* A lead whose channels are both opted out, whose campaign was switched off,
  or whose last step was dealt with leaves the sequence.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

from shared.compliance import CallingHours, callable_window, rules_for

Channel = Literal["email", "sms"]
#: Why a due step was not sent. ``quiet_hours`` only delays a step.
Reason = Literal["consent", "opted_out", "no_address", "quiet_hours"]

#: Job ids are UUIDv5 under this namespace, so a step has one id for good.
JOB_NAMESPACE = uuid.UUID("6f1c9a52-4d0b-5b8e-9a57-1f0e3c8d2b74")


@dataclass(frozen=True)
class Step:
    day: int
    channel: Channel
    template_id: str
    content_url: str | None = None


@dataclass(frozen=True)
class LeadState:
    """The parts of a nurture lead row the scheduler decides on."""

    lead_id: uuid.UUID
    campaign: str
    campaign_version: int
    campaign_active: bool
    first_name: str | None
    last_name: str | None
    phone: str | None
    email: str | None
    country: str | None
    region: str | None
    timezones: Sequence[str]
    consent_sms: bool
    consent_email: bool
    sms_opted_out: bool
    email_opted_out: bool
    enrolled_at: dt.datetime | None
    next_step: int
    next_at: dt.datetime


@dataclass(frozen=True)
class Job:
    """A step to send: becomes a ``nurture.job`` event."""

    job_id: uuid.UUID
    idempotency_key: str
    step: int
    channel: Channel
    template_id: str
    content_url: str | None
    to: str
    due_at: dt.datetime
    #: Texts only: when the hours the text was decided in close.
    send_before: dt.datetime | None = None


@dataclass(frozen=True)
class Record:
    """One line of a lead's nurture history."""

    step: int
    outcome: Literal["sent", "skipped"]
    reason: Reason | None
    at: dt.datetime
    job_id: uuid.UUID | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "step": self.step,
            "outcome": self.outcome,
            "reason": self.reason,
            "at": self.at.isoformat(),
            "job_id": str(self.job_id) if self.job_id else None,
        }


@dataclass
class Advance:
    """What one look at a lead changed."""

    lead_id: uuid.UUID
    enrolled_at: dt.datetime
    newly_enrolled: bool
    next_step: int
    next_at: dt.datetime | None
    finish_reason: str | None = None
    records: list[Record] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    #: (channel, reason) of every step held back, skipped ones and delays.
    suppressed: list[tuple[Channel, Reason]] = field(default_factory=list)
    #: Seconds between falling due and going out, per job.
    delays: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class SmsHours:
    """When texts may go out, in the lead's own time, beside the law's hours."""

    start: dt.time = dt.time(8)
    end: dt.time = dt.time(21)

    def calling_hours(self) -> tuple[CallingHours, ...]:
        return (CallingHours(self.start, self.end, frozenset(range(1, 8))),)


def job_id(lead_id: uuid.UUID, campaign: str, step: int) -> uuid.UUID:
    """The one id of a lead's step: a lead is enrolled once, so this is stable."""
    return uuid.uuid5(JOB_NAMESPACE, f"{lead_id}/{campaign}/{step}")


def step_due(enrolled_at: dt.datetime, day: int, zone: ZoneInfo) -> dt.datetime:
    """Enrolment + ``day`` calendar days at the same local time, in UTC."""
    local = enrolled_at.astimezone(zone)
    moved = dt.datetime.combine(local.date() + dt.timedelta(days=day), local.timetz())
    # A reading inside a spring-forward gap is taken with the offset before it;
    # one inside the repeated fall-back hour is the first of the two (fold 0).
    # (PostgreSQL's AT TIME ZONE, which plans enrolments, takes the second:
    # an arrival in that hour can be enrolled an hour later than this rule.)
    return moved.replace(tzinfo=zone).astimezone(dt.UTC)


def lead_zones(lead: LeadState, default_zone: str) -> list[str]:
    return list(lead.timezones) or [default_zone]


def blocked(lead: LeadState, channel: Channel) -> Reason | None:
    """Why ``channel`` may not reach the lead at all, or None."""
    if channel == "email":
        opted_out, consent, address = (
            lead.email_opted_out,
            lead.consent_email,
            lead.email,
        )
    else:
        opted_out, consent, address = lead.sms_opted_out, lead.consent_sms, lead.phone
    if opted_out:
        return "opted_out"
    if not consent:
        return "consent"
    if not address:
        return "no_address"
    return None


def sms_window(
    lead: LeadState, now: dt.datetime, hours: SmsHours, default_zone: str
) -> tuple[dt.datetime, dt.datetime]:
    """The first stretch, from ``now`` on, when a text may reach the lead:
    inside the SMS hours and the law's hours (federal and state) in all its
    zones. Its start is ``now`` when the hours are open."""
    legal, _, _ = rules_for(lead.country, lead.region)
    window = callable_window(
        now, lead_zones(lead, default_zone), hours.calling_hours(), legal
    )
    if window is None:  # cannot happen with daily hours; look again tomorrow
        tomorrow = now + dt.timedelta(days=1)
        return tomorrow, tomorrow
    return window


def advance(
    lead: LeadState,
    steps: Sequence[Step],
    now: dt.datetime,
    *,
    sms_hours: SmsHours,
    default_zone: str,
) -> Advance:
    """Deal with every step of ``lead`` that is due at ``now``."""
    newly_enrolled = lead.enrolled_at is None
    enrolled_at = now if lead.enrolled_at is None else lead.enrolled_at
    result = Advance(
        lead_id=lead.lead_id,
        enrolled_at=enrolled_at,
        newly_enrolled=newly_enrolled,
        next_step=lead.next_step,
        next_at=None,
    )
    if not lead.campaign_active:
        result.finish_reason = "campaign_stopped"
        return result
    if lead.sms_opted_out and lead.email_opted_out:
        result.finish_reason = "opted_out"
        return result

    zone = ZoneInfo(lead_zones(lead, default_zone)[0])
    index = lead.next_step
    while index < len(steps):
        step = steps[index]
        due = step_due(enrolled_at, step.day, zone)
        if index == lead.next_step:
            due = _claimed_due(lead, step, due, newly_enrolled)
        if due > now:
            result.next_at = due
            break
        reason = blocked(lead, step.channel)
        if reason is not None:
            result.records.append(Record(index, "skipped", reason, now))
            result.suppressed.append((step.channel, reason))
            index += 1
            continue
        send_before = None
        if step.channel == "sms":
            opening, send_before = sms_window(lead, now, sms_hours, default_zone)
            if opening > now:
                result.suppressed.append(("sms", "quiet_hours"))
                result.next_at = opening
                break
        job = _job(lead, index, step, due, send_before)
        result.jobs.append(job)
        result.records.append(Record(index, "sent", None, now, job.job_id))
        result.delays.append(max(0.0, (now - due).total_seconds()))
        index += 1
    result.next_step = index
    if index >= len(steps):
        result.finish_reason = "completed"
        result.next_at = None
    return result


def _claimed_due(
    lead: LeadState, step: Step, planned: dt.datetime, newly_enrolled: bool
) -> dt.datetime:
    """When the step the lead was claimed for fell due.

    A day-0 step of a new enrolment fell due with the enrolment, when the lead
    reached its age (``next_at``), however late the scheduler came; a text
    that waited for the SMS hours fell due at their opening (``next_at``).
    """
    if newly_enrolled:
        return lead.next_at if step.day == 0 else planned
    return max(planned, lead.next_at)


def _job(
    lead: LeadState,
    index: int,
    step: Step,
    due: dt.datetime,
    send_before: dt.datetime | None,
) -> Job:
    identifier = job_id(lead.lead_id, lead.campaign, index)
    address = lead.email if step.channel == "email" else lead.phone
    assert address is not None  # blocked() refused a step without one
    return Job(
        job_id=identifier,
        idempotency_key=f"nurture:{lead.lead_id}:{lead.campaign}:{index}",
        step=index,
        channel=step.channel,
        template_id=step.template_id,
        content_url=step.content_url,
        to=address,
        due_at=due,
        send_before=send_before,
    )
