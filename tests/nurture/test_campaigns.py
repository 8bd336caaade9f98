"""Which campaign takes a lead, and what a campaign change does."""

from __future__ import annotations

from tests.nurture.conftest import DAY, Story, email_step, unique


async def test_a_campaign_takes_only_leads_of_its_pools_and_sources(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0)], pools=[story.pool])
    in_pool = story.received()
    story.queued(in_pool)
    elsewhere = story.received()
    await story.apply()
    other_source = story.received(source=unique("src"))
    await story.apply()

    await story.at(story.start + 30 * DAY)

    assert len(await story.decided(in_pool)) == 1
    for lead in (elsewhere, other_source):
        assert await story.decided(lead) == []
        view = await story.view(lead)
        assert view["status"] == "waiting"
        assert view["reason"] == "no active campaign takes the lead's pool and source"


async def test_the_highest_priority_campaign_wins_and_its_age_applies(
    story: Story,
) -> None:
    low = story.campaign
    await story.put_campaign([email_step(0, "low")])
    story.campaign = high = unique("camp")
    await story.put_campaign(
        [email_step(0, "high")], priority=10, enrolment_age_days=45
    )
    lead = story.received()
    await story.apply()

    await story.at(story.start + 30 * DAY)
    assert await story.decided(lead) == []
    await story.at(story.start + 45 * DAY)

    [job] = await story.decided(lead)
    assert (job.campaign, job.template_id) == (high, "high-0")
    assert low != high


async def test_a_new_version_reaches_waiting_leads_and_not_enrolled_ones(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0, "v1"), email_step(3, "v1")])
    enrolled = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    waiting = story.received()
    await story.apply()

    await story.put_campaign([email_step(0, "v2"), email_step(1, "v2")])
    for day in (33, 60, 61):
        await story.at(story.start + day * DAY)

    assert [job.template_id for job in await story.decided(enrolled)] == [
        "v1-0",
        "v1-3",
    ]
    assert [job.template_id for job in await story.decided(waiting)] == [
        "v2-0",
        "v2-1",
    ]
    assert (await story.view(enrolled))["campaign_version"] == 1
    assert (await story.view(waiting))["campaign_version"] == 2


async def test_switching_a_campaign_off_stops_enrolments_and_running_sequences(
    story: Story,
) -> None:
    steps = [email_step(0), email_step(2)]
    await story.put_campaign(steps)
    running = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    waiting = story.received()
    await story.apply()

    await story.put_campaign(steps, active=False)
    await story.at(story.start + 65 * DAY)

    assert len(await story.decided(running)) == 1
    view = await story.view(running)
    assert (view["status"], view["reason"]) == ("finished", "campaign_stopped")
    assert await story.decided(waiting) == []
    assert (await story.view(waiting))["campaign"] is None

    await story.put_campaign(steps)
    await story.at(story.start + 66 * DAY)
    assert len(await story.decided(waiting)) == 1


async def test_a_lead_planned_for_a_campaign_switched_off_meanwhile_is_not_enrolled(
    story: Story,
) -> None:
    """Regression: a waiting lead claimed after its campaign was switched off
    (a PUT racing the scheduler; here the flag is flipped behind the PUT's
    back) was enrolled and stopped at once instead of planned again."""
    await story.put_campaign([email_step(0)])
    lead = story.received()
    await story.apply()
    await story.database.execute(
        "UPDATE campaigns SET active = false WHERE campaign = $1", story.campaign
    )

    await story.at(story.start + 30 * DAY)

    assert await story.decided(lead) == []
    view = await story.view(lead)
    assert (view["status"], view["campaign"], view["enrolled_at"]) == (
        "waiting",
        None,
        None,
    )
