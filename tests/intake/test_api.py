"""Intake over real HTTP, PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.intake.metrics import LEADS_DUPLICATE, LEADS_RECEIVED, LEADS_REJECTED
from shared.clock import ManualClock
from tests.conftest import Server, Stack, unique_email, unique_phone
from tests.intake.conftest import Source, body, days, make_source, stored_lead
from tests.kafka_reader import events_about


async def count_leads(db: asyncpg.Connection, source: Source) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM leads WHERE source = $1", source.name
    )


async def test_posted_lead_is_stored_and_published(
    http: httpx.AsyncClient, source: Source, stack: Stack
) -> None:
    phone = unique_phone()
    answer = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"phone": phone[2:], "first_name": "Ada", "postal_code": "33101"},
    )

    assert answer.status_code == 202, answer.text
    lead_id = answer.json()["lead_id"]
    assert answer.json()["status"] == "accepted"
    stored = await stored_lead(http, source, lead_id)
    assert stored["phone"] == phone
    assert stored["timezone"] == "America/New_York"
    assert stored["region"] == "FL"
    assert stored["consent"] == {"call": True, "sms": False, "email": False}
    [event] = await events_about(stack.bootstrap, {lead_id}, count=1)
    assert event.type == "lead.received.v1"
    assert event.subject == lead_id
    assert str(event.data.lead_id) == lead_id  # type: ignore[attr-defined]


async def test_batch_is_accepted_whole(
    http: httpx.AsyncClient, source: Source, stack: Stack
) -> None:
    leads = [{"phone": unique_phone()} for _ in range(25)]

    answer = await http.post(
        "/v1/leads/batch", headers=source.auth, json={"leads": leads}
    )

    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 25
    ids = {result["lead_id"] for result in answer.json()["results"]}
    assert len(ids) == 25
    events = await events_about(stack.bootstrap, ids, count=25)
    assert {event.subject for event in events} == ids


@pytest.mark.parametrize(
    ("lead", "field"),
    [
        ({"phone": "12"}, "phone"),
        ({"phone": "+1 999 555 0100"}, "phone"),
        ({"email": "not-an-address"}, "email"),
        ({"email": "ada@"}, "email"),
        ({"phone": "+13055550123", "timezone": "Mars/Olympus"}, "timezone"),
        ({"phone": "+13055550123", "postal_code": "ABCDE"}, "postal_code"),
        ({"first_name": "Ada"}, "phone"),
        ({"phone": "+13055550123", "consent": {"call": "yes"}}, "consent.call"),
        ({"phone": "+13055550123", "favourite_colour": "blue"}, "favourite_colour"),
        ({"phone": "+13055550123", "first_name": "x" * 101}, "first_name"),
    ],
)
async def test_bad_field_is_named_and_nothing_stored(
    http: httpx.AsyncClient,
    source: Source,
    db: asyncpg.Connection,
    lead: dict[str, object],
    field: str,
) -> None:
    answer = await http.post("/v1/leads", headers=source.auth, json=lead)

    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == "validation_failed"
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in problem["errors"]]
    assert await count_leads(db, source) == 0


async def test_one_bad_lead_rejects_the_whole_batch(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    leads = [{"phone": unique_phone()}, {"phone": "nope"}, {"email": "bad@"}]

    answer = await http.post(
        "/v1/leads/batch", headers=source.auth, json={"leads": leads}
    )

    assert answer.status_code == 422
    fields = [error["field"] for error in answer.json()["errors"]]
    assert fields == ["leads[1].phone", "leads[2].email"]
    assert await count_leads(db, source) == 0


async def test_batch_over_the_limit_is_refused(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    leads = [{"phone": "+13055550123"}] * 1001

    answer = await http.post(
        "/v1/leads/batch", headers=source.auth, json={"leads": leads}
    )

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "leads"
    assert await count_leads(db, source) == 0


async def test_malformed_json_is_400(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    answer = await http.post(
        "/v1/leads", headers=source.auth, content=b'{"phone": "+1305'
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == "malformed_json"
    assert await count_leads(db, source) == 0


async def test_oversized_body_is_413(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    huge = body({"phone": "+13055550123", "attributes": {"notes": "x" * 2_000_000}})

    answer = await http.post("/v1/leads", headers=source.auth, content=huge)

    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
    assert await count_leads(db, source) == 0


async def test_oversized_chunked_body_is_413(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    """Without Content-Length the limit is enforced while reading."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"phone": "+13055550123", "attributes": {"notes": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}}'

    answer = await http.post("/v1/leads", headers=source.auth, content=chunks())

    assert answer.status_code == 413
    assert await count_leads(db, source) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer rdl_nobody_wrong"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_key_is_401_and_nothing_stored(
    http: httpx.AsyncClient,
    source: Source,
    db: asyncpg.Connection,
    headers: dict[str, str],
) -> None:
    before = LEADS_REJECTED.labels("unknown", "unauthorized")._value.get()

    answer = await http.post(
        "/v1/leads", headers=headers, json={"phone": unique_phone()}
    )

    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"
    assert (
        await db.fetchval("SELECT count(*) FROM leads WHERE source = $1", source.name)
        == 0
    )
    assert LEADS_REJECTED.labels("unknown", "unauthorized")._value.get() == before + 1


