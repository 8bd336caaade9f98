"""Webhook mappings: generic forms, HubSpot contacts and Facebook Lead Ads.

Payloads follow the shapes HubSpot's and Facebook's documentation show.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.intake.mappings import (
    MAPPINGS,
    MappingProblem,
    facebook,
    generic,
    hubspot,
)
from services.intake.schemas import LeadIn

# -- generic ----------------------------------------------------------------


def test_generic_single_object_is_one_lead() -> None:
    leads = generic({"phone": "+13055550123", "first_name": "Ada"}, {})

    assert leads == [{"phone": "+13055550123", "first_name": "Ada"}]


def test_generic_list_is_one_lead_per_object() -> None:
    leads = generic([{"phone": "+13055550123"}, {"email": "grace@example.org"}], {})

    assert leads == [{"phone": "+13055550123"}, {"email": "grace@example.org"}]


def test_generic_leads_key_holds_the_list() -> None:
    payload = {"leads": [{"phone": "+13055550123"}, {"phone": "+14155550132"}]}

    assert generic(payload, {}) == [
        {"phone": "+13055550123"},
        {"phone": "+14155550132"},
    ]


def test_generic_fields_option_renames_keys_to_lead_fields() -> None:
    options = {"fields": {"phone_number": "phone", "zip": "postal_code"}}

    leads = generic({"phone_number": "(305) 555-0123", "zip": "33101"}, options)

    assert leads == [{"phone": "(305) 555-0123", "postal_code": "33101"}]


def test_generic_unknown_keys_join_the_given_attributes() -> None:
    record = {
        "email": "ada@example.org",
        "loan_amount": 250000,
        "utm_source": "newsletter",
        "attributes": {"score": 7},
    }

    [lead] = generic(record, {})

    assert lead == {
        "email": "ada@example.org",
        "attributes": {"score": 7, "loan_amount": 250000, "utm_source": "newsletter"},
    }


def test_generic_rename_to_an_unknown_field_keeps_the_original_key() -> None:
    [lead] = generic(
        {"email": "a@example.org", "zip": "33101"}, {"fields": {"zip": "z"}}
    )

    assert lead == {"email": "a@example.org", "attributes": {"zip": "33101"}}


def test_generic_source_is_left_to_the_credentials() -> None:
    """The source comes from the API key or secret, never from the body."""
    [lead] = generic({"email": "a@example.org", "source": "someone-else"}, {})

    assert lead == {"email": "a@example.org"}


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ([], "body"),
        ("phone=3055550123", "body"),
        ({"leads": []}, "leads"),
    ],
)
def test_generic_payload_without_records_is_refused(payload: Any, path: str) -> None:
    with pytest.raises(MappingProblem) as caught:
        generic(payload, {})

    assert caught.value.path == path
    assert caught.value.message == "expected an object or a non-empty list"


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ([{"phone": "+13055550123"}, "+14155550132"], "[1]"),
        ({"leads": [{"phone": "+13055550123"}, 7]}, "leads[1]"),
    ],
)
def test_generic_record_that_is_no_object_is_refused_by_path(
    payload: Any, path: str
) -> None:
    with pytest.raises(MappingProblem) as caught:
        generic(payload, {})

    assert caught.value.path == path
    assert caught.value.message == "expected an object"


@pytest.mark.parametrize(
    "attributes", ["vip", 5, ["ab", "cd"]], ids=["text", "number", "list"]
)
def test_generic_attributes_that_are_no_object_are_refused(attributes: Any) -> None:
    """Regression: dict() on a string or number raised a bare error (a 500)
    and a list of pairs was silently read as an object."""
    with pytest.raises(MappingProblem):
        generic({"phone": "+13055550123", "attributes": attributes}, {})


# -- hubspot ----------------------------------------------------------------

#: A contact as HubSpot's legacy contacts API and workflow webhooks send it.
HUBSPOT_LEGACY_CONTACT: dict[str, Any] = {
    "vid": 3234574,
    "canonical-vid": 3234574,
    "merged-vids": [],
    "portal-id": 62515,
    "is-contact": True,
    "profile-token": "AO_T-mPMwvuZG_QTNH28c_MbhSyNRuuTNw9I7zJAaMFjOqL9HKlH8ubQ",
    "properties": {
        "firstname": {"value": "Ada"},
        "lastname": {"value": "Lovelace"},
        "email": {"value": "Ada@Example.org"},
        "phone": {"value": "(305) 555-0123"},
        "zip": {"value": "33101"},
        "company": {"value": "Analytical Engines"},
        "lifecyclestage": {"value": "lead"},
        "hs_analytics_source": {"value": "PAID_SEARCH"},
        "hs_analytics_source_data_1": {"value": "spring-refinance"},
        "lastmodifieddate": {"value": "1484026585538"},
    },
    "form-submissions": [],
    "identity-profiles": [
        {
            "vid": 3234574,
            "saved-at-timestamp": 1484026585613,
            "identities": [{"type": "EMAIL", "value": "Ada@Example.org"}],
        }
    ],
}

#: The same contact as the CRM v3 objects API returns it.
HUBSPOT_V3_CONTACT: dict[str, Any] = {
    "id": "3234574",
    "properties": {
        "createdate": "2026-01-05T15:00:00.000Z",
        "email": "Ada@Example.org",
        "firstname": "Ada",
        "lastname": "Lovelace",
        "phone": "(305) 555-0123",
        "zip": "33101",
        "company": "Analytical Engines",
        "lifecyclestage": "lead",
        "hs_analytics_source": "PAID_SEARCH",
        "hs_analytics_source_data_1": "spring-refinance",
        "hs_object_id": "3234574",
        "lastmodifieddate": "2026-01-05T15:02:11.000Z",
    },
    "createdAt": "2026-01-05T15:00:00.000Z",
    "updatedAt": "2026-01-05T15:02:11.000Z",
    "archived": False,
}

HUBSPOT_LEAD = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "Ada@Example.org",
    "phone": "(305) 555-0123",
    "postal_code": "33101",
    "external_id": "3234574",
    "campaign": "spring-refinance",
    "attributes": {
        "company": "Analytical Engines",
        "lifecyclestage": "lead",
        "hs_analytics_source": "PAID_SEARCH",
    },
}


def with_properties(contact: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``contact`` with properties changed (``None`` removes one)."""
    changed = copy.deepcopy(contact)
    legacy = "vid" in contact
    for name, value in changes.items():
        if value is None:
            changed["properties"].pop(name, None)
        else:
            changed["properties"][name] = {"value": value} if legacy else value
    return changed


