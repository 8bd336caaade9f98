"""CRM webhooks: signatures, replay window and field mappings end to end."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from shared.clock import ManualClock
from tests.conftest import Server, Stack, unique_email, unique_phone
from tests.intake.conftest import Source, body, make_source
from tests.kafka_reader import events_about


async def leads_of(db: asyncpg.Connection, source: Source) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM leads WHERE source = $1 ORDER BY received_at, external_id",
        source.name,
    )


async def test_signed_generic_form_is_accepted(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    source = await make_source(
        db, intake, clock, options={"fields": {"tel": "phone", "mail": "email"}}
    )
    phone = unique_phone()
    payload = body({"tel": phone, "mail": unique_email(), "budget": "10k"})

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 202, answer.text
    [lead] = await leads_of(db, source)
    assert lead["phone"] == phone
    assert lead["attributes"] == {"budget": "10k"}


@pytest.mark.parametrize(
    "problem", ["tampered", "wrong_secret", "missing", "stale", "future"]
)
async def test_bad_signature_is_401_and_nothing_stored(
    http: httpx.AsyncClient, db: asyncpg.Connection, source: Source, problem: str
) -> None:
    payload = body({"phone": unique_phone()})
    now = source.clock.now().timestamp()
    headers = {
        "tampered": source.signed(body({"phone": unique_phone()})),
        "wrong_secret": Source(
            source.name, "", "whsec_other", source.url, source.clock
        ).signed(payload),
        "missing": {"Content-Type": "application/json"},
        "stale": source.signed(payload, at=now - 301),
        "future": source.signed(payload, at=now + 301),
    }[problem]

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=headers
    )

    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert await leads_of(db, source) == []


async def test_unknown_source_is_401_like_a_bad_signature(
    http: httpx.AsyncClient, source: Source
) -> None:
    payload = body({"phone": unique_phone()})

    answer = await http.post(
        "/v1/webhooks/no-such-source", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 401


async def test_signature_inside_the_window_is_accepted(
    http: httpx.AsyncClient, db: asyncpg.Connection, source: Source
) -> None:
    payload = body({"phone": unique_phone()})
    signed_at = source.clock.now().timestamp()
    source.clock.advance(299)

    answer = await http.post(
        f"/v1/webhooks/{source.name}",
        content=payload,
        headers=source.signed(payload, at=signed_at),
    )

    assert answer.status_code == 202


async def test_hubspot_contact_webhook(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    intake: Server,
    clock: ManualClock,
    stack: Stack,
) -> None:
    source = await make_source(db, intake, clock, mapping="hubspot")
    phone = unique_phone()
    payload = body(
        {
            "vid": 3301,
            "canonical-vid": 3301,
            "properties": {
                "firstname": {"value": "Ada"},
                "lastname": {"value": "Lovelace"},
                "email": {"value": "ADA@Example.org"},
                "phone": {"value": phone},
                "zip": {"value": "94105"},
                "hs_email_optout": {"value": "true"},
                "lifecyclestage": {"value": "lead"},
            },
        }
    )

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 202, answer.text
    [lead] = await leads_of(db, source)
    assert (lead["external_id"], lead["first_name"], lead["last_name"]) == (
        "3301",
        "Ada",
        "Lovelace",
    )
    assert lead["email"] == "ada@example.org"
    assert lead["timezone"] == "America/Los_Angeles"
    assert lead["consent_email"] is False
    assert lead["attributes"] == {"lifecyclestage": "lead"}
    [event] = await events_about(stack.bootstrap, {str(lead["id"])}, count=1)
    assert event.type == "lead.received.v1"


async def test_facebook_lead_ads_webhook_with_two_leads(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    source = await make_source(db, intake, clock, mapping="facebook")

    def lead_object(lead_id: str, name: str) -> dict[str, object]:
        return {
            "id": lead_id,
            "created_time": "2026-12-01T10:00:00+0000",
            "ad_id": "2385",
            "form_id": "7781",
            "campaign_name": "winter-promo",
            "field_data": [
                {"name": "full_name", "values": [name]},
                {"name": "email", "values": [unique_email()]},
                {"name": "phone_number", "values": [unique_phone()]},
                {"name": "when_to_call", "values": ["evenings"]},
            ],
        }

    payload = body(
        {
            "object": "page",
            "entry": [
                {
                    "id": "1044",
                    "time": 1764583200,
                    "changes": [
                        {
                            "field": "leadgen",
                            "value": lead_object("fb-1", "Grace Hopper"),
                        },
                        {
                            "field": "leadgen",
                            "value": lead_object("fb-2", "Alan Turing"),
                        },
                    ],
                }
            ],
        }
    )

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 2
    leads = await leads_of(db, source)
    assert [(lead["external_id"], lead["first_name"]) for lead in leads] == [
        ("fb-1", "Grace"),
        ("fb-2", "Alan"),
    ]
    assert leads[0]["campaign"] == "winter-promo"
    assert leads[0]["attributes"]["when_to_call"] == "evenings"


async def test_bare_leadgen_notification_is_422_naming_field_data(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    source = await make_source(db, intake, clock, mapping="facebook")
    payload = body(
        {
            "object": "page",
            "entry": [
                {
                    "changes": [
                        {
                            "field": "leadgen",
                            "value": {"leadgen_id": "55", "form_id": "7781"},
                        }
                    ]
                }
            ],
        }
    )

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "entry[0].changes[0].value.field_data"
    assert await leads_of(db, source) == []


async def test_webhook_with_an_invalid_lead_stores_nothing(
    http: httpx.AsyncClient, db: asyncpg.Connection, source: Source
) -> None:
    payload = body([{"phone": unique_phone()}, {"phone": "not a phone"}])

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "leads[1].phone"
    assert await leads_of(db, source) == []


async def test_signed_but_malformed_json_is_400(
    http: httpx.AsyncClient, db: asyncpg.Connection, source: Source
) -> None:
    payload = b'{"phone": '

    answer = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=source.signed(payload)
    )

    assert answer.status_code == 400
    assert await leads_of(db, source) == []


async def test_replayed_webhook_is_answered_as_a_retry(
    http: httpx.AsyncClient, db: asyncpg.Connection, source: Source
) -> None:
    """Regression: the same signed request sent again inside the window was
    stored again as a duplicate, with another event."""
    payload = body({"phone": unique_phone()})
    headers = source.signed(payload)

    first = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=headers
    )
    replay = await http.post(
        f"/v1/webhooks/{source.name}", content=payload, headers=headers
    )

    assert replay.json() == first.json()
    assert (
        await db.fetchval(
            "SELECT count(*) FROM duplicates WHERE source = $1", source.name
        )
        == 0
    )
