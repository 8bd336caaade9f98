"""CloudEvents envelopes: every event type round-trips, bad input is poison."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson
import pytest

from shared.errors import PoisonEvent
from shared.events import (
    EVENT_TYPES,
    CallLogged,
    Consent,
    DncUpdated,
    EventData,
    LeadConverted,
    LeadDuplicate,
    LeadExhausted,
    LeadInvalid,
    LeadLeased,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
    LeadRecycled,
    LeadSnapshot,
    NurtureJob,
    UnknownEventType,
    decode,
    decode_if,
    new_event,
)

LEAD_ID = uuid.UUID("0b9f6d2e-4c1a-4e8b-9a57-3f2d1c0e9b8a")
AT = dt.datetime(2026, 1, 5, 15, 0, tzinfo=dt.UTC)
LATER = AT + dt.timedelta(minutes=10)
SOURCE = "redial/intake"

#: The smallest valid instance of every event model, by type.
SAMPLES: dict[type[EventData], EventData] = {
    LeadReceived: LeadReceived(lead_id=LEAD_ID, source="web", received_at=AT),
    LeadDuplicate: LeadDuplicate(
        lead_id=LEAD_ID,
        source="web",
        matched_on="phone",
        action="ignored",
        lead=LeadSnapshot(lead_id=LEAD_ID, source="web", received_at=AT),
        received_at=LATER,
    ),
    LeadQueued: LeadQueued(
        lead_id=LEAD_ID, pool="default", call_target=6, due_at=AT, queued_at=AT
    ),
    LeadLeased: LeadLeased(
        lead_id=LEAD_ID,
        lease_id=uuid.UUID(int=1),
        pool="default",
        agent_id="agent-7",
        attempt=1,
        leased_at=AT,
        expires_at=LATER,
    ),
    CallLogged: CallLogged(
        lead_id=LEAD_ID,
        call_id=uuid.UUID(int=2),
        pool="default",
        attempt=1,
        call_target=6,
        disposition="no_answer",
        called_at=AT,
    ),
    LeadRecycled: LeadRecycled(
        lead_id=LEAD_ID, pool="default", reason="lease_expired", recycled_at=AT
    ),
    LeadExhausted: LeadExhausted(
        lead_id=LEAD_ID, pool="default", attempts=6, call_target=6, exhausted_at=AT
    ),
    LeadConverted: LeadConverted(
        lead_id=LEAD_ID,
        pool="default",
        attempt=2,
        disposition="appointment",
        converted_at=AT,
    ),
    LeadOptedOut: LeadOptedOut(lead_id=LEAD_ID, opted_out_at=AT),
    LeadInvalid: LeadInvalid(lead_id=LEAD_ID, reason="wrong_number", invalidated_at=AT),
    DncUpdated: DncUpdated(phone="+13055550123", listed=True, updated_at=AT),
    NurtureJob: NurtureJob(
        job_id=uuid.UUID(int=3),
        idempotency_key=f"{LEAD_ID}:welcome:1",
        lead_id=LEAD_ID,
        campaign="welcome",
        step=1,
        channel="email",
        template_id="welcome-1",
        to="ada@example.org",
        due_at=AT,
    ),
}


def envelope_json(**changes: object) -> bytes:
    """A valid lead.queued.v1 event as JSON, with top-level keys changed."""
    event = new_event(SAMPLES[LeadQueued], source=SOURCE, subject=str(LEAD_ID), time=AT)
    document = orjson.loads(event.to_json())
    for key, value in changes.items():
        if value is None:
            document.pop(key, None)
        else:
            document[key] = value
    return orjson.dumps(document)


def test_every_event_type_has_a_sample() -> None:
    """A new event model must be added to SAMPLES, so it is round-tripped too."""
    assert set(SAMPLES) == set(EVENT_TYPES.values())


def test_event_types_are_keyed_by_their_versioned_type() -> None:
    for event_type, model in EVENT_TYPES.items():
        assert model.event_type == event_type
        assert event_type.endswith(".v1")


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_event_round_trips_through_json(event_type: str) -> None:
    data = SAMPLES[EVENT_TYPES[event_type]]
    event = new_event(data, source=SOURCE, subject=str(LEAD_ID), time=AT)

    decoded = decode(event.to_json())

    assert decoded == event
    assert type(decoded.data) is type(data)
    assert decoded.data == data
    assert decoded.type == event_type


def test_fully_filled_lead_received_round_trips() -> None:
    data = LeadReceived(
        lead_id=LEAD_ID,
        source="hubspot",
        external_id="3234574",
        campaign="spring-refinance",
        first_name="Ada",
        last_name="Lovelace",
        phone="+13055550123",
        email="ada@example.org",
        postal_code="33101",
        country="US",
        region="FL",
        timezone="America/New_York",
        timezones=["America/New_York", "America/Los_Angeles"],
        consent=Consent(call=True, sms=True, email=False),
        attributes={"loan_amount": 250000, "tags": ["refi", "warm"], "vip": None},
        dnc=True,
        received_at=AT,
    )
    event = new_event(data, source=SOURCE, subject=str(LEAD_ID), time=AT)

    assert decode(event.to_json()).data == data


def test_structured_json_carries_the_cloudevents_attributes() -> None:
    event = new_event(SAMPLES[LeadQueued], source=SOURCE, subject=str(LEAD_ID), time=AT)

    document = orjson.loads(event.to_json())

    assert document["specversion"] == "1.0"
    assert document["type"] == "lead.queued.v1"
    assert document["source"] == SOURCE
    assert document["subject"] == str(LEAD_ID)
    assert document["datacontenttype"] == "application/json"
    assert document["id"] == str(event.id)
    assert dt.datetime.fromisoformat(document["time"]) == AT
    assert document["data"]["lead_id"] == str(LEAD_ID)


def test_new_events_get_fresh_ids() -> None:
    data = SAMPLES[LeadQueued]

    ids = {new_event(data, source=SOURCE, subject="s", time=AT).id for _ in range(5)}

    assert len(ids) == 5


def test_key_is_the_subject_bytes() -> None:
    """Events about one lead share a partition, so they stay in order."""
    event = new_event(SAMPLES[LeadQueued], source=SOURCE, subject=str(LEAD_ID), time=AT)

    assert event.key == str(LEAD_ID).encode()


def test_dnc_events_are_keyed_by_phone() -> None:
    data = SAMPLES[DncUpdated]

    event = new_event(data, source=SOURCE, subject="+13055550123", time=AT)

    assert event.key == b"+13055550123"


def test_unknown_data_fields_are_ignored() -> None:
    """A newer producer may add optional fields; old consumers must not choke."""
    document = orjson.loads(envelope_json())
    document["data"]["priority"] = "high"

    decoded = decode(orjson.dumps(document))

    assert decoded.data == SAMPLES[LeadQueued]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "event is not JSON"),
        (b"", "event is not JSON"),
        (b"\xff\xfe", "event is not JSON"),
        (b"[1, 2]", "event is not a JSON object"),
        (b'"lead.queued.v1"', "event is not a JSON object"),
        (b"null", "event is not a JSON object"),
    ],
)
def test_bytes_that_are_no_event_are_poison(raw: bytes, message: str) -> None:
    with pytest.raises(PoisonEvent, match=message):
        decode(raw)


@pytest.mark.parametrize("specversion", ["0.3", 1.0, None], ids=["0.3", "1.0", "none"])
def test_other_specversion_is_poison(specversion: object) -> None:
    with pytest.raises(PoisonEvent, match="unsupported specversion"):
        decode(envelope_json(specversion=specversion))


@pytest.mark.parametrize("event_type", ["lead.teleported.v1", "lead.queued.v9", 7])
def test_unknown_event_type_is_poison(event_type: object) -> None:
    with pytest.raises(UnknownEventType, match="unknown event type") as caught:
        decode(envelope_json(type=event_type))

    assert isinstance(caught.value, PoisonEvent)
    assert caught.value.retriable is False


def test_missing_event_type_is_unknown() -> None:
    with pytest.raises(UnknownEventType, match="unknown event type None"):
        decode(envelope_json(type=None))


@pytest.mark.parametrize(
    "data",
    [
        {"lead_id": str(LEAD_ID)},
        {"lead_id": "not-a-uuid", "pool": "p", "call_target": 6, "due_at": "x"},
        "lead.queued",
        [],
    ],
    ids=["missing fields", "bad values", "text", "list"],
)
def test_invalid_data_is_poison(data: object) -> None:
    with pytest.raises(PoisonEvent, match=r"invalid lead\.queued\.v1 event"):
        decode(envelope_json(data=data))


@pytest.mark.parametrize(
    "changes",
    [{"id": "not-a-uuid"}, {"subject": None}, {"time": "yesterday"}, {"source": 5}],
    ids=["id", "subject", "time", "source"],
)
def test_invalid_envelope_attribute_is_poison(changes: dict[str, object]) -> None:
    with pytest.raises(PoisonEvent, match=r"invalid lead\.queued\.v1 event"):
        decode(envelope_json(**changes))


def test_poison_is_never_retried() -> None:
    with pytest.raises(PoisonEvent) as caught:
        decode(b"not json")

    assert caught.value.retriable is False


@pytest.mark.parametrize("event_type", [["lead.received.v1"], {"a": 1}, 7])
def test_decode_if_refuses_a_type_that_is_no_string(event_type: object) -> None:
    """Regression: an unhashable type raised TypeError, which stopped the
    consumer instead of dead-lettering the event."""
    raw = orjson.dumps({"specversion": "1.0", "type": event_type, "data": {}})

    with pytest.raises(PoisonEvent):
        decode_if(raw, {"dnc.updated.v1"})


def test_decode_if_skips_other_types_without_validating_them() -> None:
    raw = orjson.dumps(
        {"specversion": "1.0", "type": "lead.received.v1", "data": {"nonsense": 1}}
    )

    assert decode_if(raw, {"dnc.updated.v1"}) is None