@pytest.mark.parametrize(
    "contact", [HUBSPOT_LEGACY_CONTACT, HUBSPOT_V3_CONTACT], ids=["legacy", "v3"]
)
def test_hubspot_contact_becomes_a_lead(contact: dict[str, Any]) -> None:
    assert hubspot(contact, {}) == [HUBSPOT_LEAD]


def test_hubspot_lead_passes_lead_validation() -> None:
    [mapped] = hubspot(HUBSPOT_LEGACY_CONTACT, {})

    accepted = LeadIn.model_validate(mapped, context={"region": "US"})

    assert accepted.phone == "+13055550123"
    assert accepted.email == "ada@example.org"


def test_hubspot_list_and_v3_results_page_are_one_lead_per_contact() -> None:
    page = {
        "results": [HUBSPOT_V3_CONTACT, HUBSPOT_V3_CONTACT],
        "paging": {"next": {"after": "3234575"}},
    }

    assert hubspot(page, {}) == [HUBSPOT_LEAD, HUBSPOT_LEAD]
    assert hubspot([HUBSPOT_LEGACY_CONTACT], {}) == [HUBSPOT_LEAD]


@pytest.mark.parametrize(
    "contact", [HUBSPOT_LEGACY_CONTACT, HUBSPOT_V3_CONTACT], ids=["legacy", "v3"]
)
@pytest.mark.parametrize("phone", [None, ""], ids=["absent", "empty"])
def test_hubspot_mobile_phone_stands_in_for_a_missing_phone(
    contact: dict[str, Any], phone: str | None
) -> None:
    changed = with_properties(contact, phone=phone, mobilephone="+1 415 555 0132")

    [lead] = hubspot(changed, {})

    assert lead["phone"] == "+1 415 555 0132"


def test_hubspot_phone_wins_over_mobile_phone() -> None:
    changed = with_properties(HUBSPOT_V3_CONTACT, mobilephone="+1 415 555 0132")

    [lead] = hubspot(changed, {})

    assert lead["phone"] == "(305) 555-0123"


