"""Every event Redial publishes: the single source of truth for their schemas.

Events travel as CloudEvents 1.0 in structured JSON mode. ``type`` names the
event and its schema version (``lead.received.v1``); ``subject`` is the lead id
and is also the Kafka key, so one lead's events stay in order. A change that
breaks a schema gets a new version beside the old one; consumers keep reading
both until the old one is gone from the topics.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import PoisonEvent

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"


class EventData(BaseModel):
    """Base of every event payload; ``event_type`` is the versioned CE type."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    call: bool = True
    sms: bool = False
    email: bool = False


class LeadSnapshot(EventData):
    """The lead as intake stored it; carried by events that describe a lead."""

    lead_id: uuid.UUID
    source: str
    external_id: str | None = None
    campaign: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = Field(None, description="E.164")
    email: str | None = None
    postal_code: str | None = None
    country: str | None = Field(None, description="ISO 3166-1 alpha-2")
    region: str | None = Field(None, description="State or province code, e.g. FL")
    timezone: str | None = Field(None, description="IANA zone used for the lead")
    timezones: list[str] = Field(
        default_factory=list, description="Every zone the lead may be in"
    )
    consent: Consent = Field(default_factory=Consent)
    attributes: dict[str, Any] = Field(default_factory=dict)
    dnc: bool = Field(False, description="Phone is on the do-not-call list")
    received_at: dt.datetime


class LeadReceived(LeadSnapshot):
    event_type = "lead.received.v1"


class LeadDuplicate(EventData):
    """A lead matched one already stored; ``lead`` is the original after merge."""

    event_type = "lead.duplicate.v1"

    lead_id: uuid.UUID
    source: str
    matched_on: Literal["phone", "email", "external_id"]
    action: Literal["ignored", "merged"]
    merged_fields: list[str] = Field(default_factory=list)
    lead: LeadSnapshot
    received_at: dt.datetime


class LeadQueued(EventData):
    event_type = "lead.queued.v1"

    lead_id: uuid.UUID
    pool: str
    source: str | None = None
    campaign: str | None = None
    call_target: int
    #: The pool's cadence: seconds before attempt 1, 2, … counted from
    #: ``queued_at``; the last gap repeats. Empty from producers older than
    #: the field, which then leaves readers to assume no schedule.
    cadence_seconds: list[float] = Field(default_factory=list)
    #: Attempts the lead brings into this pool (a recycle keeps them, a new
    #: round after exhaustion starts from 0): its next is attempt attempts+1.
    attempts: int = Field(0, ge=0)
    #: False when the pool wants its leads kept out of nurture while it still
    #: calls them (they are enrolled once exhausted instead).
    nurture_while_calling: bool = True
    due_at: dt.datetime
    queued_at: dt.datetime


class LeadLeased(EventData):
    event_type = "lead.leased.v1"

    lead_id: uuid.UUID
    lease_id: uuid.UUID
    pool: str
    agent_id: str
    team: str | None = None
    attempt: int = Field(description="The attempt number this lease is for")
    leased_at: dt.datetime
    expires_at: dt.datetime


Disposition = Literal[
    "no_answer",
    "busy",
    "voicemail",
    "contacted",
    "callback",
    "appointment",
    "converted",
    "not_interested",
    "wrong_number",
    "dnc",
]


class CallLogged(EventData):
    event_type = "call.logged.v1"

    lead_id: uuid.UUID
    call_id: uuid.UUID
    pool: str
    source: str | None = None
    agent_id: str | None = None
    team: str | None = None
    attempt: int
    call_target: int
    disposition: Disposition
    duration_seconds: float = 0.0
    called_at: dt.datetime
    via_queue: bool = Field(True, description="False for calls logged from outside")


class LeadRecycled(EventData):
    event_type = "lead.recycled.v1"

    lead_id: uuid.UUID
    pool: str
    from_agent_id: str | None = None
    reason: Literal[
        "lease_expired", "not_interested", "agent_attempt_limit", "stale", "released"
    ]
    recycled_at: dt.datetime


class LeadExhausted(EventData):
    event_type = "lead.exhausted.v1"

    lead_id: uuid.UUID
    pool: str
    attempts: int
    call_target: int
    exhausted_at: dt.datetime


class LeadConverted(EventData):
    event_type = "lead.converted.v1"

    lead_id: uuid.UUID
    pool: str
    agent_id: str | None = None
    attempt: int
    disposition: Literal["appointment", "converted"]
    converted_at: dt.datetime