async def test_lead_naming_another_source_is_refused(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    answer = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"source": "someone-else", "phone": unique_phone()},
    )

    assert answer.status_code == 403
    assert answer.json()["code"] == "source_mismatch"
    assert await count_leads(db, source) == 0


async def test_unknown_lead_is_404(http: httpx.AsyncClient, source: Source) -> None:
    answer = await http.get(f"/v1/leads/{uuid.uuid4()}", headers=source.auth)

    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


# -- idempotency ---------------------------------------------------------------


async def test_idempotency_key_retry_returns_the_same_lead(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection, stack: Stack
) -> None:
    lead = {"phone": unique_phone(), "first_name": "Grace"}
    headers = {**source.auth, "Idempotency-Key": "order-1"}

    first = await http.post("/v1/leads", headers=headers, json=lead)
    second = await http.post("/v1/leads", headers=headers, json=lead)

    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert await count_leads(db, source) == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM duplicates WHERE source = $1", source.name
        )
        == 0
    )
    events = await events_about(
        stack.bootstrap, {first.json()["lead_id"]}, count=2, timeout=2
    )
    assert [event.type for event in events] == ["lead.received.v1"]


async def test_idempotency_key_with_another_body_is_409(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    headers = {**source.auth, "Idempotency-Key": "order-2"}
    await http.post("/v1/leads", headers=headers, json={"phone": unique_phone()})

    answer = await http.post(
        "/v1/leads", headers=headers, json={"phone": unique_phone()}
    )

    assert answer.status_code == 409
    assert answer.json()["code"] == "idempotency_key_reused"
    assert await count_leads(db, source) == 1


async def test_external_id_retry_returns_the_same_lead(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    first = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"external_id": "crm-7", "phone": unique_phone()},
    )
    # The CRM re-sends its record; even a changed phone is the same lead.
    second = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"external_id": "crm-7", "phone": unique_phone()},
    )

    assert second.json() == first.json()
    assert second.json()["status"] == "accepted"
    assert await count_leads(db, source) == 1


