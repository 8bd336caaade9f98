"""Where the simulated leads live, chosen so the law lets them be called now.

The queue serves a lead only inside the law's calling hours of its state (or
the federal hours) and its pool's hours, in every zone the lead may be in
(``shared/compliance.py``). A demo started at 03:00 New York time would
otherwise sit with nobody to call. So the CRM gives its leads phone numbers
and ZIP codes from places where, by the same rules the queue applies, calls
are allowed from now until the run is over. The rules are not relaxed: the
demo only picks where its fictional leads live.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from shared.compliance import CallingHours, callable_window, rules_for

#: The demo pools' own hours: 08:00-21:00 in the lead's local time, every
#: day (the queue's default closes Sundays; the law's hours still apply).
POOL_START, POOL_END = dt.time(8), dt.time(21)
POOL_HOURS = (CallingHours(POOL_START, POOL_END, frozenset(range(1, 8))),)
#: Width the demo wraps its explanations to.
WIDTH = 88


@dataclass(frozen=True)
class Place:
    """A place leads come from, and what intake infers from their numbers."""

    name: str
    country: str  # ISO 3166, what intake derives from the phone number
    region: str | None  # the US state, from the ZIP code
    postal_code: str | None
    #: The dialling prefix, ``+1212`` or ``+44207``; random digits follow.
    prefix: str
    #: Digits after the prefix.
    local_digits: int
    #: Every zone intake infers from the ZIP code and the phone number.
    zones: tuple[str, ...]
    #: 0 = US state, 1 = US territory, 2 = abroad: the lower is preferred.
    tier: int


#: States without frequency caps (Florida, Maryland and Oklahoma allow three
#: calls in 24 hours, which a demo cadence would hit at once), spread over
#: the US zones, then places whose day covers the hours the states' do not.
PLACES = (
    Place("New York, NY", "US", "NY", "10001", "+1212", 7, ("America/New_York",), 0),
    Place("Chicago, IL", "US", "IL", "60601", "+1312", 7, ("America/Chicago",), 0),
    Place("Denver, CO", "US", "CO", "80202", "+1303", 7, ("America/Denver",), 0),
    Place(
        "Los Angeles, CA", "US", "CA", "90012", "+1213", 7, ("America/Los_Angeles",), 0
    ),
    Place("Honolulu, HI", "US", "HI", "96813", "+1808", 7, ("Pacific/Honolulu",), 0),
    Place("Atlanta, GA", "US", "GA", "30303", "+1404", 7, ("America/New_York",), 0),
    Place("Phoenix, AZ", "US", "AZ", "85004", "+1602", 7, ("America/Phoenix",), 0),
    Place("Seattle, WA", "US", "WA", "98101", "+1206", 7, ("America/Los_Angeles",), 0),
    Place("Hagåtña, Guam", "GU", None, None, "+1671", 7, ("Pacific/Guam",), 1),
    Place("London, UK", "GB", None, None, "+44207", 7, ("Europe/London",), 2),
)


@dataclass(frozen=True)
class Choice:
    """The places picked for a run, and why, for the demo to print."""

    places: tuple[Place, ...]
    at: dt.datetime
    until: dt.datetime

    def described(self) -> list[str]:
        lines = textwrap.wrap(
            f"Calling hours: it is {self.at:%H:%M} UTC. The queue calls a lead only"
            " inside its state's calling-hour law (or the federal 08:00-21:00) and"
            f" the pool's hours ({POOL_START:%H:%M}-{POOL_END:%H:%M} local, every"
            " day), in every zone the lead may be in. So the CRMs give their leads"
            " numbers and ZIP codes from places where both allow calls for the"
            f" whole run (until {self.until:%H:%M} UTC at least):",
            WIDTH,
            break_on_hyphens=False,
        )
        for place in self.places:
            zone = ZoneInfo(place.zones[0])
            local = self.at.astimezone(zone)
            closes = legal_until(place, self.at)
            closing = (
                f", calls allowed until {closes.astimezone(zone):%H:%M}"
                if closes
                else ""
            )
            lines.append(
                f"  {place.name:<16} {place.prefix:<7} {local:%a %H:%M} local{closing}"
            )
        notes = {
            1: "No US state is inside its hours for the whole run; Guam is a US"
            " territory, held to the federal hours in its own zone.",
            2: "No US state or territory is inside its hours for the whole run;"
            " leads abroad get the US federal hours in their own zone, as"
            " shared/compliance.py does.",
        }
        note = notes.get(self.places[0].tier, "") if self.places else ""
        closing = (
            "The rules are not relaxed. The numbers are random and nothing is"
            " dialled: the agents are simulated."
        )
        lines += textwrap.wrap(
            f"{note} {closing}".strip(),
            WIDTH,
            initial_indent="  ",
            subsequent_indent="  ",
        )
        return lines


def legal_until(place: Place, at: dt.datetime) -> dt.datetime | None:
    """Until when a lead from ``place`` may be called, if it may be now."""
    legal_hours, _, _ = rules_for(place.country, place.region)
    window = callable_window(at, place.zones, POOL_HOURS, legal_hours)
    if window is None:
        return None
    start, end = window
    return end if start <= at else None


def choose(at: dt.datetime, run_seconds: float, limit: int = 4) -> Choice:
    """Up to ``limit`` places callable from ``at`` for ``run_seconds`` and
    more, US states first; if none lasts that long, the one open longest."""
    until = at + dt.timedelta(seconds=run_seconds)
    open_until = {place: legal_until(place, at) for place in PLACES}
    lasting = [
        place for place, end in open_until.items() if end is not None and end >= until
    ]
    if lasting:
        best_tier = min(place.tier for place in lasting)
        picked = tuple(place for place in lasting if place.tier == best_tier)
        return Choice(picked[:limit], at, until)
    open_now = [(end, place) for place, end in open_until.items() if end is not None]
    if not open_now:
        raise RuntimeError(f"no demo place may be called at {at:%H:%M} UTC")
    end, place = max(open_now, key=lambda pair: pair[0])
    return Choice((place,), at, end)