class LeadOptedOut(EventData):
    """The lead asked not to be contacted on ``channel`` (``all`` = every one)."""

    event_type = "lead.opted_out.v1"

    lead_id: uuid.UUID
    phone: str | None = None
    email: str | None = None
    channel: Literal["call", "sms", "email", "all"] = "all"
    opted_out_at: dt.datetime


class LeadInvalid(EventData):
    event_type = "lead.invalid.v1"

    lead_id: uuid.UUID
    reason: str
    invalidated_at: dt.datetime


class DncUpdated(EventData):
    """A phone was put on (``listed``) or taken off the do-not-call list.

    Keyed by the phone number rather than a lead id: the list is about numbers.
    """

    event_type = "dnc.updated.v1"

    phone: str
    listed: bool
    updated_at: dt.datetime


class NurtureJob(EventData):
    """One email or SMS for a sender to deliver; ``idempotency_key`` is stable."""

    event_type = "nurture.job.v1"

    job_id: uuid.UUID
    idempotency_key: str
    lead_id: uuid.UUID
    campaign: str
    step: int
    channel: Literal["email", "sms"]
    template_id: str
    content_url: str | None = None
    to: str
    first_name: str | None = None
    last_name: str | None = None
    due_at: dt.datetime
    #: Texts only: the end of the SMS hours (and the law's) the job was
    #: decided in. A sender that cannot deliver by then should hold the text
    #: to the next opening rather than deliver it at night.
    send_before: dt.datetime | None = None


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        LeadReceived,
        LeadDuplicate,
        LeadQueued,
        LeadLeased,
        CallLogged,
        LeadRecycled,
        LeadExhausted,
        LeadConverted,
        LeadOptedOut,
        LeadInvalid,
        DncUpdated,
        NurtureJob,
    )
}


class Envelope(BaseModel):
    """A CloudEvents 1.0 envelope around one :class:`EventData`."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    source: str
    type: str
    subject: str
    time: dt.datetime
    data: EventData
    specversion: str = SPEC_VERSION
    datacontenttype: str = "application/json"

    @property
    def key(self) -> bytes:
        """The Kafka key: events about one subject share a partition."""
        return self.subject.encode()

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "specversion": self.specversion,
                "id": str(self.id),
                "source": self.source,
                "type": self.type,
                "subject": self.subject,
                "time": self.time.isoformat(),
                "datacontenttype": self.datacontenttype,
                "data": self.data.model_dump(mode="json"),
            }
        )


def new_event(
    data: EventData, *, source: str, subject: str, time: dt.datetime
) -> Envelope:
    """Wrap ``data`` in a fresh envelope with a new random id."""
    return Envelope(
        id=uuid.uuid4(),
        source=source,
        type=data.event_type,
        subject=subject,
        time=time,
        data=data,
    )


class UnknownEventType(PoisonEvent):
    """The envelope is well formed but its type is not in :data:`EVENT_TYPES`."""


def decode(raw: bytes) -> Envelope:
    """Parse a structured-mode CloudEvent; raises PoisonEvent on bad input."""
    return _envelope(_document(raw))


def decode_if(raw: bytes, event_types: Collection[str] | None) -> Envelope | None:
    """Like :func:`decode`, but ``None`` for a well-formed event of a type not
    in ``event_types`` (``None`` accepts every type).

    A consumer that handles few types skips validating the payloads of all
    the others; a malformed envelope still raises.
    """
    document = _document(raw)
    if event_types is None:
        return _envelope(document)
    event_type = document.get("type")
    if not isinstance(event_type, str) or event_type not in event_types:
        _known_type(document)  # an unknown type still raises UnknownEventType
        return None
    return _envelope(document)


def _document(raw: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as error:
        raise PoisonEvent(f"event is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise PoisonEvent("event is not a JSON object")
    if document.get("specversion") != SPEC_VERSION:
        raise PoisonEvent(f"unsupported specversion {document.get('specversion')!r}")
    return document


def _known_type(document: dict[str, Any]) -> tuple[str, type[EventData]]:
    event_type = document.get("type")
    model = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if model is None or not isinstance(event_type, str):
        raise UnknownEventType(f"unknown event type {event_type!r}")
    return event_type, model


def _envelope(document: dict[str, Any]) -> Envelope:
    event_type, model = _known_type(document)
    try:
        data = model.model_validate(document.get("data"))
        return Envelope(
            id=document.get("id"),
            source=document.get("source"),
            type=event_type,
            subject=document.get("subject"),
            time=document.get("time"),
            data=data,
            datacontenttype=document.get("datacontenttype", "application/json"),
        )
    except (ValidationError, TypeError, ValueError) as error:
        raise PoisonEvent(f"invalid {event_type} event: {error}") from error
