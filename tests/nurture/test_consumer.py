"""The consumer: batches that fail and run again, merges, and queue news the
relay re-sent out of order."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.nurture import repository
from shared.db import Connection
from shared.events import (
    Consent,
    LeadDuplicate,
    LeadExhausted,
    LeadQueued,
    LeadSnapshot,
)
from tests.conftest import unique_phone
from tests.nurture.conftest import DAY, ZONE, Story, email_step, sms_step


def ended(campaign: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "redial_nurture_enrolments_ended_total",
        {"campaign": campaign, "reason": reason},
    )
    return value or 0.0


async def test_a_batch_rolled_back_and_re_run_is_counted_once(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a batch that failed after staging a counter (here a
    deadlock in the re-plan: retriable, so the batch runs again) left the
    increment staged, and the next commit counted the conversion twice."""
    await story.put_campaign([email_step(0), email_step(5)])
    lead = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    before = ended(story.campaign, "converted")
    story.converted(lead)
    batch = list(story.pending)

    original = repository.replan_waiting
    failed = False

    async def deadlocked_once(
        connection: Connection,
        lead_ids: Sequence[uuid.UUID] | None,
        now: dt.datetime,
        zone: str,
    ) -> None:
        nonlocal failed
        # The batch of the conversion re-plans no lead: fail its (empty) re-plan.
        if not failed and lead_ids is not None:
            failed = True
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        await original(connection, lead_ids, now, zone)

    monkeypatch.setattr(repository, "replan_waiting", deadlocked_once)
    with pytest.raises(asyncpg.exceptions.DeadlockDetectedError):
        await story.apply()  # rolled back: the consumer re-reads the partition
    story.pending = batch
    await story.apply()

    assert ended(story.campaign, "converted") == before + 1


async def test_a_merge_that_brings_an_opted_out_number_stops_texts(
    story: Story,
) -> None:
    """Regression: lead A's number opted out of SMS; lead B (email only) was
    later merged with a copy carrying A's number. The merge wrote the phone
    without looking at the opt-outs, so B was texted on an opted-out number."""
    await story.put_campaign([sms_step(0)])
    phone = unique_phone()
    first = story.received(phone=phone)
    await story.apply()
    answer = await story.api.post(f"/v1/leads/{first}/opt-out", json={"channel": "sms"})
    assert answer.status_code == 200, answer.text

    second = story.received(phone=None, at=story.start + dt.timedelta(minutes=1))
    await story.apply()
    email = await story.database.fetchval(
        "SELECT email FROM leads WHERE lead_id = $1", second
    )
    merged = LeadSnapshot(
        lead_id=second,
        source=story.source,
        first_name="Ada",
        last_name="Lovelace",
        phone=phone,
        email=email,
        timezone=ZONE.key,
        consent=Consent(call=True, sms=True, email=True),
        received_at=story.start + dt.timedelta(minutes=1),
    )
    story.event(
        LeadDuplicate(
            lead_id=second,
            source=story.source,
            matched_on="email",
            action="merged",
            merged_fields=["phone"],
            lead=merged,
            received_at=story.clock.now(),
        ),
        second,
    )
    await story.apply()

    assert (await story.view(second))["channels"]["sms"]["reason"] == "opted_out"
    await story.at(story.start + 31 * DAY)
    assert await story.decided(second) == []


async def test_queue_news_re_sent_out_of_order_does_not_hold_a_lead_forever(
    story: Story,
) -> None:
    """Regression: a re-sent outbox batch can land a lead's later event before
    its earlier one (Tansu has no idempotent producer). lead.exhausted
    followed by the older lead.queued left a lead of a holding pool 'open'
    for good, held forever; queue news older than the applied is now
    ignored."""
    await story.put_campaign([email_step(0)])
    lead = story.received()
    await story.apply()
    queued_at = story.clock.now()
    exhausted_at = queued_at + 5 * DAY
    queued = LeadQueued(
        lead_id=lead,
        pool=story.pool,
        source=story.source,
        call_target=8,
        nurture_while_calling=False,
        due_at=queued_at,
        queued_at=queued_at,
    )
    exhausted = LeadExhausted(
        lead_id=lead,
        pool=story.pool,
        attempts=8,
        call_target=8,
        exhausted_at=exhausted_at,
    )
    story.event(exhausted, lead)
    story.event(queued, lead)  # landed second on the topic, happened first
    await story.apply()

    await story.at(story.start + 40 * DAY)
    assert (await story.view(lead))["status"] != "held"
    assert len(await story.decided(lead)) == 1


async def test_two_opt_outs_in_one_batch_end_the_sequence_once(
    story: Story,
) -> None:
    """Regression: whether a statement took a lead out of its sequence was
    guessed from the new row (finished now, for this reason); a second
    opt-out in the same batch (one ``now``) counted the same lead again."""
    await story.put_campaign([email_step(0), email_step(5)])
    lead = story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    before = ended(story.campaign, "opted_out")

    story.opted_out(lead, "all")
    story.opted_out(lead, "all")
    await story.apply()

    assert ended(story.campaign, "opted_out") == before + 1
