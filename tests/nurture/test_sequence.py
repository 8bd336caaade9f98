"""A lead's life in nurture, day by day, with the clock moved."""

from __future__ import annotations

import datetime as dt

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
