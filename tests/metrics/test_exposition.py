"""The service's ``/metrics``: valid exposition, the gauges' values for a
small scripted morning, and labels bounded by configuration (no lead ids).

promtool ships in Debian's ``prometheus`` package; without it the format
check is skipped with that reason, the value checks still run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.metrics.conftest import Script, unique

PROMTOOL = shutil.which("promtool")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def exposition(api: httpx.AsyncClient, script: Script) -> str:
    await script.service.refresh_gauges()
    answer = await api.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


async def a_morning(script: Script, team: str) -> list[uuid.UUID]:
    """Lead A arrives at 09:00 and is called at 09:01 (no answer) and 11:55
    (contacted) by one agent of ``team``; lead B arrives at 09:30 and is not
    called. At 12:00 A has 2 of its 2 due slots (09:00, 10:00), B 0 of 2
    (09:30, 10:30)."""
    agent = unique("agent")
    first = script.lead(script.local(9))
    script.call(first, script.local(9, 1), attempt=1, agent=agent, team=team)
    script.call(
        first, script.local(11, 55), "contacted", attempt=2, agent=agent, team=team
    )
    second = script.lead(script.local(9, 30))
    await script.at(script.local(12))
    await script.apply()
    return [first, second]


@pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (`make promtool` installs it where it can)",
)
async def test_the_exposition_passes_promtool(
    script: Script, api: httpx.AsyncClient
) -> None:
    await a_morning(script, unique("team"))
    text = await exposition(api, script)

    assert PROMTOOL is not None
    checked = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_the_gauges_give_the_mornings_figures(
    script: Script, api: httpx.AsyncClient
) -> None:
    """Penetration (2 + 0) / (2 + 2) in every window; the team called only
    A (2/2); nothing ended (list penetration 0); 2 attempts over 2 leads; B
    uncalled for 2.5 h; the agent's 11:55 call is within the last 15 min."""
    team = unique("team")
    await a_morning(script, team)
    found = samples(await exposition(api, script))
    pool, source = script.pool, script.source

    for window in ("1d", "7d", "30d"):
        assert value(
            found,
            "redial_metrics_penetration_ratio",
            pool=pool,
            source=source,
            window=window,
        ) == (2 / 4), window
        assert value(
            found, "redial_metrics_team_penetration_ratio", team=team, window=window
        ) == (2 / 2), window
    assert value(found, "redial_metrics_list_penetration_ratio", pool=pool) == 0.0
    assert value(found, "redial_metrics_attempts_per_lead", pool=pool) == 1.0
    assert value(found, "redial_metrics_uncalled_leads", pool=pool) == 1.0
    age = "redial_metrics_oldest_uncalled_lead_age_seconds"
    assert value(found, age, pool=pool) == 2.5 * 3600
    assert value(found, "redial_metrics_active_agents", team=team) == 1.0
    refreshed = "redial_metrics_gauges_refreshed_timestamp_seconds"
    assert value(found, refreshed) == script.clock.now().timestamp()
    attempts = "redial_metrics_attempts_total"
    assert value(found, attempts, pool=pool, disposition="no_answer") == 1.0
    assert value(found, attempts, pool=pool, disposition="contacted") == 1.0
    speed = "redial_metrics_speed_to_lead_seconds"
    assert value(found, f"{speed}_count", pool=pool) == 1.0
    assert value(found, f"{speed}_sum", pool=pool) == 60.0
    contact = "redial_metrics_attempts_at_contact"
    assert value(found, f"{contact}_sum", pool=pool) == 2.0


async def test_a_window_with_nothing_due_drops_its_series(
    script: Script, api: httpx.AsyncClient
) -> None:
    """Just after midnight nothing is due yet today: the 1d series of the
    pool goes away rather than keep yesterday's value, while 7d now counts
    the day's 14:00 and 14:30 slots too: (2 + 0) / (3 + 3)."""
    await a_morning(script, unique("team"))
    await exposition(api, script)
    await script.at(script.local(0, 30, day=1))
    found = samples(await exposition(api, script))
    labels = {"pool": script.pool, "source": script.source}

    penetration = "redial_metrics_penetration_ratio"
    assert value(found, penetration, **labels, window="1d") is None
    assert value(found, penetration, **labels, window="7d") == 2 / 6
    assert value(found, penetration, **labels, window="30d") == 2 / 6


async def test_no_label_value_is_a_lead_id(
    script: Script, api: httpx.AsyncClient
) -> None:
    leads = await a_morning(script, unique("team"))
    text = await exposition(api, script)

    for lead in leads:
        assert str(lead) not in text
        assert lead.hex not in text
    for name, labels in samples(text):
        for label, text_value in labels:
            try:
                uuid.UUID(text_value)
            except ValueError:
                continue
            pytest.fail(f"{name} has a uuid for its {label} label: {text_value}")
