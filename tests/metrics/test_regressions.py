"""One test per fault found in review, each saying what went wrong."""

from __future__ import annotations

from typing import Any

import httpx

from tests.metrics.conftest import Script, unique

CADENCE = (0, 3600, 4 * 3600, 86400)


async def _lead(api: httpx.AsyncClient, lead_id: object) -> dict[str, Any]:
    answer = await api.get(f"/v1/leads/{lead_id}/penetration")
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def test_a_recycled_lead_keeps_its_attempts_in_the_new_pool(
    script: Script, api: httpx.AsyncClient
) -> None:
    """A recycle to another pool keeps the lead's attempts (the queue goes on
    from the next one), but the new round planned attempts 1…target again and
    added the whole target to the lifetime one: 3/6 where 6/6 was due."""
    other = unique("pool")
    lead = script.lead(script.local(8), target=6, cadence=(0, 600))
    for attempt, minute in enumerate((0, 10, 20), 1):
        script.call(lead, script.local(8, minute), attempt=attempt, target=6)
    # Moved at 08:30 with its three attempts: attempts 4, 5, 6 are planned
    # at 08:30 + the first 4, 5, 6 gaps (30, 40, 50 minutes after it).
    script.queued(
        lead, script.local(8, 30), target=6, cadence=(0, 600), pool=other, carried=3
    )
    for attempt, minute in ((4, 0), (5, 10), (6, 20)):
        script.call(
            lead, script.local(9, minute), attempt=attempt, target=6, pool=other
        )
    await script.apply()
    await script.at(script.local(12))

    figures = await _lead(api, lead)
    assert (figures["attempts"], figures["attempts_due"]) == (6, 6)
    assert figures["target_total"] == 6
    assert figures["round"]["attempts"] == 6
    assert {
        day["pool"]: (day["attempts"], day["attempts_due"]) for day in figures["days"]
    } == {script.pool: (3, 3), other: (3, 3)}


async def test_a_raised_target_plans_new_attempts_from_the_call_that_raised_it(
    script: Script, api: httpx.AsyncClient
) -> None:
    """Raising a pool's target re-planned the round from its start, so the
    attempts it added fell due on days already over, rewriting them."""
    lead = script.lead(script.local(8), target=2, cadence=(0, 600))
    script.call(lead, script.local(8), attempt=1, target=2)
    script.call(lead, script.local(8, 10), attempt=2, target=2)
    await script.apply()
    await script.at(script.local(9, day=1))
    # The next day the target is 4: attempts 3 and 4 are due from this call.
    script.call(lead, script.local(9, day=1), attempt=3, target=4)
    await script.apply()
    await script.at(script.local(23, day=1))

    days = (await _lead(api, lead))["days"]
    assert [(day["attempts"], day["attempts_due"]) for day in days] == [
        (2, 2),
        (1, 2),
    ]


async def test_a_lowered_target_keeps_the_attempts_already_due(
    script: Script, api: httpx.AsyncClient
) -> None:
    """Lowering the target cancelled slots that had been due (and counted)
    on earlier days, taking them back out of days already reported."""
    lead = script.lead(script.local(8), target=4, cadence=(0, 3600))
    await script.apply()
    await script.at(script.local(12))  # all four were due by 11:00
    script.call(lead, script.local(12), attempt=1, target=2)
    await script.apply()

    figures = await _lead(api, lead)
    assert (figures["attempts"], figures["attempts_due"]) == (1, 4)
    assert figures["call_target"] == 2


async def test_below_target_pages_keep_a_lead_with_rows_in_two_pools(
    script: Script, api: httpx.AsyncClient
) -> None:
    """A lead moved to another pool mid-day has a short row in each with the
    same penetration; the cursor (penetration, missing, lead id) skipped the
    second at a page boundary."""
    other = unique("pool")
    lead = script.lead(script.local(8), target=3, cadence=(0, 600))
    script.exhausted(lead, script.local(8, 5), attempts=0)
    script.queued(lead, script.local(8, 5), target=3, cadence=(0, 600), pool=other)
    await script.apply()
    await script.at(script.local(12))

    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {
            "day": script.day.isoformat(),
            "source": script.source,
            "limit": 1,
        }
        answer = await api.get(
            "/v1/leads/below-target",
            params=params | ({"cursor": cursor} if cursor else {}),
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [(row["lead_id"], row["pool"]) for row in page["leads"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([(str(lead), script.pool), (str(lead), other)])


async def test_a_window_at_the_end_of_the_calendar_is_refused(
    api: httpx.AsyncClient,
) -> None:
    """9999-12-31..9999-12-31 overflowed computing the window's end: a 500."""
    answer = await api.get(
        "/v1/penetration", params={"window": "9999-12-31..9999-12-31"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "window"
