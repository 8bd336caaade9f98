"""The whole system, every service its own process (see ``scenario.py`` for
the story and the figures it must end with)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import LaunchSystem, System, eventually
from tests.e2e.scenario import Story


@pytest.mark.timeout(300)
async def test_leads_travel_the_whole_path(launch_system: LaunchSystem) -> None:
    """Webhook → intake → pool → an agent's dialer → metrics → exhausted →
    thirty days → nurture's first step, with one copy of each service."""
    async with launch_system() as system:
        story = Story(system, agents=[("ann", 0)])
        await story.set_up()
        await story.crms_post(north=4, south=2)
        await story.routed()
        await story.play_calls()
        await story.check_figures()
        await story.check_nurture()


async def partitions_split(system: System, service: str) -> None:
    """Both copies of ``service`` hold some of lead-events' partitions, and
    together all of them."""

    async def split() -> bool | None:
        held = []
        for copy in range(2):
            samples = await system.scrape(service, copy)
            held.append(
                sum(
                    value
                    for name, value in samples.items()
                    if name.startswith("redial_consumer_partitions_assigned{")
                    and "dlq" not in name
                )
            )
        return True if all(held) and sum(held) == 3 else None

    await eventually(split, timeout=90, what=f"{service}'s copies to split partitions")


@pytest.mark.timeout(400)
async def test_two_copies_of_every_service_share_the_work(
    launch_system: LaunchSystem,
) -> None:
    """Two copies of everything: four agents on two queue copies draw at once,
    CRM posts alternate between intake copies; still no lead leased twice at
    once, every event counted once, every nurture step sent once."""
    async with launch_system(copies=2) as system:
        for service in ("intake", "queue", "metrics", "nurture"):
            await partitions_split(system, service)
        story = Story(system, agents=[("ann", 0), ("bob", 1), ("cy", 0), ("di", 1)])
        await story.set_up()
        await story.crms_post(north=30, south=10)
        await story.routed()
        await story.play_calls()
        await story.check_figures()
        await story.check_nurture()


@pytest.mark.timeout(500)
async def test_a_killed_copy_of_each_service_loses_and_doubles_nothing(
    launch_system: LaunchSystem,
) -> None:
    """kill -9 one copy of each service in the middle of the run, then start
    it again: nothing accepted is lost and nothing is counted twice."""
    async with launch_system(copies=2) as system:
        story = Story(system, agents=[("ann", 0), ("bob", 1)])
        await story.set_up()
        await story.crms_post(north=10, south=5)
        # intake's second copy dies right after accepting leads: whatever it
        # had not published yet waits in the outbox for the surviving copy,
        # and the CRM goes on posting to that one.
        system.copy("intake", 1).kill()
        await story.crms_post(north=5, south=5, intake_copies=[0])
        await story.routed()

        async def crash(round_number: int) -> set[int]:
            if round_number == 1:
                # metrics and queue lose a copy with events still flowing.
                system.copy("metrics", 1).kill()
                system.copy("queue", 1).kill()
                return {1}
            # Back again before the last round; intake too.
            for service in ("intake", "queue", "metrics"):
                system.copy(service, 1).start()
            for service in ("intake", "queue", "metrics"):
                system.copy(service, 1).wait_healthy(60)
            return set()

        await story.play_calls(between_rounds=crash)
        await story.check_figures()
        # nurture's copy dies as the thirty days pass, and comes back.

        def crash_nurture() -> None:
            system.copy("nurture", 1).kill()
            system.copy("nurture", 1).start()

        await story.check_nurture(on_moved=crash_nurture)
