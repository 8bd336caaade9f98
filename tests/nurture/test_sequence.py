"""A lead's life in nurture, day by day, with the clock moved."""

from __future__ import annotations

import datetime as dt
import uuid

from shared.events import DncUpdated
from tests.conftest import unique_phone
from tests.nurture.conftest import DAY, Story, email_step, sms_step


async def test_lead_is_enrolled_on_day_30_and_steps_follow_on_their_days(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0), sms_step(3), email_step(7)])
    lead = story.received()
    story.queued(lead)
    await story.apply()
    story.exhausted(lead)
    await story.apply()

    await story.at(story.start + 29 * DAY)
    assert await story.decided(lead) == []
    assert (await story.view(lead))["status"] == "waiting"

    await story.at(story.start + 30 * DAY)
    [first] = await story.decided(lead)
    assert (first.step, first.channel, first.template_id) == (0, "email", "tpl-0")
    assert first.due_at == story.start + 30 * DAY
    view = await story.view(lead)
    assert view["status"] == "enrolled"
    assert [step["state"] for step in view["steps"]] == ["sent", "pending", "pending"]

    await story.at(story.start + 33 * DAY - dt.timedelta(minutes=1))
    assert len(await story.decided(lead)) == 1
    await story.at(story.start + 33 * DAY)
    await story.at(story.start + 37 * DAY)
    jobs = await story.published(lead, 3)
    assert [(job.step, job.channel) for job in jobs] == [
        (0, "email"),
        (1, "sms"),
        (2, "email"),
    ]
    assert len({job.idempotency_key for job in jobs}) == 3
    view = await story.view(lead)
    assert view["status"] == "finished"
    assert view["reason"] == "completed"


async def test_conversion_on_day_31_stops_every_later_step(story: Story) -> None:
    await story.put_campaign([email_step(0), sms_step(3), email_step(7)])
    lead = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    assert len(await story.decided(lead)) == 1

    await story.at(story.start + 31 * DAY)
    story.converted(lead)
    await story.apply()
    await story.at(story.start + 33 * DAY)
    await story.at(story.start + 40 * DAY)

    assert [job.step for job in await story.decided(lead)] == [0]
    view = await story.view(lead)
    assert (view["status"], view["reason"]) == ("finished", "converted")
    assert [step["state"] for step in view["steps"]] == [
        "sent",
        "cancelled",
        "cancelled",
    ]


async def test_converted_invalid_and_opted_out_leads_are_never_enrolled(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0)])
    converted, invalid, opted_out, kept = (story.received() for _ in range(4))
    await story.apply()
    await story.at(story.start + 10 * DAY)
    story.converted(converted)
    story.invalid(invalid)
    story.opted_out(opted_out, "all")
    await story.apply()

    await story.at(story.start + 30 * DAY)

    for lead, reason in ((converted, "converted"), (invalid, "invalid")):
        assert await story.decided(lead) == []
        view = await story.view(lead)
        assert (view["status"], view["reason"]) == ("excluded", reason)
    assert await story.decided(opted_out) == []
    assert (await story.view(opted_out))["reason"] == "opted_out"
    assert len(await story.decided(kept)) == 1


async def test_a_lead_on_the_dnc_list_is_not_enrolled_and_a_listing_ends_a_sequence(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0), email_step(5)])
    listed = story.received(dnc=True)
    enrolled = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    assert await story.decided(listed) == []
    assert (await story.view(listed))["reason"] == "dnc"
    assert len(await story.decided(enrolled)) == 1

    phone = await story.database.fetchval(
        "SELECT phone FROM leads WHERE lead_id = $1", enrolled
    )
    story.event(
        DncUpdated(phone=phone, listed=True, updated_at=story.clock.now()), enrolled
    )
    await story.apply()
    await story.at(story.start + 36 * DAY)

    assert len(await story.decided(enrolled)) == 1
    view = await story.view(enrolled)
    assert (view["status"], view["reason"]) == ("finished", "dnc")