async def test_concurrent_copies_make_one_lead(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    lead = {"phone": unique_phone()}

    answers = await asyncio.gather(
        *(http.post("/v1/leads", headers=source.auth, json=lead) for _ in range(12))
    )

    statuses = sorted(answer.json()["status"] for answer in answers)
    assert statuses == ["accepted"] + ["duplicate"] * 11
    assert len({answer.json()["lead_id"] for answer in answers}) == 1
    assert await count_leads(db, source) == 1


# -- duplicates ----------------------------------------------------------------


async def test_same_phone_is_a_duplicate_with_event_and_count(
    http: httpx.AsyncClient, source: Source, stack: Stack
) -> None:
    phone = unique_phone()
    before = LEADS_DUPLICATE.labels(source.name)._value.get()
    first = await http.post("/v1/leads", headers=source.auth, json={"phone": phone})

    again = await http.post(
        "/v1/leads", headers=source.auth, json={"phone": phone, "first_name": "Late"}
    )

    assert again.json() == {
        "lead_id": first.json()["lead_id"],
        "status": "duplicate",
        "duplicate_action": "ignored",
        "dnc": False,
    }
    assert LEADS_DUPLICATE.labels(source.name)._value.get() == before + 1
    events = await events_about(stack.bootstrap, {first.json()["lead_id"]}, count=2)
    assert [event.type for event in events] == ["lead.received.v1", "lead.duplicate.v1"]
    assert events[1].data.matched_on == "phone"  # type: ignore[attr-defined]
    stored = await stored_lead(http, source, first.json()["lead_id"])
    assert stored["first_name"] is None  # ignored, not merged
    assert stored["duplicates"] == 1


async def test_same_email_in_other_case_is_a_duplicate(
    http: httpx.AsyncClient, source: Source
) -> None:
    email = unique_email()
    first = await http.post("/v1/leads", headers=source.auth, json={"email": email})

    again = await http.post(
        "/v1/leads", headers=source.auth, json={"email": email.upper()}
    )

    assert again.json()["status"] == "duplicate"
    assert again.json()["lead_id"] == first.json()["lead_id"]


async def test_duplicate_inside_one_batch(
    http: httpx.AsyncClient, source: Source
) -> None:
    phone = unique_phone()

    answer = await http.post(
        "/v1/leads/batch",
        headers=source.auth,
        json={"leads": [{"phone": phone}, {"phone": phone[2:]}]},
    )

    first, second = answer.json()["results"]
    assert (first["status"], second["status"]) == ("accepted", "duplicate")
    assert first["lead_id"] == second["lead_id"]


async def test_same_phone_after_the_window_is_a_new_lead(
    http: httpx.AsyncClient, source: Source, clock: ManualClock
) -> None:
    phone = unique_phone()
    first = await http.post("/v1/leads", headers=source.auth, json={"phone": phone})
    clock.advance(days(30) + days(0.01))

    again = await http.post("/v1/leads", headers=source.auth, json={"phone": phone})

    assert again.json()["status"] == "accepted"
    assert again.json()["lead_id"] != first.json()["lead_id"]


async def test_merge_fill_fills_blanks_only(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    source = await make_source(db, intake, clock, duplicate_policy="merge_fill")
    phone = unique_phone()
    first = await http.post(
        "/v1/leads", headers=source.auth, json={"phone": phone, "first_name": "Ada"}
    )

    again = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"phone": phone, "first_name": "Augusta", "last_name": "King"},
    )

    assert again.json()["duplicate_action"] == "merged"
    stored = await stored_lead(http, source, first.json()["lead_id"])
    assert (stored["first_name"], stored["last_name"]) == ("Ada", "King")


async def test_merge_overwrite_takes_the_newer_values(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    intake: Server,
    clock: ManualClock,
    stack: Stack,
) -> None:
    source = await make_source(db, intake, clock, duplicate_policy="merge_overwrite")
    email = unique_email()
    first = await http.post(
        "/v1/leads", headers=source.auth, json={"email": email, "first_name": "Ada"}
    )

    again = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"email": email, "first_name": "Augusta", "consent": {"email": True}},
    )

    assert again.json()["duplicate_action"] == "merged"
    lead_id = first.json()["lead_id"]
    stored = await stored_lead(http, source, lead_id)
    assert stored["first_name"] == "Augusta"
    assert stored["consent"]["email"] is True
    events = await events_about(stack.bootstrap, {lead_id}, count=2)
    duplicate = events[1].data
    assert duplicate.action == "merged"  # type: ignore[attr-defined]
    assert set(duplicate.merged_fields) == {"first_name", "consent_email"}  # type: ignore[attr-defined]
    assert duplicate.lead.first_name == "Augusta"  # type: ignore[attr-defined]


async def test_duplicate_of_a_lead_merged_with_nothing_new_is_ignored(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    source = await make_source(db, intake, clock, duplicate_policy="merge_fill")
    phone = unique_phone()
    await http.post("/v1/leads", headers=source.auth, json={"phone": phone})

    again = await http.post("/v1/leads", headers=source.auth, json={"phone": phone})

    assert again.json()["duplicate_action"] == "ignored"


async def test_received_counter_counts_new_leads(
    http: httpx.AsyncClient, source: Source
) -> None:
    await http.post(
        "/v1/leads/batch",
        headers=source.auth,
        json={"leads": [{"phone": unique_phone()} for _ in range(3)]},
    )

    assert LEADS_RECEIVED.labels(source.name)._value.get() == 3


# -- regressions from review -----------------------------------------------------


async def test_nul_character_is_a_422_not_a_500(
    http: httpx.AsyncClient, source: Source, db: asyncpg.Connection
) -> None:
    """Regression: PostgreSQL cannot store U+0000; it failed the insert (500)."""
    answer = await http.post(
        "/v1/leads/batch",
        headers=source.auth,
        json={
            "leads": [
                {"phone": unique_phone(), "first_name": "A\u0000da"},
                {"phone": unique_phone(), "attributes": {"note": "x\u0000"}},
            ]
        },
    )

    assert answer.status_code == 422
    fields = [error["field"] for error in answer.json()["errors"]]
    assert fields == ["leads[0].first_name", "leads[1].attributes"]
    assert await count_leads(db, source) == 0


async def test_attributes_too_large_for_an_event_are_refused(
    http: httpx.AsyncClient, source: Source
) -> None:
    answer = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"phone": unique_phone(), "attributes": {"notes": "x" * 20_000}},
    )

    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "attributes"


