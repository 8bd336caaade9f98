"""Turning what a client typed into stored forms, and the LeadIn body built on it.

Pure logic: phonenumbers, email-validator and the ZIP table, no database.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import timezone as phone_timezones
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from services.intake import normalize
from services.intake.normalize import FieldProblem, Place
from services.intake.schemas import LeadIn

US = {"region": "US"}


def phonenumbers_zones(e164: str) -> tuple[str, ...]:
    """phonenumbers' own answer for a number, without its "unknown" placeholder."""
    number = phonenumbers.parse(e164, None)
    found = phone_timezones.time_zones_for_number(number)
    return tuple(zone for zone in found if zone != "Etc/Unknown")


def lead(data: dict[str, object], context: dict[str, object] | None = None) -> LeadIn:
    return LeadIn.model_validate(data, context=dict(context or US))


def lead_errors(data: dict[str, object]) -> list[ErrorDetails]:
    with pytest.raises(ValidationError) as caught:
        lead(data)
    return caught.value.errors(include_url=False)


# -- phone ------------------------------------------------------------------


def test_national_number_is_read_in_default_region() -> None:
    parsed = normalize.phone("(305) 555-0123", "US")

    assert parsed.e164 == "+13055550123"
    assert parsed.country == "US"


def test_national_number_of_another_default_region() -> None:
    parsed = normalize.phone("020 7946 0958", "GB")

    assert parsed.e164 == "+442079460958"
    assert parsed.country == "GB"


def test_international_number_ignores_default_region() -> None:
    parsed = normalize.phone("+44 20 7946 0958", "US")

    assert parsed.e164 == "+442079460958"
    assert parsed.country == "GB"


@pytest.mark.parametrize(
    "raw", ["305.555.0123", "+1 (305) 555-0123", "1-305-555-0123", "3055550123"]
)
def test_punctuation_and_trunk_prefix_do_not_change_the_number(raw: str) -> None:
    assert normalize.phone(raw, "US").e164 == "+13055550123"


@pytest.mark.parametrize("raw", ["call me", "", "+"])
def test_text_that_is_no_phone_number_is_refused(raw: str) -> None:
    with pytest.raises(FieldProblem, match=r"^not a phone number: "):
        normalize.phone(raw, "US")


def test_too_short_number_is_refused_naming_the_default_region() -> None:
    with pytest.raises(FieldProblem, match=r"not a valid phone number .* read as US"):
        normalize.phone("305 555 01", "US")


def test_national_number_of_another_country_is_invalid_in_default_region() -> None:
    """A UK number typed without +44 is not silently turned into a US one."""
    with pytest.raises(FieldProblem, match="read as US"):
        normalize.phone("020 7946 0958", "US")


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("+1 212 555 0143", "America/New_York"),
        ("+1 415 555 0132", "America/Los_Angeles"),
        ("+1 808 555 0100", "Pacific/Honolulu"),
        ("+44 20 7946 0958", "Europe/London"),
        ("+49 30 901820", "Europe/Berlin"),
    ],
)
def test_phone_zones_are_phonenumbers_own_answer(raw: str, zone: str) -> None:
    parsed = normalize.phone(raw, "US")

    assert parsed.timezones == phonenumbers_zones(parsed.e164)
    assert parsed.timezones == (zone,)


def test_numbers_sharing_an_area_code_share_their_zones() -> None:
    first = normalize.phone("+1 212 555 0143", "US")
    second = normalize.phone("+1 212 555 0199", "US")

    assert first.timezones == second.timezones == ("America/New_York",)


