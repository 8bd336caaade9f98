"""Where the demo's leads live: callable now, by the queue's own rules."""

from __future__ import annotations

import datetime as dt

import pytest

from demo.crm import CRMS, LeadMaker
from demo.places import PLACES, POOL_HOURS, choose, legal_until
from services.intake.mappings import MAPPINGS
from services.intake.schemas import LeadIn
from shared.compliance import callable_window, rules_for


@pytest.mark.parametrize("place", PLACES, ids=lambda place: place.name)
def test_intake_infers_the_zones_and_state_the_table_promises(place) -> None:
    maker = LeadMaker(seed=1, run_id="abc123", places=(place,))
    for crm in CRMS:
        _, lead = maker.make(1, dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
        [raw] = MAPPINGS[crm.mapping](crm.payload(lead), crm.mapping_options)
        located = LeadIn.model_validate(raw, context={"region": "US"}).located("US")

        assert located.country == place.country
        assert located.region == place.region
        assert tuple(located.timezones) == place.zones


@pytest.mark.parametrize("month", [1, 7], ids=["winter", "summer"])
def test_every_quarter_hour_of_a_week_has_places_callable_for_the_whole_run(
    month: int,
) -> None:
    """Whatever the hour (and DST), the chosen places stay inside both the
    law's and the pool's hours, as the queue computes them, for the run."""
    run = dt.timedelta(minutes=15)
    start = dt.datetime(2026, month, 5, tzinfo=dt.UTC)  # a Monday
    for quarter in range(7 * 24 * 4):
        at = start + dt.timedelta(minutes=15 * quarter)
        choice = choose(at, run.total_seconds())

        assert choice.places, at
        for place in choice.places:
            legal_hours, caps, _ = rules_for(place.country, place.region)
            window = callable_window(at, place.zones, POOL_HOURS, legal_hours)
            assert window is not None, (at, place.name)
            start_at, end_at = window
            assert start_at == at, (at, place.name)
            assert end_at >= at + run, (at, place.name)
            assert (caps.per_24h, caps.per_day) == (None, None)


def test_us_states_are_preferred_when_one_is_open() -> None:
    # 15:00 UTC in July: 11:00 in New York, 08:00 in Los Angeles.
    choice = choose(dt.datetime(2026, 7, 6, 15, tzinfo=dt.UTC), 600)

    assert {place.tier for place in choice.places} == {0}
    assert "New York, NY" in [place.name for place in choice.places]


def test_when_no_state_is_open_the_leads_come_from_guam() -> None:
    # 08:00 UTC in July: 22:00 in Honolulu, 18:00 in Guam, 09:00 in London.
    choice = choose(dt.datetime(2026, 7, 7, 8, tzinfo=dt.UTC), 600)

    assert [place.name for place in choice.places] == ["Hagåtña, Guam"]
    assert any("US territory" in line for line in choice.described())


def test_when_no_state_or_territory_is_open_the_leads_come_from_abroad() -> None:
    # 11:30 UTC in January: 06:30 in New York, 01:30 in Honolulu, 21:30 in Guam.
    at = dt.datetime(2026, 1, 6, 11, 30, tzinfo=dt.UTC)
    choice = choose(at, 600)

    assert [place.name for place in choice.places] == ["London, UK"]
    assert any("abroad" in line for line in choice.described())
    new_york = next(place for place in PLACES if place.region == "NY")
    assert legal_until(new_york, at) is None


def test_phone_numbers_are_valid_and_never_repeat_within_a_run() -> None:
    maker = LeadMaker(seed=1, run_id="abc123", places=PLACES)
    at = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    leads = [maker.make(number, at)[1] for number in range(1, 3001)]

    assert len({lead.phone for lead in leads}) == 3000
    assert len({lead.external_id for lead in leads}) == 3000


def test_the_seed_decides_sources_and_places_but_the_run_decides_numbers() -> None:
    at = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)
    first = [LeadMaker(7, "run1", PLACES).make(n, at) for n in range(1, 50)]
    same_seed = [LeadMaker(7, "run2", PLACES).make(n, at) for n in range(1, 50)]

    assert [(crm.source, lead.place) for crm, lead in first] == [
        (crm.source, lead.place) for crm, lead in same_seed
    ]
    assert not {lead.phone for _, lead in first} & {lead.phone for _, lead in same_seed}
    assert not {lead.email for _, lead in first} & {lead.email for _, lead in same_seed}