@pytest.mark.parametrize(
    "contact", [HUBSPOT_LEGACY_CONTACT, HUBSPOT_V3_CONTACT], ids=["legacy", "v3"]
)
def test_hubspot_email_opt_out_turns_email_consent_off(contact: dict[str, Any]) -> None:
    [lead] = hubspot(with_properties(contact, hs_email_optout="true"), {})

    assert lead["consent"] == {"call": True, "sms": False, "email": False}


def test_hubspot_email_opt_out_false_leaves_consent_alone() -> None:
    [lead] = hubspot(with_properties(HUBSPOT_V3_CONTACT, hs_email_optout="false"), {})

    assert "consent" not in lead


def test_hubspot_empty_properties_are_left_out() -> None:
    contact = {"id": "51", "properties": {"email": "a@example.org", "firstname": ""}}

    assert hubspot(contact, {}) == [{"email": "a@example.org", "external_id": "51"}]


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"vid": 3234574}, "body.properties"),
        ({"id": "1", "properties": ["email"]}, "body.properties"),
        # A webhook subscription event carries ids, not the contact.
        (
            [
                {
                    "eventId": 100,
                    "subscriptionId": 2881,
                    "portalId": 62515,
                    "occurredAt": 1767625200000,
                    "subscriptionType": "contact.creation",
                    "attemptNumber": 0,
                    "objectId": 3234574,
                    "changeSource": "CRM",
                }
            ],
            "[0].properties",
        ),
    ],
    ids=["no properties", "properties not an object", "subscription event"],
)
def test_hubspot_record_without_properties_is_refused(payload: Any, path: str) -> None:
    with pytest.raises(MappingProblem) as caught:
        hubspot(payload, {})

    assert caught.value.path == path


# -- facebook ---------------------------------------------------------------

#: A lead as the Graph API returns it for GET /<LEAD_ID>.
FACEBOOK_LEAD: dict[str, Any] = {
    "created_time": "2026-01-05T15:00:00+0000",
    "id": "1234567890123456",
    "ad_id": "23851234567890123",
    "adset_id": "23851234567890122",
    "campaign_name": "Spring refinance",
    "form_id": "987654321098765",
    "platform": "fb",
    "is_organic": False,
    "field_data": [
        {"name": "full_name", "values": ["Ada King Lovelace"]},
        {"name": "email", "values": ["ada@example.org"]},
        {"name": "phone_number", "values": ["+13055550123"]},
        {"name": "zip_code", "values": ["33101"]},
        {"name": "when_are_you_looking_to_buy?", "values": ["within_a_month"]},
    ],
}

FACEBOOK_MAPPED = {
    "first_name": "Ada",
    "last_name": "King Lovelace",
    "email": "ada@example.org",
    "phone": "+13055550123",
    "postal_code": "33101",
    "external_id": "1234567890123456",
    "campaign": "Spring refinance",
    "attributes": {
        "form_id": "987654321098765",
        "ad_id": "23851234567890123",
        "adset_id": "23851234567890122",
        "created_time": "2026-01-05T15:00:00+0000",
        "platform": "fb",
        "when_are_you_looking_to_buy?": "within_a_month",
    },
}


def page_notification(*values: dict[str, Any]) -> dict[str, Any]:
    """The envelope of a Page webhook, one ``leadgen`` change per value."""
    return {
        "object": "page",
        "entry": [
            {
                "id": "153125381133",
                "time": 1767625200,
                "changes": [{"field": "leadgen", "value": value} for value in values],
            }
        ],
    }


def test_facebook_lead_object_becomes_a_lead() -> None:
    assert facebook(FACEBOOK_LEAD, {}) == [FACEBOOK_MAPPED]


def test_facebook_lead_passes_lead_validation() -> None:
    [mapped] = facebook(FACEBOOK_LEAD, {})

    accepted = LeadIn.model_validate(mapped, context={"region": "US"})

    assert (accepted.first_name, accepted.last_name) == ("Ada", "King Lovelace")
    assert accepted.located("US").timezone == "America/New_York"


