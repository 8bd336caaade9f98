"""The worked example of docs/metrics.md, played through the service: if a
figure there changes, this test and the page change together."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.metrics.conftest import Script

CADENCE = (0, 3600, 4 * 3600, 86400)


async def _pool_figures(api: httpx.AsyncClient, script: Script) -> dict[str, Any]:
    answer = await api.get(
        "/v1/penetration",
        params={"group_by": "pool", "window": "1d", "pool": script.pool},
    )
    assert answer.status_code == 200, answer.text
    (group,) = answer.json()["groups"]
    figures: dict[str, Any] = group
    return figures


async def test_the_worked_example_of_the_metrics_page(
    script: Script, api: httpx.AsyncClient
) -> None:
    a = script.lead(script.local(9), target=4, cadence=CADENCE)
    b = script.lead(script.local(9), target=4, cadence=CADENCE)
    for attempt, (hour, minute) in enumerate([(9, 2), (10, 30), (14, 10)], 1):
        script.call(a, script.local(hour, minute), attempt=attempt)
    calls_b = [(9, 1), (9, 20), (9, 40), (11, 0), (15, 0)]
    for attempt, (hour, minute) in enumerate(calls_b, 1):
        script.call(b, script.local(hour, minute), attempt=attempt)
    c = script.lead(script.local(13), target=4, cadence=CADENCE)
    script.call(c, script.local(16), attempt=1)
    await script.at(script.local(16, 30))
    await script.apply()

    midday = await _pool_figures(api, script)
    # At 16:30 C's 18:00 slot is not due yet: (3 + 3 + 1) / (3 + 3 + 2).
    assert midday["penetration"] == 7 / 8

    await script.at(script.local(23, 59))
    day = await _pool_figures(api, script)
    assert (day["leads"], day["attempts"], day["attempts_due"]) == (3, 9, 9)
    assert day["penetration"] == pytest.approx(7 / 9, rel=1e-12)
    assert day["uncapped_penetration"] == 1.0
    assert day["attempts_by_disposition"]["no_answer"] == 9
    assert day["speed_to_lead_seconds"] == {"p50": 120.0, "p90": 8664.0}
    assert day["share_called_within"] == pytest.approx(2 / 3, rel=1e-12)

    below = (
        await api.get("/v1/leads/below-target", params={"pool": script.pool})
    ).json()
    assert [(row["lead_id"], row["missing"]) for row in below["leads"]] == [(str(c), 2)]
    assert below["leads"][0]["penetration"] == pytest.approx(1 / 3, rel=1e-12)


async def test_a_conversion_cancels_the_slots_after_it(
    script: Script, api: httpx.AsyncClient
) -> None:
    """The example's last line: C converting on its 16:00 call is not due its
    18:00 attempt, so it ends the day at 1/2, not 1/3."""
    c = script.lead(script.local(13), target=4, cadence=CADENCE)
    script.call(c, script.local(16), "converted", attempt=1)
    script.converted(c, script.local(16), attempt=1)
    await script.at(script.local(16, 30))
    await script.apply()
    await script.at(script.local(23, 59))

    lead = (await api.get(f"/v1/leads/{c}/penetration")).json()
    assert (lead["attempts"], lead["attempts_due"], lead["penetration"]) == (1, 2, 0.5)
    assert lead["state"] == "converted"
    assert lead["next_attempt_due"] is None
    assert (await _pool_figures(api, script))["conversion_rate"] == 1.0