async def test_a_lead_still_called_is_enrolled_unless_its_pool_holds_it(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0)])
    called = story.received()
    held = story.received()
    story.queued(called)
    story.queued(held, while_calling=False)
    await story.apply()

    await story.at(story.start + 30 * DAY)
    assert len(await story.decided(called)) == 1
    assert await story.decided(held) == []
    assert (await story.view(held))["status"] == "held"

    await story.at(story.start + 34 * DAY)
    story.exhausted(held)
    await story.apply()
    await story.at(story.start + 34 * DAY + dt.timedelta(seconds=1))

    [job] = await story.decided(held)
    assert job.step == 0
    view = await story.view(held)
    assert (view["status"], view["reason"]) == ("finished", "completed")
    assert view["enrolled_at"] == _utc(story.start + 34 * DAY + dt.timedelta(seconds=1))


async def test_a_re_inquiry_takes_the_earlier_lead_out_of_nurture(story: Story) -> None:
    await story.put_campaign([email_step(0), email_step(4)])
    first = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    assert len(await story.decided(first)) == 1
    phone = await story.database.fetchval(
        "SELECT phone FROM leads WHERE lead_id = $1", first
    )

    await story.at(story.start + 32 * DAY)
    again = story.received(phone=phone)
    await story.apply()
    await story.at(story.start + 40 * DAY)

    assert len(await story.decided(first)) == 1
    view = await story.view(first)
    assert (view["status"], view["reason"]) == ("finished", "reinquiry")
    fresh = await story.view(again)
    assert fresh["status"] == "waiting"
    assert fresh["enrolment_due_at"] == _utc(story.start + 62 * DAY)
    assert await story.decided(again) == []


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def test_leads_advanced_together_keep_their_own_histories(story: Story) -> None:
    """Regression: histories were sent as a list of lists, a 2-D array that
    unnest flattened across the batch, so two leads with different numbers
    of steps dealt with in one pass failed (or swapped records)."""
    await story.put_campaign([email_step(0), sms_step(0)])
    east = story.received()
    # 10:00 in New York is 07:00 here: the text waits, one record instead of two.
    west = story.received(timezone="America/Los_Angeles")
    await story.apply()

    await story.at(story.local(30, 10))

    assert [step["state"] for step in (await story.view(east))["steps"]] == [
        "sent",
        "sent",
    ]
    assert [step["state"] for step in (await story.view(west))["steps"]] == [
        "sent",
        "pending",
    ]


async def test_a_number_listed_before_the_lead_arrives_waits_until_it_is_delisted(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0)])
    phone = unique_phone()
    listed = DncUpdated(phone=phone, listed=True, updated_at=story.clock.now())
    story.event(listed, uuid.uuid4())
    lead = story.received(phone=phone)
    await story.apply()

    await story.at(story.start + 30 * DAY)
    assert await story.decided(lead) == []
    view = await story.view(lead)
    assert (view["status"], view["reason"]) == ("excluded", "dnc")
    assert view["steps"][0]["state"] == "cancelled"

    await story.at(story.start + 31 * DAY)
    story.event(
        DncUpdated(phone=phone, listed=False, updated_at=story.clock.now()),
        uuid.uuid4(),
    )
    await story.apply()
    await story.at(story.start + 31 * DAY + dt.timedelta(seconds=1))
    assert len(await story.decided(lead)) == 1


async def test_a_re_inquiry_by_email_also_ends_the_earlier_lead(story: Story) -> None:
    await story.put_campaign([email_step(0), email_step(4)])
    first = story.received(phone=None)
    await story.apply()
    await story.at(story.start + 30 * DAY)
    address = await story.database.fetchval(
        "SELECT email FROM leads WHERE lead_id = $1", first
    )

    story.received(address=address)
    await story.apply()
    await story.at(story.start + 40 * DAY)

    view = await story.view(first)
    assert (view["status"], view["reason"]) == ("finished", "reinquiry")
    assert len(await story.decided(first)) == 1


async def test_a_lead_whose_rules_cannot_be_applied_is_parked_not_retried(
    story: Story,
) -> None:
    """A fault in one lead's data (here a zone nobody knows, written behind
    the consumer's back) must not stop the scheduler: the lead would be
    claimed first on every pass."""
    await story.put_campaign([email_step(0)])
    broken, fine = story.received(), story.received()
    await story.apply()
    await story.database.execute(
        "UPDATE leads SET timezones = '{Mars/Olympus_Mons}' WHERE lead_id = $1",
        broken,
    )

    await story.at(story.start + 30 * DAY)

    assert len(await story.decided(fine)) == 1
    assert await story.decided(broken) == []
    view = await story.view(broken)
    assert (view["status"], view["reason"]) == ("finished", "failed")
