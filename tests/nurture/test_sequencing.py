"""The scheduler's pure decisions (services.nurture.sequencing)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from services.nurture.sequencing import (
    Channel,
    LeadState,
    SmsHours,
    Step,
    advance,
    job_id,
    step_due,
)

NEW_YORK = ZoneInfo("America/New_York")
CHANNELS: tuple[Channel, ...] = ("email", "sms")
HOURS = SmsHours()


def lead(**changes: object) -> LeadState:
    base = LeadState(
        lead_id=uuid.UUID(int=7),
        campaign="spring",
        campaign_version=1,
        campaign_active=True,
        first_name="Ada",
        last_name=None,
        phone="+12125550100",
        email="ada@example.org",
        country=None,
        region=None,
        timezones=("America/New_York",),
        consent_sms=True,
        consent_email=True,
        sms_opted_out=False,
        email_opted_out=False,
        enrolled_at=None,
        next_step=0,
        next_at=dt.datetime(2027, 3, 1, 15, tzinfo=dt.UTC),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2027, 3, day, hour, minute, tzinfo=NEW_YORK).astimezone(dt.UTC)


def test_step_days_keep_the_local_time_across_a_dst_change() -> None:
    # 2027-03-14 is the spring change in New York: 10:00 EST is 15:00 UTC,
    # 10:00 EDT a week later is 14:00 UTC.
    enrolled = at(10, 10)

    assert step_due(enrolled, 7, NEW_YORK) == at(17, 10)
    assert step_due(enrolled, 7, NEW_YORK) - enrolled == dt.timedelta(days=7, hours=-1)


def test_a_new_enrolment_sends_its_day_0_step_as_due_at_the_enrolment_time() -> None:
    now = at(1, 10, 5)
    steps = [Step(0, "email", "welcome"), Step(2, "sms", "nudge")]

    result = advance(
        lead(next_at=at(1, 10)), steps, now, sms_hours=HOURS, default_zone="UTC"
    )

    assert result.newly_enrolled
    assert result.enrolled_at == now
    [job] = result.jobs
    assert (job.step, job.to, job.due_at) == (0, "ada@example.org", at(1, 10))
    assert result.delays == [300.0]
    assert (result.next_step, result.next_at) == (1, at(3, 10, 5))


def test_a_text_outside_the_sms_hours_waits_and_so_do_the_steps_behind_it() -> None:
    steps = [Step(0, "sms", "hi"), Step(0, "email", "same-day")]

    night = advance(
        lead(next_at=at(1, 22)), steps, at(1, 22), sms_hours=HOURS, default_zone="UTC"
    )
    morning = advance(
        lead(enrolled_at=night.enrolled_at, next_at=night.next_at),
        steps,
        at(2, 8),
        sms_hours=HOURS,
        default_zone="UTC",
    )

    assert [job.send_before for job in morning.jobs] == [at(2, 21), None]
    assert night.jobs == []
    assert night.suppressed == [("sms", "quiet_hours")]
    assert night.next_at == at(2, 8)
    assert [(job.step, job.due_at) for job in morning.jobs] == [
        (0, at(2, 8)),
        (1, at(1, 22)),
    ]
    assert morning.finish_reason == "completed"


def test_a_lead_in_two_zones_gets_texts_only_when_both_are_open() -> None:
    two_zones = lead(
        timezones=("America/New_York", "America/Los_Angeles"), next_at=at(1, 9)
    )

    early = advance(
        two_zones, [Step(0, "sms", "hi")], at(1, 9), sms_hours=HOURS, default_zone="UTC"
    )

    # 09:00 in New York is 06:00 in Los Angeles: wait for 08:00 there.
    assert early.next_at == at(1, 11)


def test_blocked_channels_are_skipped_with_their_reason() -> None:
    steps = [Step(0, "email", "a"), Step(0, "sms", "b"), Step(0, "sms", "c")]

    result = advance(
        lead(email_opted_out=True, consent_sms=False, next_at=at(1, 12)),
        steps,
        at(1, 12),
        sms_hours=HOURS,
        default_zone="UTC",
    )

    assert [
        (record.step, record.outcome, record.reason) for record in result.records
    ] == [
        (0, "skipped", "opted_out"),
        (1, "skipped", "consent"),
        (2, "skipped", "consent"),
    ]
    assert result.jobs == []
    assert result.finish_reason == "completed"


def test_a_stopped_campaign_or_no_channel_left_ends_the_sequence_unsent() -> None:
    steps = [Step(0, "email", "a")]

    stopped = advance(
        lead(campaign_active=False),
        steps,
        at(1, 12),
        sms_hours=HOURS,
        default_zone="UTC",
    )
    unreachable = advance(
        lead(email_opted_out=True, sms_opted_out=True),
        steps,
        at(1, 12),
        sms_hours=HOURS,
        default_zone="UTC",
    )

    assert (stopped.finish_reason, stopped.jobs) == ("campaign_stopped", [])
    assert (unreachable.finish_reason, unreachable.jobs) == ("opted_out", [])


def test_job_ids_are_stable_and_distinct_per_step() -> None:
    first = uuid.UUID(int=1)

    assert job_id(first, "spring", 0) == job_id(first, "spring", 0)
    assert (
        len(
            {
                job_id(first, "spring", 0),
                job_id(first, "spring", 1),
                job_id(uuid.UUID(int=2), "spring", 0),
            }
        )
        == 3
    )


STEPS = st.lists(
    st.tuples(st.integers(0, 20), st.sampled_from(CHANNELS)),
    min_size=1,
    max_size=8,
).map(
    lambda pairs: [
        Step(day, channel, f"t{index}")
        for index, (day, channel) in enumerate(sorted(pairs, key=lambda pair: pair[0]))
    ]
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    steps=STEPS,
    arrival_minute=st.integers(0, 24 * 60 - 1),
    lateness=st.lists(st.integers(0, 18 * 60), min_size=1, max_size=30),
    zone=st.sampled_from(
        ["America/New_York", "America/Los_Angeles", "Pacific/Honolulu"]
    ),
)
def test_every_step_is_dealt_with_once_in_order_and_texts_keep_to_the_hours(
    steps: list[Step], arrival_minute: int, lateness: list[int], zone: str
) -> None:
    """However late the scheduler comes to a due lead (up to 18 hours, then on
    time), each step is sent or skipped exactly once, in order, never before
    it is due, and no text goes out outside 08:00-21:00 local."""
    local = ZoneInfo(zone)
    due = dt.datetime(2027, 3, 10, tzinfo=local) + dt.timedelta(minutes=arrival_minute)
    state = lead(timezones=(zone,), next_at=due.astimezone(dt.UTC))
    dealt: list[int] = []
    for late in [*lateness, *([0] * (2 * len(steps) + 2))]:
        now = state.next_at + dt.timedelta(minutes=late)
        result = advance(state, steps, now, sms_hours=HOURS, default_zone="UTC")
        dealt += [record.step for record in result.records]
        for job in result.jobs:
            assert job.due_at <= now
            if job.channel == "sms":
                assert 8 <= now.astimezone(local).hour < 21
        if result.finish_reason is not None:
            break
        assert result.next_at is not None
        assert result.next_at > now
        state = dataclasses.replace(
            state,
            enrolled_at=result.enrolled_at,
            next_step=result.next_step,
            next_at=result.next_at,
        )
    assert dealt == list(range(len(steps)))