async def test_request_id_that_is_not_a_token_is_replaced(
    http: httpx.AsyncClient,
) -> None:
    """Regression: a non-UTF-8 X-Request-Id made every route answer 500."""
    answer = await http.get("/healthz", headers={b"X-Request-Id": b"\xff\xfe"})

    assert answer.status_code == 200
    assert answer.headers["x-request-id"].isalnum()


async def test_other_sources_lead_is_404(
    http: httpx.AsyncClient,
    source: Source,
    db: asyncpg.Connection,
    intake: Server,
    clock: ManualClock,
) -> None:
    """Regression: any source's key could read any lead, and a duplicate's
    answer hands a vendor the id of another vendor's lead."""
    phone = unique_phone()
    first = await http.post("/v1/leads", headers=source.auth, json={"phone": phone})
    other = await make_source(db, intake, clock)
    duplicate = await http.post("/v1/leads", headers=other.auth, json={"phone": phone})
    assert duplicate.json()["lead_id"] == first.json()["lead_id"]

    answer = await http.get(f"/v1/leads/{first.json()['lead_id']}", headers=other.auth)

    assert answer.status_code == 404


async def test_merge_keeps_a_refusal_when_the_copy_says_nothing_of_consent(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    """Regression: a copy without consent overwrote call=False with the default."""
    source = await make_source(db, intake, clock, duplicate_policy="merge_overwrite")
    phone = unique_phone()
    first = await http.post(
        "/v1/leads",
        headers=source.auth,
        json={"phone": phone, "consent": {"call": False, "sms": False, "email": False}},
    )

    await http.post(
        "/v1/leads", headers=source.auth, json={"phone": phone, "last_name": "X"}
    )

    stored = await stored_lead(http, source, first.json()["lead_id"])
    assert stored["consent"]["call"] is False
    assert stored["last_name"] == "X"


async def test_merged_phone_brings_its_zones_and_dnc_flag(
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
    intake: Server,
    clock: ManualClock,
) -> None:
    """Regression: a merged phone's zones were not saved and its DNC listing
    was ignored."""
    source = await make_source(db, intake, clock, duplicate_policy="merge_fill")
    email = unique_email()
    phone = unique_phone()
    await db.execute(
        "INSERT INTO dnc_phones (phone, listed_at) VALUES ($1, $2)", phone, clock.now()
    )
    first = await http.post("/v1/leads", headers=source.auth, json={"email": email})

    again = await http.post(
        "/v1/leads", headers=source.auth, json={"email": email, "phone": phone}
    )

    assert again.json()["dnc"] is True
    row = await db.fetchrow(
        "SELECT phone, timezones, dnc FROM leads WHERE id = $1",
        uuid.UUID(first.json()["lead_id"]),
    )
    assert row is not None
    assert row["phone"] == phone
    assert row["timezones"] != []
    assert row["dnc"] is True


async def test_concurrent_merges_into_one_lead_lose_nothing(
    http: httpx.AsyncClient, db: asyncpg.Connection, intake: Server, clock: ManualClock
) -> None:
    """Regression: copies matching one lead by phone and by email merged in
    parallel, and the later UPDATE dropped the earlier one's attributes."""
    source = await make_source(db, intake, clock, duplicate_policy="merge_fill")
    phone, email = unique_phone(), unique_email()
    first = await http.post(
        "/v1/leads", headers=source.auth, json={"phone": phone, "email": email}
    )

    await asyncio.gather(
        *(
            http.post(
                "/v1/leads",
                headers=source.auth,
                json={
                    ("phone" if index % 2 else "email"): phone if index % 2 else email,
                    "attributes": {f"key{index}": index},
                },
            )
            for index in range(10)
        )
    )

    stored = await stored_lead(http, source, first.json()["lead_id"])
    assert stored["attributes"] == {f"key{index}": index for index in range(10)}
