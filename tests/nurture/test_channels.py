"""Consent, SMS hours and opt-outs: which channel may carry which step."""

from __future__ import annotations

import datetime as dt
import uuid

from prometheus_client import REGISTRY

from shared.events import LeadOptedOut
from tests.conftest import unique_phone
from tests.kafka_reader import events_about
from tests.nurture.conftest import DAY, Story, email_step, sms_step, unique_email


def suppressed(campaign: str, channel: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "redial_nurture_steps_suppressed_total",
        {"campaign": campaign, "channel": channel, "reason": reason},
    )
    return value or 0.0


async def test_sms_without_consent_is_never_sent(story: Story) -> None:
    await story.put_campaign([email_step(0), sms_step(1), email_step(2), sms_step(3)])
    lead = story.received(sms=False)
    await story.apply()

    for day in (30, 31, 32, 33, 40):
        await story.at(story.start + day * DAY)

    jobs = await story.decided(lead)
    assert [(job.step, job.channel) for job in jobs] == [(0, "email"), (2, "email")]
    view = await story.view(lead)
    assert [(step["state"], step["reason"]) for step in view["steps"]] == [
        ("sent", None),
        ("skipped", "consent"),
        ("sent", None),
        ("skipped", "consent"),
    ]
    assert view["channels"]["sms"] == {"allowed": False, "reason": "consent"}
    assert suppressed(story.campaign, "sms", "consent") == 2


async def test_email_without_consent_or_address_is_never_sent(story: Story) -> None:
    await story.put_campaign([email_step(0), sms_step(0)])
    no_consent = story.received(email=False)
    no_address = story.received(address=None)
    await story.apply()

    await story.at(story.start + 30 * DAY)

    for lead, reason in ((no_consent, "consent"), (no_address, "no_address")):
        assert [job.channel for job in await story.decided(lead)] == ["sms"]
        view = await story.view(lead)
        assert view["steps"][0]["reason"] == reason


async def test_sms_due_at_22_local_goes_out_at_08_the_next_morning(
    story: Story,
) -> None:
    await story.put_campaign([sms_step(0)])
    lead = story.received(at=story.local(0, 22))
    await story.apply()
    before = suppressed(story.campaign, "sms", "quiet_hours")

    await story.at(story.local(30, 22))
    assert await story.decided(lead) == []
    view = await story.view(lead)
    assert view["status"] == "enrolled"
    assert view["steps"][0]["state"] == "pending"
    assert view["steps"][0]["at"] == _utc(story.local(31, 8))
    assert suppressed(story.campaign, "sms", "quiet_hours") == before + 1

    await story.at(story.local(31, 7, 59))
    assert await story.decided(lead) == []

    await story.at(story.local(31, 8))
    [job] = await story.published(lead, 1)
    assert job.channel == "sms"
    assert job.due_at == story.local(31, 8)
    assert job.send_before == story.local(31, 21)


async def test_sms_to_a_florida_lead_waits_for_the_state_hours(story: Story) -> None:
    """Florida allows calls and texts 08:00-20:00: 20:30 is inside the
    service's 21:00 but not inside the law's hours."""
    await story.put_campaign([sms_step(0), email_step(0)])
    lead = story.received(
        at=story.local(0, 20, 30), country="US", region="FL", phone="+13055550123"
    )
    await story.apply()

    await story.at(story.local(30, 20, 30))
    assert await story.decided(lead) == []

    await story.at(story.local(31, 8))
    jobs = await story.decided(lead)
    assert [job.channel for job in jobs] == ["sms", "email"]
    assert [job.send_before for job in jobs] == [story.local(31, 20), None]


async def test_an_sms_opt_out_mid_sequence_stops_sms_only(story: Story) -> None:
    await story.put_campaign([email_step(0), sms_step(1), email_step(2), sms_step(3)])
    lead = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)

    answer = await story.api.post(f"/v1/leads/{lead}/opt-out", json={"channel": "sms"})
    assert answer.status_code == 200, answer.text
    assert [step["state"] for step in answer.json()["steps"]] == [
        "sent",
        "cancelled",
        "pending",
        "cancelled",
    ]
    for day in (31, 32, 33):
        await story.at(story.start + day * DAY)

    jobs = await story.published(lead, 2)
    assert [(job.step, job.channel) for job in jobs] == [(0, "email"), (2, "email")]
    assert [job.step for job in await story.decided(lead)] == [0, 2]
    view = await story.view(lead)
    assert [(step["state"], step["reason"]) for step in view["steps"]] == [
        ("sent", None),
        ("skipped", "opted_out"),
        ("sent", None),
        ("skipped", "opted_out"),
    ]
    [event] = await events_about(story.bootstrap, {str(lead)}, count=1)
    assert isinstance(event.data, LeadOptedOut)
    assert event.data.channel == "sms"
    assert event.data.phone is not None


async def test_an_email_opt_out_event_stops_email_for_every_lead_with_the_address(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0), sms_step(1), email_step(2)])
    address = "same.person@example.org"
    lead = story.received(address=address)
    await story.apply()
    await story.at(story.start + 30 * DAY)
    story.event(
        LeadOptedOut(
            lead_id=lead,
            email=address,
            channel="email",
            opted_out_at=story.clock.now(),
        ),
        lead,
    )
    await story.apply()
    await story.at(story.start + 33 * DAY)

    assert [job.step for job in await story.decided(lead)] == [0, 1]
    # A later lead of the same person starts opted out of email.
    later = story.received(address=address, phone=None)
    await story.apply()
    assert (await story.view(later))["channels"]["email"] == {
        "allowed": False,
        "reason": "opted_out",
    }


async def test_opting_out_of_everything_ends_the_sequence_at_once(story: Story) -> None:
    await story.put_campaign([email_step(0), sms_step(2)])
    lead = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)

    answer = await story.api.post(f"/v1/leads/{lead}/opt-out", json={"channel": "all"})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["reason"]) == ("finished", "opted_out")
    await story.at(story.start + 40 * DAY)
    assert len(await story.decided(lead)) == 1


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


async def test_an_opt_out_of_everything_keeps_each_address_to_its_own_channel(
    story: Story,
) -> None:
    """Regression: an opt-out of ``all`` set both flags on every lead sharing
    either address, so a lead sharing only the number lost its emails too."""
    await story.put_campaign([email_step(0), sms_step(0)])
    phone = unique_phone()
    lead = story.received(phone=phone)
    same_number = story.received(phone=phone)
    await story.apply()

    answer = await story.api.post(f"/v1/leads/{lead}/opt-out", json={"channel": "all"})
    assert answer.status_code == 200, answer.text

    channels = (await story.view(same_number))["channels"]
    assert channels["email"] == {"allowed": True, "reason": None}
    assert channels["sms"] == {"allowed": False, "reason": "opted_out"}


async def test_an_opt_out_event_for_a_lead_never_seen_still_covers_its_address(
    story: Story,
) -> None:
    address = unique_email()
    story.event(
        LeadOptedOut(
            lead_id=uuid.uuid4(),
            email=address,
            channel="email",
            opted_out_at=story.clock.now(),
        ),
        uuid.uuid4(),
    )
    await story.apply()

    lead = story.received(address=address)
    await story.apply()

    assert (await story.view(lead))["channels"]["email"]["reason"] == "opted_out"