@pytest.mark.parametrize(
    ("first", "then"),
    [
        # Bonaire: fixed lines have a zone of their own; mobiles are answered
        # at country level (Curaçao and Bonaire), with the same prefix 5997.
        (("+599 718 1234", "US"), ("+599 786 7238", "US")),
        # A Canadian 310-xxxx service number (all NANP zones) and an LA line
        # both start +1310323, the 7 digits the cache keeps.
        (("310-3234", "CA"), ("+1 310 323 1204", "US")),
    ],
    ids=["bonaire-mobile-after-fixed-line", "los-angeles-after-canadian-310"],
)
def test_zones_of_a_number_do_not_depend_on_numbers_parsed_before(
    first: tuple[str, str], then: tuple[str, str]
) -> None:
    """Regression: zones were cached by a number's leading digits, but the
    library also looks at the number's type, so the first number parsed
    decided the zones of later ones sharing those digits."""
    normalize.phone(*first)
    parsed = normalize.phone(*then)

    assert parsed.timezones == phonenumbers_zones(parsed.e164)


# -- email, time zone --------------------------------------------------------


def test_email_is_lower_cased_for_matching_duplicates() -> None:
    assert normalize.email("Ada.Lovelace@Example.ORG") == "ada.lovelace@example.org"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("ada.example.org", "@-sign"),
        ("", "@-sign"),
        ("ada@localhost", "period"),
        ("ada..lovelace@example.org", "two periods"),
        ("ada lovelace@example.org", "invalid characters"),
    ],
)
def test_email_with_bad_syntax_is_refused(raw: str, reason: str) -> None:
    with pytest.raises(FieldProblem, match=reason):
        normalize.email(raw)


def test_iana_zone_is_kept_as_given() -> None:
    assert normalize.timezone("America/New_York") == "America/New_York"


@pytest.mark.parametrize("raw", ["Mars/Olympus", "america/new_york", "EST5EDT "])
def test_zone_not_spelled_as_in_the_tz_database_is_refused(raw: str) -> None:
    with pytest.raises(FieldProblem, match=r"unknown time zone .* IANA"):
        normalize.timezone(raw)


# -- postal code, place ------------------------------------------------------


@pytest.mark.parametrize("raw", ["33101", " 33101 ", "33101-1234", "331011234"])
def test_us_zip_and_zip_plus_four_are_reduced_to_five_digits(raw: str) -> None:
    assert normalize.postal_code(raw, "US") == "33101"


@pytest.mark.parametrize("raw", ["3310", "ABCDE", "33101-12", "33101 1234", "SW1A"])
def test_code_that_is_no_us_zip_is_refused(raw: str) -> None:
    with pytest.raises(FieldProblem, match="not a US ZIP code"):
        normalize.postal_code(raw, "US")


@pytest.mark.parametrize("country", ["US", "GB", None])
def test_blank_postal_code_is_refused(country: str | None) -> None:
    with pytest.raises(FieldProblem, match="empty"):
        normalize.postal_code("   ", country)


@pytest.mark.parametrize(
    ("raw", "country", "kept"),
    [
        ("sw1a 1aa", "GB", "SW1A 1AA"),
        ("K1A   0B1", "CA", "K1A 0B1"),
        ("10115", "DE", "10115"),
        ("1234-567", None, "1234-567"),
    ],
)
def test_non_us_postal_code_is_kept_trimmed_and_upper_cased(
    raw: str, country: str | None, kept: str
) -> None:
    assert normalize.postal_code(raw, country) == kept


@pytest.mark.parametrize(
    ("zip_code", "place"),
    [
        ("33101", Place(region="FL", timezone="America/New_York")),
        ("94105", Place(region="CA", timezone="America/Los_Angeles")),
        ("96813", Place(region="HI", timezone="Pacific/Honolulu")),
        ("99501", Place(region="AK", timezone="America/Anchorage")),
    ],
)
def test_known_zip_gives_state_and_zone(zip_code: str, place: Place) -> None:
    assert normalize.place_of(zip_code, "US") == place


def test_zip_without_country_is_looked_up_as_us() -> None:
    assert normalize.place_of("33101", None).region == "FL"


def test_zip_unknown_to_the_table_gives_no_place() -> None:
    assert normalize.place_of("00000", "US") == Place(region=None, timezone=None)


