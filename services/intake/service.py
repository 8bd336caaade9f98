"""Intake's decisions: who is calling, whether a lead is new, what to store.

Every accepted request is one transaction: the leads, the duplicates log, the
events (outbox) and the idempotency record commit together or not at all.
Concurrent requests that could match each other (same phone, e-mail, external
id or Idempotency-Key) are serialised by advisory locks on hash buckets of
those keys, so two copies of one lead posted at the same instant still produce
one lead and one duplicate.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from pydantic import ValidationError

from services.intake import repository
from services.intake.auth import bearer_token, hash_api_key, verify_signature
from services.intake.mappings import MAPPINGS, MappingProblem
from services.intake.metrics import LEADS_DUPLICATE, LEADS_RECEIVED
from services.intake.schemas import (
    ATTRIBUTES_LIMIT,
    LeadAccepted,
    LeadIn,
    LeadOut,
    attributes_too_large,
)
from services.intake.settings import IntakeSettings
from shared.clock import Clock
from shared.db import Connection
from shared.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from shared.events import (
    Consent,
    DncUpdated,
    Envelope,
    EventData,
    LeadDuplicate,
    LeadOptedOut,
    LeadReceived,
    LeadSnapshot,
    new_event,
)
from shared.http import validation_errors

logger = logging.getLogger(__name__)

EVENT_SOURCE = "redial/intake"
#: Number of advisory-lock buckets keys hash into. More buckets mean fewer
#: false collisions between unrelated leads, and more locks per large batch.
DEDUP_BUCKETS = 1024
#: Fields a duplicate may merge into the lead it matched.
MERGEABLE = (
    "campaign",
    "first_name",
    "last_name",
    "phone",
    "email",
    "postal_code",
    "country",
    "region",
    "timezone",
)
#: The field to name for LeadIn's checks that span several fields.
MODEL_ERROR_FIELDS = {"missing_contact": "phone", "invalid_postal_code": "postal_code"}
#: How long a looked-up API key is trusted before it is checked again.
KEY_CACHE_SECONDS = 30.0


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    title = "Idempotency-Key reused with a different body"


class SourceMismatch(Forbidden):
    code = "source_mismatch"
    title = "Lead names another source"


@dataclass
class _Lead:
    """A lead being decided: its stored columns, mutable while merging."""

    columns: dict[str, Any]
    is_new: bool
    changed: set[str] = field(default_factory=set)

    @property
    def id(self) -> uuid.UUID:
        return self.columns["id"]

    def snapshot(self) -> dict[str, Any]:
        columns = self.columns
        return {
            "lead_id": columns["id"],
            "source": columns["source"],
            "external_id": columns["external_id"],
            "campaign": columns["campaign"],
            "first_name": columns["first_name"],
            "last_name": columns["last_name"],
            "phone": columns["phone"],
            "email": columns["email"],
            "postal_code": columns["postal_code"],
            "country": columns["country"],
            "region": columns["region"],
            "timezone": columns["timezone"],
            "timezones": list(columns["timezones"]),
            "consent": Consent(
                call=columns["consent_call"],
                sms=columns["consent_sms"],
                email=columns["consent_email"],
            ),
            "attributes": columns["attributes"],
            "dnc": columns["dnc"],
            "received_at": columns["received_at"],
        }


@dataclass
class _Decision:
    lead: _Lead
    status: Literal["accepted", "duplicate", "retry"]
    matched_on: Literal["phone", "email", "external_id"] | None = None
    action: Literal["ignored", "merged"] | None = None
    merged_fields: list[str] = field(default_factory=list)

    def result(self) -> LeadAccepted:
        return LeadAccepted(
            lead_id=self.lead.id,
            status="duplicate" if self.status == "duplicate" else "accepted",
            duplicate_action=self.action,
            dnc=self.lead.columns["dnc"],
        )


class IntakeService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: IntakeSettings,
        clock: Clock,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._on_commit = on_commit
        self._key_cache: dict[bytes, tuple[float, repository.Source]] = {}

    # -- credentials -------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> repository.Source:
        """The source an API key belongs to, or 401."""
        key_hash = hash_api_key(bearer_token(authorization))
        cached = self._key_cache.get(key_hash)
        now = self._clock.monotonic()
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        source = await repository.source_by_key_hash(self._pool, key_hash)
        if source is None:
            raise Unauthorized("API key is not valid")
        self._key_cache[key_hash] = (now, source)
        return source

    async def authenticate_webhook(
        self, source_name: str, signature: str | None, body: bytes
    ) -> tuple[repository.Source, str]:
        """The source and the verified signature (``t.digest``), or 401."""
        source = await repository.source_by_name(self._pool, source_name)
        # Unknown sources and sources without a secret get the same answer,
        # so the endpoint does not reveal which source names exist.
        if source is None or not source.webhook_secret:
            raise Unauthorized("webhook signature cannot be verified for this source")
        verified = verify_signature(
            signature,
            secret=source.webhook_secret,
            body=body,
            now=self._clock.now().timestamp(),
            tolerance=self._settings.signature_tolerance_seconds,
        )
        return source, verified

    # -- validation --------------------------------------------------------

    def parse(
        self, raw_leads: Sequence[Any], source: repository.Source, *, prefix: str
    ) -> list[LeadIn]:
        """Validate every lead; one 422 lists every bad field of every lead."""
        limit = self._settings.batch_limit
        if len(raw_leads) > limit:
            raise ValidationFailed(
                [{"field": "leads", "message": f"at most {limit} leads per request"}]
            )
        context: dict[str, Any] = {"region": self._settings.default_region}
        leads: list[LeadIn] = []
        errors: list[dict[str, str]] = []
        for index, raw in enumerate(raw_leads):
            where = prefix.format(index=index)
            try:
                lead = LeadIn.model_validate(raw, context=context)
            except ValidationError as error:
                errors += validation_errors(
                    error.errors(), prefix=where, field_of=MODEL_ERROR_FIELDS
                )
                continue
            if lead.source is not None and lead.source != source.name:
                raise SourceMismatch(
                    f"{where}source is {lead.source!r} but the credentials belong to"
                    f" {source.name!r}"
                )
            leads.append(lead)
        if errors:
            raise ValidationFailed(errors)
        return leads

    def map_webhook(self, source: repository.Source, payload: Any) -> list[Any]:
        mapping = MAPPINGS.get(source.mapping)
        if mapping is None:
            raise ValidationFailed(
                [{"field": "source", "message": f"unknown mapping {source.mapping!r}"}]
            )
        try:
            leads = mapping(payload, source.mapping_options)
        except MappingProblem as problem:
            raise ValidationFailed(
                [{"field": problem.path, "message": problem.message}]
            ) from None
        return leads

    # -- acceptance --------------------------------------------------------

    async def accept(
        self,
        source: repository.Source,
        leads: Sequence[LeadIn],
        *,
        idempotency_key: str | None = None,
        request_hash: bytes = b"",
    ) -> list[LeadAccepted]:
        """Store new leads, resolve duplicates and retries, queue the events."""
        now = self._clock.now()
        async with (
            self._pool.acquire(timeout=10) as connection,
            connection.transaction(),
        ):
            await repository.lock_dedup_buckets(
                connection, _buckets(source.name, leads, idempotency_key)
            )
            if idempotency_key is not None:
                replay = await self._replay(
                    connection, source, idempotency_key, request_hash, now
                )
                if replay is not None:
                    return replay
            decisions = await self._decide(connection, source, leads, now)
            results = [decision.result() for decision in decisions]
            await self._store(connection, source, decisions, now)
            if idempotency_key is not None:
                await repository.save_idempotent_response(
                    connection,
                    source=source.name,
                    key=idempotency_key,
                    request_hash=request_hash,
                    response=[result.model_dump(mode="json") for result in results],
                    now=now,
                )
        self._on_commit()
        self._count(source.name, decisions)
        return results

    async def _replay(
        self,
        connection: Connection,
        source: repository.Source,
        key: str,
        request_hash: bytes,
        now: dt.datetime,
    ) -> list[LeadAccepted] | None:
        since = now - dt.timedelta(seconds=self._settings.idempotency_ttl_seconds)
        stored = await repository.idempotent_response(
            connection, source.name, key, since
        )
        if stored is None:
            return None
        if stored["request_hash"] != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used for a different request body"
            )
        return [LeadAccepted.model_validate(result) for result in stored["response"]]

    async def _decide(
        self,
        connection: Connection,
        source: repository.Source,
        leads: Sequence[LeadIn],
        now: dt.datetime,
    ) -> list[_Decision]:
        phones = sorted({lead.phone for lead in leads if lead.phone})
        emails = sorted({lead.email for lead in leads if lead.email})
        external_ids = sorted({lead.external_id for lead in leads if lead.external_id})
        since = now - dt.timedelta(seconds=self._settings.dedup_window_seconds)

        stored_external = await repository.leads_by_external_id(
            connection, source.name, external_ids
        )
        matches, listed = await repository.matches_and_listed(
            connection, phones, emails, since
        )
        if matches and source.duplicate_policy != "ignore":
            # A merge rewrites the stored lead, and the bucket locks only cover
            # this request's keys: another request may match the same lead by
            # its other key. Row locks, taken in id order, make such merges
            # wait for each other (and re-read) instead of losing an update.
            locked = await repository.lock_leads(
                connection, sorted({row["id"] for row in matches})
            )
            matches = sorted(locked, key=lambda row: (row["received_at"], row["id"]))
        by_phone: dict[str, _Lead] = {}
        by_email: dict[str, _Lead] = {}
        for row in matches:
            columns = dict(row)
            columns.pop("listed_phones", None)
            stored = _Lead(columns=columns, is_new=False)
            # Rows come oldest first: the first match is the original.
            if stored.columns["phone"]:
                by_phone.setdefault(stored.columns["phone"], stored)
            if stored.columns["email"]:
                by_email.setdefault(stored.columns["email"], stored)
        by_external: dict[str, _Lead] = {}

        decisions: list[_Decision] = []
        for lead in leads:
            if lead.external_id is not None:
                if lead.external_id in by_external:
                    decisions.append(_Decision(by_external[lead.external_id], "retry"))
                    continue
                if lead.external_id in stored_external:
                    lead_id, dnc = stored_external[lead.external_id]
                    retried = _Lead(columns={"id": lead_id, "dnc": dnc}, is_new=False)
                    decisions.append(_Decision(retried, "retry"))
                    continue
            original, matched_on = _original_of(lead, by_phone, by_email)
            if original is not None and matched_on is not None:
                decisions.append(
                    self._merge(
                        original, lead, matched_on, source.duplicate_policy, listed
                    )
                )
            else:
                new = _Lead(
                    columns=_new_columns(
                        lead, source.name, now, self._settings.default_region, listed
                    ),
                    is_new=True,
                )
                decisions.append(_Decision(new, "accepted"))
                original = new
            _index(original, by_phone, by_email)
            if lead.external_id is not None and original.is_new:
                by_external[lead.external_id] = original
        return decisions

    def _merge(
        self,
        original: _Lead,
        lead: LeadIn,
        matched_on: Literal["phone", "email"],
        policy: str,
        listed: set[str],
    ) -> _Decision:
        if policy == "ignore":
            return _Decision(original, "duplicate", matched_on, "ignored")
        overwrite = policy == "merge_overwrite"
        incoming = _new_columns(
            lead,
            original.columns["source"],
            None,
            self._settings.default_region,
            listed,
        )
        if lead.phone is None:
            # Without a phone the country is only the default region: it says
            # nothing about this lead and must not overwrite a known one.
            incoming["country"] = None
        merged: list[str] = []
        for name in MERGEABLE:
            value = incoming[name]
            current = original.columns.get(name)
            if value is None or value == current:
                continue
            if current is None or overwrite:
                original.columns[name] = value
                merged.append(name)
        if "timezone" in merged or "phone" in merged:
            original.columns["timezones"] = incoming["timezones"]
            original.changed.add("timezones")
        if "phone" in merged and incoming["dnc"] and not original.columns["dnc"]:
            original.columns["dnc"] = True
            original.changed.add("dnc")
        attributes = dict(original.columns["attributes"])
        for key, value in incoming["attributes"].items():
            if len(attributes) >= ATTRIBUTES_LIMIT and key not in attributes:
                break  # the stored lead keeps at most as many as one request
            if key not in attributes or (overwrite and attributes[key] != value):
                attributes[key] = value
                merged.append(f"attributes.{key}")
        if attributes_too_large(attributes):
            attributes = original.columns["attributes"]
            merged = [name for name in merged if not name.startswith("attributes.")]
        original.columns["attributes"] = attributes
        # Consent changes only when the copy states it: a default must not turn
        # a refusal into a yes.
        if overwrite and "consent" in lead.model_fields_set:
            for name in ("consent_call", "consent_sms", "consent_email"):
                if original.columns[name] != incoming[name]:
                    original.columns[name] = incoming[name]
                    merged.append(name)
        original.changed.update(name.split(".")[0] for name in merged)
        return _Decision(
            original,
            "duplicate",
            matched_on,
            "merged" if merged else "ignored",
            merged,
        )

    async def _store(
        self,
        connection: Connection,
        source: repository.Source,
        decisions: Sequence[_Decision],
        now: dt.datetime,
    ) -> None:
        events: list[Envelope] = []
        for decision in decisions:
            data: EventData
            # model_construct skips re-validating what was validated on the
            # way in; this runs inside the transaction, under the dedup locks.
            if decision.status == "accepted":
                data = LeadReceived.model_construct(**decision.lead.snapshot())
            elif decision.status == "duplicate":
                assert decision.matched_on is not None
                assert decision.action is not None
                data = LeadDuplicate(
                    lead_id=decision.lead.id,
                    source=source.name,
                    matched_on=decision.matched_on,
                    action=decision.action,
                    merged_fields=decision.merged_fields,
                    lead=LeadSnapshot.model_construct(**decision.lead.snapshot()),
                    received_at=now,
                )
            else:
                continue
            events.append(
                new_event(
                    data, source=EVENT_SOURCE, subject=str(decision.lead.id), time=now
                )
            )
        new_leads = [d.lead.columns for d in decisions if d.status == "accepted"]
        await repository.insert_leads_and_events(connection, new_leads, events, now)
        merged_stored = {
            d.lead.id: d.lead
            for d in decisions
            if d.status == "duplicate" and d.lead.changed and not d.lead.is_new
        }
        for lead in merged_stored.values():
            changes = {name: lead.columns[name] for name in sorted(lead.changed)}
            changes["updated_at"] = now
            await repository.update_lead(connection, lead.id, changes)
        duplicates = [d for d in decisions if d.status == "duplicate"]
        await repository.insert_duplicates(
            connection,
            [(d.lead.id, source.name, d.matched_on, d.action, now) for d in duplicates],
        )

    def _count(self, source: str, decisions: Sequence[_Decision]) -> None:
        accepted = sum(1 for d in decisions if d.status == "accepted")
        duplicates = sum(1 for d in decisions if d.status == "duplicate")
        if accepted:
            LEADS_RECEIVED.labels(source).inc(accepted)
        if duplicates:
            LEADS_DUPLICATE.labels(source).inc(duplicates)
        logger.debug(
            "leads.accepted source=%s new=%s duplicates=%s",
            source,
            accepted,
            duplicates,
        )

    # -- reads -------------------------------------------------------------

    async def get_lead(self, source: repository.Source, lead_id: uuid.UUID) -> LeadOut:
        """A lead of ``source``; another source's lead is answered like a
        missing one, so ids learned from duplicate answers reveal nothing."""
        row = await repository.lead_with_counts(self._pool, lead_id, source.name)
        if row is None:
            raise NotFound(f"no lead {lead_id} for source {source.name}")
        lead = _Lead(columns=dict(row), is_new=False)
        snapshot = lead.snapshot()
        return LeadOut(
            **snapshot,
            duplicates=row["duplicates"],
            updated_at=row["updated_at"],
        )

    # -- events from other services ----------------------------------------

    async def apply_events(
        self, connection: Connection, envelopes: Sequence[Envelope]
    ) -> None:
        """Keep intake's do-not-call copy in step with the queue's decisions."""
        for envelope in envelopes:
            data = envelope.data
            if (
                isinstance(data, LeadOptedOut)
                and data.phone
                and data.channel
                in (
                    "call",
                    "all",
                )
            ):
                await repository.list_phone(connection, data.phone, data.opted_out_at)
            elif isinstance(data, DncUpdated):
                if data.listed:
                    await repository.list_phone(connection, data.phone, data.updated_at)
                else:
                    await repository.unlist_phone(connection, data.phone)

    async def purge_expired(self) -> None:
        before = self._clock.now() - dt.timedelta(
            seconds=self._settings.idempotency_ttl_seconds
        )
        await repository.purge_idempotency_keys(self._pool, before)


def _buckets(
    source: str, leads: Sequence[LeadIn], idempotency_key: str | None
) -> list[int]:
    keys: set[str] = set()
    for lead in leads:
        if lead.phone:
            keys.add(f"p:{lead.phone}")
        if lead.email:
            keys.add(f"e:{lead.email}")
        if lead.external_id:
            keys.add(f"x:{source}:{lead.external_id}")
    if idempotency_key is not None:
        keys.add(f"i:{source}:{idempotency_key}")
    return sorted({zlib.crc32(key.encode()) % DEDUP_BUCKETS for key in keys})


def _original_of(
    lead: LeadIn, by_phone: dict[str, _Lead], by_email: dict[str, _Lead]
) -> tuple[_Lead | None, Literal["phone", "email"] | None]:
    if lead.phone and lead.phone in by_phone:
        return by_phone[lead.phone], "phone"
    if lead.email and lead.email in by_email:
        return by_email[lead.email], "email"
    return None, None


def _index(lead: _Lead, by_phone: dict[str, _Lead], by_email: dict[str, _Lead]) -> None:
    if lead.columns.get("phone"):
        by_phone.setdefault(lead.columns["phone"], lead)
    if lead.columns.get("email"):
        by_email.setdefault(lead.columns["email"], lead)


def _new_columns(
    lead: LeadIn,
    source: str,
    now: dt.datetime | None,
    default_region: str,
    listed: set[str],
) -> dict[str, Any]:
    located = lead.located(default_region)
    return {
        "id": uuid.uuid4(),
        "source": source,
        "external_id": lead.external_id,
        "campaign": lead.campaign,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "phone": lead.phone,
        "email": lead.email,
        "postal_code": lead.postal_code,
        "country": located.country,
        "region": located.region,
        "timezone": located.timezone,
        "timezones": located.timezones,
        "consent_call": lead.consent.call,
        "consent_sms": lead.consent.sms,
        "consent_email": lead.consent.email,
        "attributes": lead.attributes,
        "dnc": lead.phone in listed if lead.phone else False,
        "received_at": now,
        "updated_at": now,
    }
