"""Turning what a client typed into the forms Redial stores.

Phones become E.164 (``phonenumbers``), e-mail addresses are checked and
normalised (``email-validator``), and a lead's time zone comes from its postal
code (US ZIP table from ``zipcodes``) or else from its phone number's prefix.
Each function raises :class:`FieldProblem` naming what is wrong.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass

import email_validator
import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as phone_timezones


class FieldProblem(ValueError):
    """One field's value cannot be used; the message says why."""


@dataclass(frozen=True)
class Phone:
    e164: str
    country: str | None
    timezones: tuple[str, ...]


@dataclass(frozen=True)
class Place:
    """What a postal code tells: its region (state) and time zone."""

    region: str | None
    timezone: str | None


_UNKNOWN_ZONE = "Etc/Unknown"
_US_ZIP = re.compile(r"^(\d{5})(?:-?\d{4})?$")


def phone(raw: str, default_region: str) -> Phone:
    """Parse and validate a phone number; national numbers use ``default_region``.

    Validity, country and zones are computed from one classification of the
    number: the library's convenience functions would each classify it again,
    and classifying is most of the cost of taking in a lead.
    """
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise FieldProblem(f"not a phone number: {error}") from error
    kind = phonenumbers.number_type(number)
    # number_type() is UNKNOWN exactly when no pattern of the number's region
    # matches, which is what is_valid_number() tests.
    if kind == PhoneNumberType.UNKNOWN:
        raise FieldProblem(
            f"not a valid phone number (numbers without +country are read as"
            f" {default_region})"
        )
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=_country_of(number),
        timezones=_phone_zones(number, kind),
    )


def _country_of(number: phonenumbers.PhoneNumber) -> str | None:
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(number.country_code or 0, ())
    if len(regions) == 1:
        return None if regions[0] == "001" else regions[0]
    # Shared calling codes (+1, +7, +44…): the number's digits decide.
    return phonenumbers.region_code_for_number(number)


def _phone_zones(number: phonenumbers.PhoneNumber, kind: int) -> tuple[str, ...]:
    # The same decision time_zones_for_number() makes, without classifying the
    # number again: geographic numbers by prefix, others by country.
    if phonenumbers.is_number_type_geographical(kind, number.country_code or 0):
        zones = phone_timezones.time_zones_for_geographical_number(number)
    else:
        zones = phone_timezones.time_zones_for_number(number)
    return tuple(zone for zone in zones if zone != _UNKNOWN_ZONE)


def email(raw: str) -> str:
    """A syntactically valid address, lower-cased for matching duplicates."""
    try:
        checked = email_validator.validate_email(raw, check_deliverability=False)
    except email_validator.EmailNotValidError as error:
        raise FieldProblem(str(error)) from error
    return checked.normalized.lower()


def timezone(raw: str) -> str:
    """An IANA zone name exactly as the tz database spells it."""
    if raw not in _known_zones():
        raise FieldProblem(f"unknown time zone {raw!r} (use an IANA name)")
    return raw


@functools.cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def postal_code(raw: str, country: str | None) -> str:
    """Trimmed and upper-cased; US codes must look like a ZIP or ZIP+4."""
    value = " ".join(raw.split()).upper()
    if not value:
        raise FieldProblem("postal code is empty")
    if country == "US":
        match = _US_ZIP.match(value)
        if match is None:
            raise FieldProblem("not a US ZIP code (expected 12345 or 12345-6789)")
        return match[1]
    return value


def place_of(postal: str, country: str | None) -> Place:
    """Region and zone for a postal code, where the ZIP table knows it."""
    if country not in (None, "US"):
        return Place(region=None, timezone=None)
    known = _zip_table().get(postal[:5])
    return known or Place(region=None, timezone=None)


@functools.cache
def _zip_table() -> dict[str, Place]:
    import zipcodes  # loads ~43k records; once, on first use

    return {
        record["zip_code"]: Place(
            region=record.get("state") or None,
            timezone=record.get("timezone") or None,
        )
        for record in zipcodes.list_all()
    }


def warm_up() -> None:
    """Load the lookup tables now rather than on the first request."""
    _zip_table()
    _known_zones()
    phone("+12025550143", "US")
    email("warm@example.org")


#: US states by the name phonenumbers' geocoder gives, for leads with no ZIP.
US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR",
    "California": "CA", "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE",
    "District of Columbia": "DC", "Florida": "FL", "Georgia": "GA", "Hawaii": "HI",
    "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD",
    "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN",
    "Mississippi": "MS", "Missouri": "MO", "Montana": "MT", "Nebraska": "NE",
    "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ",
    "New Mexico": "NM", "New York": "NY", "North Carolina": "NC",
    "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR",
    "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT",
    "Vermont": "VT", "Virginia": "VA", "Washington": "WA",
    "Washington D.C.": "DC", "West Virginia": "WV", "Wisconsin": "WI",
    "Wyoming": "WY", "Puerto Rico": "PR",
}  # fmt: skip


def region_of_phone(e164: str) -> str | None:
    """The US state a number's area code belongs to, where it names one.

    An area code never spans two states, so the answer is cached per area
    code: the geocoder is slow and most leads share a few hundred codes.
    """
    if not e164.startswith("+1") or len(e164) != 12:
        return None
    area_code = e164[2:5]
    if area_code not in _state_by_area_code:
        _state_by_area_code[area_code] = _state_of(e164)
    return _state_by_area_code[area_code]


#: Filled as numbers arrive; at most the ~400 US area codes in use.
_state_by_area_code: dict[str, str | None] = {}


def _state_of(e164: str) -> str | None:
    from phonenumbers import geocoder

    description = geocoder.description_for_number(phonenumbers.parse(e164), "en")
    # The geocoder answers "Florida" or "Miami, FL".
    if ", " in description:
        code = description.rsplit(", ", 1)[1]
        return code if code in US_STATES.values() else None
    return US_STATES.get(description)
