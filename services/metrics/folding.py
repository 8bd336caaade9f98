"""How lead events change the metrics' rows: pure code over plain values.

:func:`fold` takes the stored state of the leads a batch of events is about
and the events, in the order their partition holds them, and returns what to
write: each lead's new row, additive counter deltas per (lead, day, pool),
(lead, day, agent) and (day, pool, source, team, agent), the slot changes,
and the Prometheus observations to make once the transaction commits.

Every delta is additive and every lead field is set so that events seen in a
different order still end in the same figures, as far as the events allow:
a call seen before its lead's ``lead.received`` is counted at once and the
arrival fills in the rest when it comes.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import operator
import typing
import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.events import (
    CallLogged,
    Disposition,
    Envelope,
    LeadConverted,
    LeadDuplicate,
    LeadExhausted,
    LeadInvalid,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
    LeadSnapshot,
)

#: Every disposition, in the order of shared.events' Disposition (the
#: column order of ``group_days``).
DISPOSITIONS: tuple[Disposition, ...] = typing.get_args(Disposition)
#: Calls on which the lead was reached and spoke: a contact. A wrong number
#: reached someone else, so it is not one.
CONTACTS: frozenset[str] = frozenset(
    {"contacted", "callback", "appointment", "converted", "not_interested", "dnc"}
)
#: Calls that converted the lead (the queue ends the lead converted on both).
CONVERSIONS: frozenset[str] = frozenset({"appointment", "converted"})
#: States in which a lead is no longer dialed.
ENDED = frozenset({"exhausted", "converted", "invalid", "opted_out"})


def business_day(moment: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.date:
    return moment.astimezone(zone).date()


#: The most attempts one round plans (the queue's own limit on a target), so
#: a malformed target cannot make a batch plan millions of slots.
MAX_PLANNED_ATTEMPTS = 100


def planned_attempts(
    start: dt.datetime, cadence_seconds: Sequence[float], target: int, first: int = 1
) -> list[tuple[int, dt.datetime]]:
    """The cadence's plan for a round: (attempt k, when it falls due) for
    k = first…target, attempt k at ``start`` + the first k gaps (the last gap
    of a cadence shorter than the target repeats). ``first`` > 1 for a lead
    that brought attempts into the round; the queue plans it the same way.
    Empty without a cadence."""
    if not cadence_seconds:
        return []
    # Gaps are elapsed seconds: in UTC, because adding a timedelta to a time
    # in a zone with DST (a ZoneInfo) moves its wall clock, not the instant.
    origin = start.astimezone(dt.UTC)
    plan, elapsed = [], 0.0
    for attempt in range(1, min(target, MAX_PLANNED_ATTEMPTS) + 1):
        elapsed += cadence_seconds[min(attempt - 1, len(cadence_seconds) - 1)]
        if attempt >= first:
            plan.append((attempt, origin + dt.timedelta(seconds=elapsed)))
    return plan


@dataclass
class LeadRow:
    """One row of ``leads``; field names are its column names."""

    lead_id: uuid.UUID
    source: str | None = None
    campaign: str | None = None
    received_at: dt.datetime | None = None
    pool: str | None = None
    first_pool: str | None = None
    round_started_at: dt.datetime | None = None
    call_target: int | None = None
    cadence_seconds: list[float] = field(default_factory=list)
    #: Attempts the lead brought into the round (kept by a recycle).
    round_carried: int = 0
    round_attempts: int = 0
    target_total: int = 0
    attempts: int = 0
    first_call_at: dt.datetime | None = None
    first_call_agent: str | None = None
    first_call_team: str | None = None
    last_call_at: dt.datetime | None = None
    first_contact_attempt: int | None = None
    first_contact_at: dt.datetime | None = None
    converted_attempt: int | None = None
    converted_at: dt.datetime | None = None
    state: str = "open"
    ended_at: dt.datetime | None = None
    dnc: bool = False
    duplicates: int = 0

    @classmethod
    def columns(cls) -> list[str]:
        return list(_LEAD_COLUMNS)

    @classmethod
    def from_record(cls, record: Any) -> LeadRow:
        lead = cls(*(record[name] for name in _LEAD_COLUMNS))
        lead.cadence_seconds = list(lead.cadence_seconds or ())
        return lead

    def values(self) -> tuple[Any, ...]:
        # Not dataclasses.astuple, which deep-copies every value; and the
        # names are read once, not per row (this runs for every lead of
        # every batch).
        values: tuple[Any, ...] = _lead_values(self)
        return values


_LEAD_COLUMNS = tuple(column.name for column in dataclasses.fields(LeadRow))
_lead_values = operator.attrgetter(*_LEAD_COLUMNS)


@dataclass(frozen=True)
class Slot:
    """One planned attempt as stored in ``slots``."""

    lead_id: uuid.UUID
    round_started_at: dt.datetime
    attempt: int
    due_at: dt.datetime
    day: dt.date
    pool: str
    source: str
    counted: bool = False
    cancelled: bool = False


@dataclass
class Counts:
    attempts: int = 0
    scheduled: int = 0
    contacts: int = 0
    conversions: int = 0


@dataclass
class GroupCounts:
    attempts: int = 0
    contacts: int = 0
    conversions: int = 0
    by_disposition: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DISPOSITIONS, 0)
    )
    duplicates: int = 0


@dataclass(frozen=True)
class Observation:
    """A histogram observation to make after commit (counters are summed
    in :attr:`Changes.attempts` instead)."""

    metric: str
    pool: str
    value: float


@dataclass
class Changes:
    """Everything one batch writes; see the module docstring."""

    leads: dict[uuid.UUID, LeadRow] = field(default_factory=dict)
    #: (lead, day, pool) → (source, counts)
    lead_days: dict[tuple[uuid.UUID, dt.date, str], tuple[str, Counts]] = field(
        default_factory=dict
    )
    #: (lead, day, agent) → (team, attempts)
    lead_agent_days: dict[tuple[uuid.UUID, dt.date, str], list[Any]] = field(
        default_factory=dict
    )
    #: (day, pool, source, team, agent) → counts
    group_days: dict[tuple[dt.date, str, str, str, str], GroupCounts] = field(
        default_factory=lambda: defaultdict(GroupCounts)
    )
    #: agent → (team, last call)
    agents: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    #: Slots to insert, or to update to the counted/cancelled flags given.
    slots: dict[tuple[uuid.UUID, dt.datetime, int], Slot] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    #: Calls per (pool, disposition), for the attempts counter.
    attempts: collections.Counter[tuple[str, str]] = field(
        default_factory=collections.Counter
    )

    def lead_day(
        self, lead_id: uuid.UUID, day: dt.date, pool: str, source: str
    ) -> Counts:
        key = (lead_id, day, pool)
        if key not in self.lead_days:
            self.lead_days[key] = (source, Counts())
        return self.lead_days[key][1]


class Folder:
    """Folds one batch of events into :class:`Changes`.

    ``leads`` holds the stored rows of the batch's leads (missing ones start
    empty); ``slots`` every stored slot of the leads in ``slots_loaded``, the
    leads whose slots the batch may change (see :func:`needs_slots`).
    Planning a lead whose slots were not loaded would write over stored ones
    blind, so it is refused as a programming error.
    """

    def __init__(
        self,
        leads: dict[uuid.UUID, LeadRow],
        slots: Iterable[Slot],
        zone: zoneinfo.ZoneInfo,
        slots_loaded: Collection[uuid.UUID],
    ) -> None:
        self._zone = zone
        self.changes = Changes(leads=leads)
        self._loaded = frozenset(slots_loaded)
        self._slots: dict[uuid.UUID, dict[tuple[dt.datetime, int], Slot]] = {
            lead_id: {} for lead_id in self._loaded
        }
        for slot in slots:
            self._slots[slot.lead_id][(slot.round_started_at, slot.attempt)] = slot

    def _slots_of(self, lead_id: uuid.UUID) -> dict[tuple[dt.datetime, int], Slot]:
        try:
            return self._slots[lead_id]
        except KeyError:
            raise RuntimeError(
                f"slots of lead {lead_id} were not loaded for this batch"
            ) from None

    def fold(self, events: Sequence[Envelope]) -> Changes:
        for envelope in events:
            self._apply(envelope)
        return self.changes

    def _lead(self, lead_id: uuid.UUID) -> LeadRow:
        leads = self.changes.leads
        if lead_id not in leads:
            leads[lead_id] = LeadRow(lead_id=lead_id)
        return leads[lead_id]

    def _apply(self, envelope: Envelope) -> None:
        data = envelope.data
        # Calls are most events: test for them first, by exact type (the
        # pydantic models' isinstance goes through ABC machinery).
        if type(data) is CallLogged:
            self._call(data)
        elif isinstance(data, LeadReceived):
            self._received(data)
        elif isinstance(data, LeadDuplicate):
            self._duplicate(data)
        elif isinstance(data, LeadQueued):
            self._queued(data)
        elif isinstance(data, LeadExhausted):
            self._end(data.lead_id, "exhausted", data.exhausted_at)
        elif isinstance(data, LeadConverted):
            self._converted(data)
        elif isinstance(data, LeadOptedOut):
            if data.channel in ("call", "all"):
                self._end(data.lead_id, "opted_out", data.opted_out_at)
        elif isinstance(data, LeadInvalid):
            self._end(data.lead_id, "invalid", data.invalidated_at)

    # -- arrivals -----------------------------------------------------------

    def _received(self, data: LeadSnapshot) -> None:
        lead = self._lead(data.lead_id)
        lead.source = data.source
        lead.campaign = data.campaign
        dnc_changed, lead.dnc = lead.dnc != data.dnc, data.dnc
        if dnc_changed and lead.round_started_at is not None:
            self._plan_round(lead)
        if lead.received_at is None:
            lead.received_at = data.received_at
            if lead.first_call_at is not None:
                # The first call was seen before the arrival.
                self._observe_speed(lead)
        else:
            lead.received_at = min(lead.received_at, data.received_at)

    def _duplicate(self, data: LeadDuplicate) -> None:
        lead = self._lead(data.lead_id)
        lead.duplicates += 1
        if lead.received_at is None:
            self._received(data.lead)
        day = business_day(data.received_at, self._zone)
        self.changes.group_days[(day, "", data.source, "", "")].duplicates += 1

    def _queued(self, data: LeadQueued) -> None:
        lead = self._lead(data.lead_id)
        lead.source = lead.source or data.source
        lead.campaign = lead.campaign or data.campaign
        if lead.round_started_at == data.queued_at and lead.pool == data.pool:
            return  # the same round told twice
        if lead.round_started_at is not None and data.queued_at < lead.round_started_at:
            return  # an older round, seen late: the newer one stands
        if lead.round_started_at is not None:
            # From the move on the new round plans the lead's attempts.
            self._cut_round(lead, lead.round_started_at, data.queued_at, moved=True)
            lead.round_attempts = data.attempts
        else:
            # The first round: calls seen before its lead.queued belong to it.
            lead.round_attempts = max(lead.round_attempts, data.attempts)
        lead.pool = data.pool
        lead.first_pool = lead.first_pool or data.pool
        lead.round_started_at = data.queued_at
        if data.attempts and lead.call_target is not None:
            # A recycle: the lead carries on toward one target, now this pool's.
            lead.target_total += data.call_target - lead.call_target
        else:
            lead.target_total += data.call_target
        lead.round_carried = data.attempts
        lead.call_target = data.call_target
        lead.cadence_seconds = list(data.cadence_seconds)
        if lead.state != "converted":
            lead.state, lead.ended_at = "open", None
        self._plan_round(lead)

    # -- calls --------------------------------------------------------------

    def _call(self, data: CallLogged) -> None:
        lead = self._lead(data.lead_id)
        lead.source = lead.source or data.source
        lead.pool = lead.pool or data.pool
        lead.first_pool = lead.first_pool or data.pool
        lead.attempts += 1
        number = lead.attempts
        lead.round_attempts = max(lead.round_attempts, data.attempt)
        first = lead.first_call_at is None
        if first or data.called_at < lead.first_call_at:  # type: ignore[operator]
            lead.first_call_at = data.called_at
            lead.first_call_agent = data.agent_id
            lead.first_call_team = data.team
            if first and lead.received_at is not None:
                self._observe_speed(lead)
        if lead.last_call_at is None or data.called_at > lead.last_call_at:
            lead.last_call_at = data.called_at
        contact = data.disposition in CONTACTS
        conversion = data.disposition in CONVERSIONS
        if contact and lead.first_contact_attempt is None:
            lead.first_contact_attempt, lead.first_contact_at = number, data.called_at
            self._observe("attempts_at_contact", data.pool, number)
        if conversion and lead.converted_attempt is None:
            lead.converted_attempt, lead.converted_at = number, data.called_at
            self._observe("attempts_at_conversion", data.pool, number)
        if (
            lead.call_target is not None
            and data.call_target != lead.call_target
            and lead.round_started_at is not None
            and data.pool == lead.pool
        ):
            # The pool's target changed under the round: re-plan from this call.
            lead.target_total += data.call_target - lead.call_target
            lead.call_target = data.call_target
            self._plan_round(lead, changed_at=data.called_at)
        self._count_call(lead, data, contact, conversion)

    def _count_call(
        self, lead: LeadRow, data: CallLogged, contact: bool, conversion: bool
    ) -> None:
        changes = self.changes
        day = business_day(data.called_at, self._zone)
        source = data.source or lead.source or ""
        counts = changes.lead_day(lead.lead_id, day, data.pool, source)
        counts.attempts += 1
        counts.contacts += contact
        counts.conversions += conversion
        group = changes.group_days[
            (day, data.pool, source, data.team or "", data.agent_id or "")
        ]
        group.attempts += 1
        group.contacts += contact
        group.conversions += conversion
        group.by_disposition[data.disposition] += 1
        if data.agent_id:
            key = (lead.lead_id, day, data.agent_id)
            worked = changes.lead_agent_days.setdefault(key, [data.team or "", 0])
            worked[1] += 1
            last = changes.agents.get(data.agent_id)
            if last is None or data.called_at > last[1]:
                changes.agents[data.agent_id] = (data.team or "", data.called_at)
        changes.attempts[(data.pool, data.disposition)] += 1

    # -- endings ------------------------------------------------------------

    def _converted(self, data: LeadConverted) -> None:
        lead = self._lead(data.lead_id)
        if lead.converted_attempt is None:
            # No converting call seen (yet): the event's own count stands in.
            lead.converted_attempt = lead.attempts or data.attempt
            lead.converted_at = data.converted_at
        self._end(data.lead_id, "converted", data.converted_at)

    def _end(self, lead_id: uuid.UUID, state: str, at: dt.datetime) -> None:
        lead = self._lead(lead_id)
        if lead.state == "converted" and state != "converted":
            return  # a converted lead stays converted
        if lead.round_started_at is not None and at < lead.round_started_at:
            return  # the end of an earlier round, seen late
        lead.state, lead.ended_at = state, at
        if lead.round_started_at is not None:
            self._cut_round(lead, lead.round_started_at, at)

    # -- slots --------------------------------------------------------------

    def _plan_round(self, lead: LeadRow, changed_at: dt.datetime | None = None) -> None:
        """Make the stored slots of the lead's round match its plan.

        ``changed_at`` is when the target changed under the round: the days
        before it keep the slots they had, and an attempt the new target adds
        is planned no earlier than that moment.
        """
        assert lead.round_started_at is not None
        assert lead.pool is not None
        start, pool = lead.round_started_at, lead.pool
        plan = planned_attempts(
            start, lead.cadence_seconds, lead.call_target or 0, lead.round_carried + 1
        )
        wanted = {
            attempt: due if changed_at is None else max(due, changed_at)
            for attempt, due in plan
        }
        stored = self._slots_of(lead.lead_id)
        for (round_start, attempt), slot in list(stored.items()):
            if (
                round_start == start
                and attempt not in wanted
                and not slot.cancelled
                and (changed_at is None or slot.due_at > changed_at)
            ):
                self._cancel(slot)
        for attempt, due in wanted.items():
            found = stored.get((start, attempt))
            if found is None:
                new = Slot(
                    lead_id=lead.lead_id,
                    round_started_at=start,
                    attempt=attempt,
                    due_at=due,
                    day=business_day(due, self._zone),
                    pool=pool,
                    source=lead.source or "",
                )
                self._store(new)
            elif found.cancelled:
                self._store(dataclasses.replace(found, cancelled=False))
        if lead.state in ENDED and lead.ended_at is not None:
            self._cut_round(lead, start, lead.ended_at)
        elif lead.dnc:
            # The number may not be called: nothing of the round falls due.
            self._cut_round(lead, start, None)

    def _cut_round(
        self,
        lead: LeadRow,
        start: dt.datetime,
        at: dt.datetime | None,
        *,
        moved: bool = False,
    ) -> None:
        """Cancel the round's slots planned after ``at`` (every one: None).

        A slot planned at the very moment a lead ended stays due (the call
        that ended it was that attempt); one planned at the moment it moved
        to another pool is the new round's to plan (``moved``).
        """
        for (round_start, _), slot in list(self._slots_of(lead.lead_id).items()):
            if round_start != start or slot.cancelled:
                continue
            if at is None or slot.due_at > at or (moved and slot.due_at == at):
                self._cancel(slot)

    def _cancel(self, slot: Slot) -> None:
        if slot.counted:
            # Counted before the lead's end was known: take it back.
            counts = self.changes.lead_day(
                slot.lead_id, slot.day, slot.pool, slot.source
            )
            counts.scheduled -= 1
        self._store(dataclasses.replace(slot, counted=False, cancelled=True))

    def _store(self, slot: Slot) -> None:
        key = (slot.round_started_at, slot.attempt)
        self._slots_of(slot.lead_id)[key] = slot
        self.changes.slots[(slot.lead_id, *key)] = slot

    # -- observations -------------------------------------------------------

    def _observe_speed(self, lead: LeadRow) -> None:
        assert lead.first_call_at is not None
        assert lead.received_at is not None
        seconds = (lead.first_call_at - lead.received_at).total_seconds()
        self._observe("speed_to_lead", lead.first_pool or "", max(0.0, seconds))

    def _observe(self, metric: str, pool: str, value: float) -> None:
        self.changes.observations.append(Observation(metric, pool, value))


def needs_slots(envelope: Envelope, stored: LeadRow | None) -> bool:
    """Whether folding the event may change the lead's stored slots. Every
    event but a call may (rounds begin and end, an arrival may put the number
    on the DNC list), and they are few per lead; a call only when it tells of
    a changed target. Calls are most of the traffic, so this matters."""
    data = envelope.data
    if type(data) is CallLogged:
        return stored is None or data.call_target != stored.call_target
    return True


def lead_of(envelope: Envelope) -> uuid.UUID | None:
    lead_id = getattr(envelope.data, "lead_id", None)
    return lead_id if isinstance(lead_id, uuid.UUID) else None
