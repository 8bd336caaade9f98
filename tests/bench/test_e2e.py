"""The end-to-end bench's pure parts: where leads may be called, the numbers
it makes, and how it reads each lead's way. No stack is started."""

from __future__ import annotations

import datetime as dt
import math
import random

import pytest

from bench import e2e
from bench.e2e import Leased, Tally

#: A Wednesday evening in New York, and the morning after in UTC when no US
#: state may be called (07:00-13:00 UTC).
EVENING_IN_NEW_YORK = dt.datetime(2026, 12, 2, 22, 0, tzinfo=dt.UTC)
NIGHT_IN_THE_US = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)


def test_areas_are_us_states_whose_window_stays_open_for_the_run() -> None:
    areas = e2e.open_areas(EVENING_IN_NEW_YORK, dt.timedelta(minutes=30))

    assert areas
    assert all(area.country == "US" and area.region for area in areas)
    assert {"NY", "CA", "HI"} <= {area.region for area in areas}
    assert all(
        area.closes_at >= EVENING_IN_NEW_YORK + dt.timedelta(minutes=30)
        for area in areas
    )


def test_a_state_whose_window_closes_during_the_run_is_left_out() -> None:
    # 00:30 UTC: 19:30 in Miami, where Florida's law stops calls at 20:00.
    half_past_midnight = dt.datetime(2026, 12, 3, 0, 30, tzinfo=dt.UTC)

    regions = {
        area.region
        for area in e2e.open_areas(half_past_midnight, dt.timedelta(minutes=45))
    }

    assert "FL" not in regions
    assert "NY" in regions


def test_when_no_us_state_may_be_called_other_places_are_used() -> None:
    areas = e2e.open_areas(NIGHT_IN_THE_US, dt.timedelta(minutes=30))

    assert areas
    assert not any(area.country == "US" and area.region for area in areas)
    assert {"GU", "GB"} & {area.country for area in areas}


def test_leads_never_share_a_phone_or_an_email() -> None:
    areas = e2e.open_areas(EVENING_IN_NEW_YORK, dt.timedelta(minutes=30))
    leads = e2e.Leads(areas, random.Random(7))

    documents = [leads.document() for _ in range(5_000)]

    assert len({document["phone"] for document in documents}) == 5_000
    assert len({document["email"] for document in documents}) == 5_000
    prefixes = {area.prefix for area in areas}
    assert all(document["phone"][: len("+1212")] in prefixes for document in documents)


def test_commit_groups_give_each_lead_the_size_of_its_transaction() -> None:
    times = [10.0, 10.0002, 10.0004, 10.5, 11.0, 11.0003]

    assert e2e.commit_groups(times) == [3, 3, 3, 1, 2, 2]
    assert e2e.commit_groups([]) == []


def test_a_lead_committed_with_more_ready_leads_than_free_agents_is_crowded() -> None:
    tally = Tally(agents=2)
    tally.busy = 1

    tally.routed(None, 0, e2e.CHANNEL, "lead-1")
    tally.routed(None, 0, e2e.CHANNEL, "lead-2")
    tally.lease("lead-1", Leased(sent=1.0, answered=1.1, rested=True))
    tally.routed(None, 0, e2e.CHANNEL, "lead-3")

    assert tally.crowded == {"lead-2", "lead-3"}
    assert tally.unclaimed == 2


def test_a_lead_leased_before_its_notification_is_read_is_not_unclaimed() -> None:
    tally = Tally(agents=1)

    tally.lease("lead-1", Leased(sent=1.0, answered=1.1, rested=False))
    tally.routed(None, 0, e2e.CHANNEL, "lead-1")
    tally.lease("lead-1", Leased(sent=2.0, answered=2.1, rested=False))

    assert tally.unclaimed == 0
    assert tally.crowded == set()
    assert tally.leased_twice == 1


def test_journeys_measure_from_the_202_and_a_lead_never_leased_is_infinitely_late() -> (
    None
):
    tally = Tally(agents=1)
    tally.accepted = {"early": 99.0, "a": 100.0, "b": 101.0}
    tally.committed = {"a": 100.5, "b": 101.2}
    tally.leased = {"a": Leased(sent=100.6, answered=100.7, rested=True)}

    found = e2e.journeys(
        tally, {"a": 100.1, "b": 101.1}, {"a": 100.3}, start=100.0, end=102.0
    )

    assert len(found) == 2
    a, b = found
    stages = (a.published, a.started, a.committed, a.polled, a.leased)
    assert stages == pytest.approx((0.1, 0.3, 0.5, 0.6, 0.7))
    assert (a.crowded, a.rested) == (False, True)
    assert math.isinf(b.leased)
    assert math.isinf(b.started)
    assert b.committed == pytest.approx(0.2)