def test_postal_code_outside_the_us_is_not_looked_up() -> None:
    """A German 33101 (Paderborn) must not be placed in Miami."""
    assert normalize.place_of("33101", "DE") == Place(region=None, timezone=None)


@pytest.mark.parametrize(
    ("e164", "region"),
    [
        ("+13055550123", "FL"),
        ("+14155550132", "CA"),
        ("+12025550143", "DC"),
        ("+14165550123", None),  # Toronto: a province, not a US state
        ("+442079460958", None),
    ],
)
def test_region_of_phone_is_the_us_state_of_its_area_code(
    e164: str, region: str | None
) -> None:
    assert normalize.region_of_phone(e164) == region


# -- LeadIn ------------------------------------------------------------------


def test_lead_stores_e164_phone_and_lower_cased_email() -> None:
    accepted = lead({"phone": "(305) 555-0123", "email": "Ada@Example.ORG"})

    assert accepted.phone == "+13055550123"
    assert accepted.email == "ada@example.org"


@pytest.mark.parametrize(
    "data",
    [{}, {"first_name": "Ada"}, {"phone": "   ", "email": ""}],
    ids=["empty", "name only", "blank contact"],
)
def test_lead_without_phone_or_email_is_refused(data: dict[str, object]) -> None:
    [error] = lead_errors(data)

    assert error["type"] == "missing_contact"
    assert error["msg"] == "a lead needs a phone or an email"


def test_email_alone_makes_a_lead() -> None:
    assert lead({"email": "ada@example.org"}).phone is None


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"phone": "+13055550123", "nickname": "Ada"}, ("nickname",)),
        ({"phone": "+13055550123", "consent": {"fax": True}}, ("consent", "fax")),
    ],
)
def test_unknown_field_is_refused(data: dict[str, object], loc: tuple[str]) -> None:
    [error] = lead_errors(data)

    assert error["type"] == "extra_forbidden"
    assert error["loc"] == loc


def test_consent_defaults_to_calls_only() -> None:
    consent = lead({"phone": "+13055550123"}).consent_flags()

    assert (consent.call, consent.sms, consent.email) == (True, False, False)


@pytest.mark.parametrize("value", ["yes", "true", 1, "1"])
def test_consent_must_be_a_real_boolean(value: object) -> None:
    """A form's "yes" or 1 is not proof the lead agreed to SMS marketing."""
    [error] = lead_errors({"phone": "+13055550123", "consent": {"sms": value}})

    assert error["type"] == "bool_type"
    assert error["loc"] == ("consent", "sms")


def test_consent_given_as_booleans_is_kept() -> None:
    consent = lead({"phone": "+13055550123", "consent": {"sms": True, "email": True}})

    assert (consent.consent.sms, consent.consent.email) == (True, True)


def test_bad_phone_error_names_the_field_without_value_error_prefix() -> None:
    with pytest.raises(ValidationError) as caught:
        lead({"phone": "305 555 01"})
    [error] = caught.value.errors(include_url=False)

    assert error["loc"] == ("phone",)
    assert error["type"] == "invalid_phone"
    assert error["msg"] == (
        "not a valid phone number (numbers without +country are read as US)"
    )
    assert "Value error" not in str(caught.value)


@pytest.mark.parametrize(
    ("data", "loc", "kind"),
    [
        ({"email": "ada.example.org"}, ("email",), "invalid_email"),
        (
            {"email": "a@example.org", "timezone": "Mars/Base"},
            ("timezone",),
            "invalid_timezone",
        ),
    ],
)
def test_bad_email_and_zone_are_reported_on_their_field(
    data: dict[str, object], loc: tuple[str, ...], kind: str
) -> None:
    [error] = lead_errors(data)

    assert error["loc"] == loc
    assert error["type"] == kind


