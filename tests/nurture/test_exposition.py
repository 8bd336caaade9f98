"""Nurture's ``/metrics``: valid exposition, counts that follow a story, and
labels bounded by configuration (campaigns, channels, reasons; no lead ids).

promtool ships in Debian's ``prometheus`` package; without it the format
check is skipped with that reason, the value checks still run.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.nurture.conftest import DAY, Story, email_step, sms_step

PROMTOOL = shutil.which("promtool")


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


def value(text: str, name: str, **labels: str) -> float:
    """A counter's value; 0 when the labelled child was never created."""
    return sample(text, name, **labels) or 0.0


async def test_metrics_count_enrolments_jobs_suppressions_and_endings(
    story: Story,
) -> None:
    await story.put_campaign([email_step(0), sms_step(0), email_step(2)])
    sent = story.received()
    no_sms = story.received(sms=False)
    await story.apply()
    await story.at(story.start + 30 * DAY)
    story.converted(no_sms)
    await story.apply()
    await story.at(story.start + 32 * DAY)

    text = (await story.api.get("/metrics")).text

    campaign = story.campaign
    assert value(text, "redial_nurture_enrolments_total", campaign=campaign) == 2
    assert (
        value(text, "redial_nurture_jobs_total", campaign=campaign, channel="email")
        == 3
    )
    assert (
        value(text, "redial_nurture_jobs_total", campaign=campaign, channel="sms") == 1
    )
    assert (
        value(
            text,
            "redial_nurture_steps_suppressed_total",
            campaign=campaign,
            channel="sms",
            reason="consent",
        )
        == 1
    )
    for reason in ("converted", "completed"):
        assert (
            value(
                text,
                "redial_nurture_enrolments_ended_total",
                campaign=campaign,
                reason=reason,
            )
            == 1
        )
    assert str(sent) not in text
    assert str(no_sms) not in text
    # The last pass of the run found nothing due: no lead is waiting late.
    assert sample(text, "redial_nurture_scheduler_lag_seconds") == 0.0


@pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (`make promtool` installs it where it can)",
)
async def test_the_exposition_passes_promtool(story: Story) -> None:
    await story.put_campaign([email_step(0)])
    story.received()
    await story.apply()
    await story.at(story.start + 30 * DAY)
    text = (await story.api.get("/metrics")).text
    assert PROMTOOL is not None

    checked = await asyncio.to_thread(
        subprocess.run,
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        check=False,
        timeout=30,
    )

    # promtool flags style (lint) problems with exit code 1 and names them.
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
