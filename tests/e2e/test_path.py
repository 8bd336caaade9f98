"""The whole system, every service its own process (see ``scenario.py`` for
the story and the figures it must end with)."""

from __future__ import annotations

from collections.abc import Awaitable

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
    it again: nothing accepted is lost and nothing is counted twice.

    The copy killed is the one doing the work at that moment (the relay
    publishing the outbox; a consumer holding partitions), and it is first
    hung with SIGSTOP while the other copy goes on, so that work is provably
    in flight when it dies: rows wait in its outbox, events on its
    partitions."""
    async with launch_system(copies=2) as system:
        story = Story(system, agents=[("ann", 0), ("bob", 1)])
        story.exactly_once_on_topics = False
        await story.set_up()
        await story.crms_post(north=10, south=5)

        # intake: the publishing copy hangs, the CRM goes on posting to the
        # other one, whose leads wait in the outbox; then the hung one dies.
        intake = await system.outbox_leader("intake")
        system.copy("intake", intake).pause()
        await story.crms_post(north=5, south=5, intake_copies=[1 - intake])
        assert await system.unpublished("intake") >= 10
        system.copy("intake", intake).kill()
        await story.routed()
        system.copy("intake", intake).start()

        queue = await system.outbox_leader("queue")

        async def metrics_copy_holding_partitions() -> int | None:
            held = [await system.partitions_held("metrics", copy) for copy in range(2)]
            return held.index(max(held)) if max(held) else None

        metrics = await eventually(
            metrics_copy_holding_partitions, what="a metrics copy to hold partitions"
        )

        async def crash(round_number: int) -> set[int]:
            if round_number == 1:
                # The publishing queue copy and a metrics copy holding
                # partitions hang; the agents' dialers fail over to the
                # other queue copy for the second round.
                system.copy("queue", queue).pause()
                system.copy("metrics", metrics).pause()
                return {queue}
            # The second round's calls wait in the outbox of a relay that
            # cannot publish. Kill both hung copies; the survivors alone must
            # publish and count the round before the dead come back.
            assert await system.unpublished("queue") >= len(story.leads)
            for service, copy in (("queue", queue), ("metrics", metrics)):
                system.copy(service, copy).kill()
            await eventually(
                lambda: _none_left(system.unpublished("queue")),
                what="the surviving queue copy to publish the second round",
            )
            await story.metrics_counted(2 * len(story.leads), 2 * len(story.leads))
            for service, copy in (("queue", queue), ("metrics", metrics)):
                system.copy(service, copy).start()
            for service, copy in (
                ("intake", intake),
                ("queue", queue),
                ("metrics", metrics),
            ):
                system.copy(service, copy).wait_healthy(60)
            return set()

        await story.play_calls(between_rounds=crash)
        await story.check_figures()

        # nurture: the publishing copy hangs as the thirty days pass; the
        # other copy decides every step, which then waits in the outbox.
        nurture = await system.outbox_leader("nurture")
        system.copy("nurture", nurture).pause()

        async def crash_nurture() -> None:
            expected = len(set(story.north) - story.converting)
            await eventually(
                lambda: _at_least(system.unpublished("nurture"), expected),
                what="the surviving nurture copy to decide every first step",
            )
            system.copy("nurture", nurture).kill()
            await eventually(
                lambda: _none_left(system.unpublished("nurture")),
                what="the surviving nurture copy to publish the jobs",
            )
            system.copy("nurture", nurture).start()
            system.copy("nurture", nurture).wait_healthy(60)

        await story.check_nurture(on_moved=crash_nurture)


async def _at_least(count: Awaitable[int], floor: int) -> bool | None:
    return True if await count >= floor else None


async def _none_left(count: Awaitable[int]) -> bool | None:
    return True if await count == 0 else None