def test_default_region_comes_from_the_validation_context() -> None:
    accepted = lead({"phone": "020 7946 0958"}, context={"region": "GB"})

    assert accepted.phone == "+442079460958"


def test_zip_plus_four_of_a_lead_is_stored_as_five_digits() -> None:
    assert lead(
        {"email": "a@example.org", "postal_code": "94105-1234"}
    ).postal_code == ("94105")


def test_bad_us_zip_of_a_lead_is_refused() -> None:
    [error] = lead_errors({"email": "a@example.org", "postal_code": "9410"})

    assert error["type"] == "invalid_postal_code"
    assert error["msg"] == ("not a US ZIP code (expected 12345 or 12345-6789)")


def test_postal_code_is_checked_for_the_country_of_the_phone() -> None:
    """A UK lead's postcode is not held to the US ZIP format of the source."""
    accepted = lead({"phone": "+44 20 7946 0958", "postal_code": "sw1a 1aa"})
    located = accepted.located("US")

    assert accepted.postal_code == "SW1A 1AA"
    assert (located.country, located.region) == ("GB", None)
    assert located.timezones == ["Europe/London"]


def test_located_prefers_the_zone_the_client_gave() -> None:
    located = lead(
        {
            "phone": "(415) 555-0132",
            "postal_code": "33101",
            "timezone": "America/Chicago",
        }
    ).located("US")

    assert located.timezone == "America/Chicago"
    assert located.timezones == ["America/Chicago"]


def test_located_uses_the_zip_zone_before_the_phone_zones() -> None:
    """Someone with a California mobile who lives in Miami is called on NY time,
    but the phone's zone stays a candidate."""
    located = lead({"phone": "(415) 555-0132", "postal_code": "33101"}).located("US")

    assert located.region == "FL"
    assert located.timezone == "America/New_York"
    assert located.timezones == ["America/New_York", "America/Los_Angeles"]


def test_located_falls_back_to_the_phone() -> None:
    located = lead({"phone": "(415) 555-0132"}).located("US")

    assert (located.country, located.region) == ("US", "CA")
    assert located.timezone == "America/Los_Angeles"
    assert located.timezones == ["America/Los_Angeles"]


def test_located_from_zip_alone() -> None:
    located = lead({"email": "a@example.org", "postal_code": "94105"}).located("US")

    assert (located.country, located.region) == ("US", "CA")
    assert located.timezones == ["America/Los_Angeles"]


def test_lead_with_only_an_email_has_no_zone() -> None:
    located = lead({"email": "a@example.org"}).located("US")

    assert (located.region, located.timezone, located.timezones) == (None, None, [])


def test_lead_validates_without_a_context() -> None:
    """Without a context the region defaults to US and the phone is re-parsed."""
    located = LeadIn.model_validate({"phone": "(305) 555-0123"}).located("US")

    assert located.timezones == ["America/New_York"]


def test_phone_agrees_with_the_library_on_random_numbers() -> None:
    """normalize.phone classifies a number once instead of calling the
    library's convenience functions; on thousands of numbers near each
    region's example number, it must give the library's own answers."""
    generator = random.Random(20261203)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    compared = 0
    for _ in range(4000):
        example = phonenumbers.example_number(generator.choice(regions))
        if example is None:
            continue
        digits = list(str(example.national_number))
        for _ in range(generator.randint(1, 3)):
            digits[generator.randrange(len(digits))] = str(generator.randint(0, 9))
        raw = f"+{example.country_code}{''.join(digits)}"
        number = phonenumbers.parse(raw, None)
        try:
            parsed = normalize.phone(raw, "US")
        except normalize.FieldProblem:
            assert not phonenumbers.is_valid_number(number), raw
            continue
        assert phonenumbers.is_valid_number(number), raw
        assert parsed.timezones == phonenumbers_zones(parsed.e164), raw
        assert parsed.country == phonenumbers.region_code_for_number(number), raw
        compared += 1
    assert compared > 1000
