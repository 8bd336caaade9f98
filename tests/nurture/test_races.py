"""Races between the scheduler, campaign PUTs and two consumer copies.

Each test interleaves two transactions by hand (holding one open at a known
point) so the race is deterministic rather than timing-dependent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence

import asyncpg
import pytest

from services.nurture import repository
from services.nurture.sequencing import Advance
from shared.db import Connection
from shared.events import Envelope
from tests.conftest import unique_phone
from tests.nurture.conftest import DAY, Story, email_step, sms_step, unique


async def _wait_for_lock_wait(pool: asyncpg.Pool, fragment: str) -> None:
    """Until a session runs a statement containing ``fragment`` and waits for
    a row lock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
            fragment,
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no session waited for a lock in {fragment!r}")


async def test_a_put_during_a_scheduler_pass_does_not_rewrite_an_enrolled_lead(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the scheduler enrols a lead and holds its row while a PUT
    of a higher-priority campaign for the same source re-plans the waiting
    leads. The re-plan had read the lead as waiting and, once the row was
    free, switched the enrolled lead to the other campaign (its step 1 was
    sent next). The re-plan now checks the row again after the lock."""
    first = story.campaign
    await story.put_campaign([email_step(0, "a"), email_step(1, "a")])
    lead = story.received()
    await story.apply()

    original = repository.save_advances
    held, release = asyncio.Event(), asyncio.Event()

    async def slow_save(
        connection: Connection,
        advances: Sequence[tuple[Advance, int]],
        jobs: Sequence[Envelope],
        now: dt.datetime,
    ) -> None:
        await original(connection, advances, jobs, now)
        if any(advance.lead_id == lead for advance, _ in advances):
            held.set()
            await release.wait()

    monkeypatch.setattr(repository, "save_advances", slow_save)
    scheduler = asyncio.create_task(story.at(story.start + 30 * DAY))
    await asyncio.wait_for(held.wait(), 20)

    story.campaign = unique("camp")
    put = asyncio.create_task(
        story.put_campaign([email_step(0, "b"), email_step(1, "b")], priority=10)
    )
    await _wait_for_lock_wait(story.database, "SET (campaign, next_at)")
    release.set()
    await scheduler
    await put
    monkeypatch.setattr(repository, "save_advances", original)

    row = await story.database.fetchrow(
        "SELECT campaign, campaign_version, enrolled_at, next_at FROM leads"
        " WHERE lead_id = $1",
        lead,
    )
    await story.at(story.start + 31 * DAY)
    sent = [job.template_id for job in await story.decided(lead)]

    assert row is not None
    assert sent == ["a-0", "a-1"], f"sent {sent}; the row after the PUT: {dict(row)}"
    assert row["campaign"] == first
    assert row["next_at"] == row["enrolled_at"] + DAY


async def test_an_opt_out_applied_beside_a_new_lead_of_the_same_number(
    story: Story,
) -> None:
    """Regression: two consumer copies apply, at the same time, an SMS opt-out
    of a lead and the arrival of a new lead with the same number. Neither
    transaction can see the other's uncommitted rows, so the new lead started
    not opted out and was texted; the scheduler now checks the opt-out and
    DNC lists again when it claims a lead."""
    await story.put_campaign([sms_step(0)])
    phone = unique_phone()
    first = story.received(phone=phone)
    await story.apply()

    story.opted_out(first, "sms")
    opt_out, story.pending = story.pending, []
    # The same person, a minute later: a re-inquiry.
    later = story.received(phone=phone, at=story.start + dt.timedelta(minutes=1))
    arrival, story.pending = story.pending, []

    async def apply(connection: Connection, events: Sequence[Envelope]) -> None:
        async with connection.transaction():
            await story.service.apply_events(connection, events)

    async with story.database.acquire() as one, story.database.acquire() as two:
        transaction = one.transaction()
        await transaction.start()
        await story.service.apply_events(one, opt_out)
        # The arrival runs its upsert, then waits for ``first``'s row (the
        # re-inquiry ends it), which the opt-out holds.
        other = asyncio.create_task(apply(two, arrival))
        await _wait_for_lock_wait(story.database, "WITH new AS")
        await transaction.commit()
        await other
    story.service.after_commit()

    await story.at(story.start + 31 * DAY)
    assert await story.decided(later) == []
    view = await story.view(later)
    assert view["channels"]["sms"] == {"allowed": False, "reason": "opted_out"}
