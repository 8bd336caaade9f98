"""The fold on its own: plans, and that how events are cut into batches (and
when due slots are counted between them) never changes a figure.

The consumer applies whatever batch a partition hands it, so a lead's events
may be folded in one batch or in many; the day counters must come out the
same either way. A small in-memory store plays the database's part here, with
the same upsert rules as ``repository.write``; the database path itself is
tested through the service.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from collections import Counter, defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.folding import Folder, LeadRow, Slot, planned_attempts
from shared.events import (
    CallLogged,
    Envelope,
    EventData,
    LeadConverted,
    LeadExhausted,
    LeadQueued,
    LeadReceived,
    new_event,
)

ZONE = zoneinfo.ZoneInfo("America/New_York")
T0 = dt.datetime(2026, 3, 7, 9, 0, tzinfo=ZONE)  # the day before DST begins


def test_attempt_k_is_planned_after_the_first_k_gaps() -> None:
    plan = planned_attempts(T0, [0, 600, 3600], 5)
    offsets = [(due - T0).total_seconds() for _, due in plan]
    assert [attempt for attempt, _ in plan] == [1, 2, 3, 4, 5]
    # The last gap repeats once the cadence runs out.
    assert offsets == [0, 600, 4200, 7800, 11400]


def test_no_cadence_plans_nothing() -> None:
    assert planned_attempts(T0, [], 8) == []


class Store:
    """What ``repository.write`` and ``count_due_slots`` keep, in memory."""

    def __init__(self) -> None:
        self.leads: dict[uuid.UUID, LeadRow] = {}
        self.slots: dict[tuple[uuid.UUID, dt.datetime, int], Slot] = {}
        self.days: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
        self.groups: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)

    def fold(self, events: list[Envelope]) -> None:
        ids = {envelope.data.lead_id for envelope in events}  # type: ignore[attr-defined]
        leads = {i: self.leads[i] for i in ids if i in self.leads}
        slots = [s for s in self.slots.values() if s.lead_id in ids]
        changes = Folder(
            {i: LeadRow(**vars(row)) for i, row in leads.items()}, slots, ZONE, ids
        ).fold(events)
        self.leads.update(changes.leads)
        self.slots.update(changes.slots)
        for key, (_, counts) in changes.lead_days.items():
            self.days[key].update(
                attempts=counts.attempts,
                scheduled=counts.scheduled,
                contacts=counts.contacts,
                conversions=counts.conversions,
            )
        for group_key, group in changes.group_days.items():
            self.groups[group_key].update(
                attempts=group.attempts, **group.by_disposition
            )

    def count_due(self, now: dt.datetime) -> None:
        for key, slot in list(self.slots.items()):
            if not slot.counted and not slot.cancelled and slot.due_at <= now:
                self.slots[key] = Slot(**{**vars(slot), "counted": True})
                self.days[(slot.lead_id, slot.day, slot.pool)]["scheduled"] += 1

    def figures(self) -> dict[str, Any]:
        rows = {
            lead_id: (row.attempts, row.state, row.first_contact_attempt)
            for lead_id, row in self.leads.items()
        }
        days = {key: +counts for key, counts in self.days.items() if +counts}
        groups = {key: +counts for key, counts in self.groups.items() if +counts}
        return {"leads": rows, "days": days, "groups": groups}


def _event(data: EventData, at: dt.datetime) -> Envelope:
    lead_id = data.lead_id  # type: ignore[attr-defined]
    return new_event(data, source="test", subject=str(lead_id), time=at)


DISPOSITION = st.sampled_from(["no_answer", "busy", "voicemail", "contacted"])


@st.composite
def histories(draw: st.DrawFn) -> list[Envelope]:
    """A few leads' events in time order: arrival, a round, calls spread over
    three days (across the DST change), maybe a conversion or an exhaustion
    and a second round in another pool."""
    events: list[tuple[dt.datetime, int, EventData]] = []
    for index in range(draw(st.integers(1, 3))):
        lead_id = uuid.UUID(int=index + 1)
        start = T0 + dt.timedelta(minutes=draw(st.integers(0, 600)))
        target = draw(st.integers(1, 5))
        cadence = [0, 3600, 6 * 3600]
        events.append(
            (start, 0, LeadReceived(lead_id=lead_id, source="s", received_at=start))
        )
        events.append((start, 1, _queued(lead_id, "p", start, target, cadence)))
        at = start
        calls = draw(st.integers(0, target))
        for attempt in range(1, calls + 1):
            at += dt.timedelta(minutes=draw(st.integers(1, 1800)))
            disposition = draw(DISPOSITION)
            events.append((at, 2, _call(lead_id, at, attempt, target, disposition)))
        ending = draw(st.sampled_from(["open", "converted", "exhausted", "moved"]))
        at += dt.timedelta(minutes=1)
        if ending == "converted":
            events.append(
                (
                    at,
                    3,
                    LeadConverted(
                        lead_id=lead_id,
                        pool="p",
                        attempt=calls,
                        disposition="converted",
                        converted_at=at,
                    ),
                )
            )
        elif ending in ("exhausted", "moved"):
            exhausted = LeadExhausted(
                lead_id=lead_id,
                pool="p",
                attempts=calls,
                call_target=target,
                exhausted_at=at,
            )
            events.append((at, 3, exhausted))
            if ending == "moved":
                events.append((at, 4, _queued(lead_id, "q", at, 2, [0, 7200])))
                later = at + dt.timedelta(minutes=30)
                events.append((later, 5, _call(lead_id, later, 1, 2, "busy", "q")))
    # One lead's events keep their order; leads interleave by time.
    events.sort(key=lambda item: (item[0], item[1]))
    return [_event(data, at) for at, _, data in events]


def _queued(
    lead_id: uuid.UUID, pool: str, at: dt.datetime, target: int, cadence: list[int]
) -> LeadQueued:
    return LeadQueued(
        lead_id=lead_id,
        pool=pool,
        source="s",
        call_target=target,
        cadence_seconds=cadence,
        due_at=at,
        queued_at=at,
    )


def _call(
    lead_id: uuid.UUID,
    at: dt.datetime,
    attempt: int,
    target: int,
    disposition: str,
    pool: str = "p",
) -> CallLogged:
    return CallLogged(
        lead_id=lead_id,
        call_id=uuid.uuid4(),
        pool=pool,
        source="s",
        agent_id="a",
        team="t",
        attempt=attempt,
        call_target=target,
        disposition=disposition,
        called_at=at,
    )


@settings(max_examples=60, deadline=None)
@given(histories(), st.data())
def test_cutting_events_into_batches_changes_no_figure(
    events: list[Envelope], data: st.DataObject
) -> None:
    whole = Store()
    whole.fold(events)
    end = T0 + dt.timedelta(days=4)
    whole.count_due(end)

    cut = Store()
    position = 0
    while position < len(events):
        size = data.draw(st.integers(1, max(1, len(events) - position)))
        batch = events[position : position + size]
        position += size
        cut.fold(batch)
        # Slots counted between batches, as the background counter would,
        # while the consumer lags behind by up to a few hours: a slot may be
        # counted before the event that cancels it is folded.
        # (Up to two days, so that happens often.)
        lag = dt.timedelta(minutes=data.draw(st.integers(0, 2 * 24 * 60)))
        cut.count_due(batch[-1].time + lag)
    cut.count_due(end)

    assert cut.figures() == whole.figures()


@settings(max_examples=40, deadline=None)
@given(histories())
def test_a_lead_never_has_more_attempts_due_than_its_targets(
    events: list[Envelope],
) -> None:
    store = Store()
    store.fold(events)
    store.count_due(T0 + dt.timedelta(days=30))
    due: Counter[uuid.UUID] = Counter()
    for (lead_id, _, _), counts in store.days.items():
        due[lead_id] += counts["scheduled"]
    for lead_id, row in store.leads.items():
        assert 0 <= due[lead_id] <= row.target_total


def test_a_slot_counted_before_the_end_was_folded_is_taken_back() -> None:
    """The counter ran ahead of the consumer: three slots were counted due by
    14:00 although the lead converted at 09:30; two of them are taken back."""
    lead_id = uuid.uuid4()
    store = Store()
    store.fold(
        [
            _event(LeadReceived(lead_id=lead_id, source="s", received_at=T0), T0),
            _event(_queued(lead_id, "p", T0, 4, [0, 3600, 6 * 3600]), T0),
        ]
    )
    store.count_due(T0 + dt.timedelta(hours=8))
    day = (lead_id, T0.date(), "p")
    assert store.days[day]["scheduled"] == 3

    at = T0 + dt.timedelta(minutes=30)
    converted = LeadConverted(
        lead_id=lead_id, pool="p", attempt=0, disposition="converted", converted_at=at
    )
    store.fold([_event(converted, at)])

    assert store.days[day]["scheduled"] == 1
    assert store.leads[lead_id].state == "converted"