def test_facebook_single_word_full_name_is_a_first_name() -> None:
    lead_object = {"id": "1", "field_data": [{"name": "full_name", "values": ["Ada"]}]}

    [lead] = facebook(lead_object, {})

    assert lead["first_name"] == "Ada"
    assert "last_name" not in lead


def test_facebook_first_and_last_name_questions_win_over_full_name() -> None:
    lead_object = {
        "id": "1",
        "field_data": [
            {"name": "full_name", "values": ["Augusta Ada King"]},
            {"name": "first_name", "values": ["Ada"]},
            {"name": "last_name", "values": ["Lovelace"]},
        ],
    }

    [lead] = facebook(lead_object, {})

    assert (lead["first_name"], lead["last_name"]) == ("Ada", "Lovelace")


def test_facebook_campaign_id_stands_in_for_a_missing_campaign_name() -> None:
    lead_object = {"id": "1", "campaign_id": "23851234567890121", "field_data": []}

    [lead] = facebook(lead_object, {})

    assert lead["campaign"] == "23851234567890121"


def test_facebook_unanswered_question_is_kept_as_none() -> None:
    lead_object = {"id": "1", "field_data": [{"name": "budget", "values": []}]}

    [lead] = facebook(lead_object, {})

    assert lead["attributes"] == {"budget": None}


def test_facebook_graph_list_is_one_lead_per_object() -> None:
    page = {"data": [FACEBOOK_LEAD, FACEBOOK_LEAD], "paging": {"cursors": {}}}

    assert facebook(page, {}) == [FACEBOOK_MAPPED, FACEBOOK_MAPPED]


def test_facebook_notification_carrying_lead_objects_is_read() -> None:
    second = {**FACEBOOK_LEAD, "id": "1234567890123457"}

    leads = facebook(page_notification(FACEBOOK_LEAD, second), {})

    assert [lead["external_id"] for lead in leads] == [
        "1234567890123456",
        "1234567890123457",
    ]
    assert leads[0] == FACEBOOK_MAPPED


def test_facebook_bare_leadgen_notification_asks_for_the_lead_object() -> None:
    """A real notification holds only ids: the lead must be fetched first."""
    bare = {
        "ad_id": "23851234567890123",
        "form_id": "987654321098765",
        "leadgen_id": "1234567890123456",
        "created_time": 1767625200,
        "page_id": "153125381133",
        "adgroup_id": "23851234567890123",
    }

    with pytest.raises(MappingProblem, match="fetch the lead") as caught:
        facebook(page_notification(bare), {})

    assert caught.value.path == "entry[0].changes[0].value.field_data"
    assert caught.value.path.endswith("field_data")


def test_facebook_field_without_a_name_is_refused_by_path() -> None:
    lead_object = {"id": "1", "field_data": [{"name": "email"}, {"values": ["x"]}]}

    with pytest.raises(MappingProblem) as caught:
        facebook(lead_object, {})

    assert caught.value.path == "body.field_data[1]"


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"object": "page", "entry": []}, "entry"),
        ({"object": "page", "entry": [{"id": "1"}]}, "entry[0].changes"),
        (
            {"object": "page", "entry": [{"changes": [{"field": "leadgen"}]}]},
            "entry[0].changes[0].value",
        ),
        ([FACEBOOK_LEAD, "1234567890123457"], "[1]"),
    ],
    ids=["no entries", "no changes", "change without value", "list with an id"],
)
def test_facebook_notification_without_lead_is_refused_by_path(
    payload: Any, path: str
) -> None:
    with pytest.raises(MappingProblem) as caught:
        facebook(payload, {})

    assert caught.value.path == path


def test_facebook_answer_values_that_are_no_list_are_refused() -> None:
    """Regression: a string in ``values`` was cut to its first character."""
    lead_object = {
        "id": "1",
        "field_data": [{"name": "email", "values": "ada@example.org"}],
    }

    with pytest.raises(MappingProblem):
        facebook(lead_object, {})


# -- registry ---------------------------------------------------------------


def test_every_shipped_mapping_is_registered_by_name() -> None:
    shipped = {"generic": generic, "hubspot": hubspot, "facebook": facebook}

    assert shipped == MAPPINGS


def test_mapping_problem_message_starts_with_the_path() -> None:
    problem = MappingProblem("entry[0].changes", "expected a list")

    assert str(problem) == "entry[0].changes: expected a list"
