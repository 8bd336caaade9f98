"""The demo's own count of what it did, to hold the services' figures against.

Pure bookkeeping: the floor records every lead intake accepted and every call
whose outcome the queue took; the report compares these counts with what the
metrics service says.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LeadRecord:
    number: int
    source: str
    pool: str
    accepted_at: float  # monotonic seconds
    first_call_at: float | None = None
    attempts: int = 0
    first_contact_attempt: int | None = None
    converted_attempt: int | None = None
    exhausted: bool = False

    @property
    def done(self) -> bool:
        return self.converted_attempt is not None or self.exhausted


@dataclass
class Tally:
    leads: dict[str, LeadRecord] = field(default_factory=dict)
    duplicates: int = 0
    refused: int = 0
    calls_by_pool: Counter[str] = field(default_factory=Counter)
    calls_by_source: Counter[str] = field(default_factory=Counter)
    #: (source, disposition) → calls
    dispositions: Counter[tuple[str, str]] = field(default_factory=Counter)
    conversions_by_attempt: Counter[int] = field(default_factory=Counter)
    first_contacts_by_attempt: Counter[int] = field(default_factory=Counter)
    #: (pool, attempt) → conversions
    conversions_by_pool_attempt: Counter[tuple[str, int]] = field(
        default_factory=Counter
    )
    failed_outcomes: int = 0

    def accepted(
        self, lead_id: str, number: int, source: str, pool: str, at: float
    ) -> None:
        self.leads[lead_id] = LeadRecord(number, source, pool, at)

    def called(
        self,
        lead_id: str,
        *,
        attempt: int,
        call_target: int,
        disposition: str,
        contacted: bool,
        converted: bool,
        at: float,
    ) -> None:
        """One call the queue accepted an outcome for."""
        lead = self.leads[lead_id]
        lead.attempts = max(lead.attempts, attempt)
        if lead.first_call_at is None:
            lead.first_call_at = at
        self.calls_by_pool[lead.pool] += 1
        self.calls_by_source[lead.source] += 1
        self.dispositions[(lead.source, disposition)] += 1
        if contacted and lead.first_contact_attempt is None:
            lead.first_contact_attempt = attempt
            self.first_contacts_by_attempt[attempt] += 1
        if converted:
            lead.converted_attempt = attempt
            self.conversions_by_attempt[attempt] += 1
            self.conversions_by_pool_attempt[(lead.pool, attempt)] += 1
        elif attempt >= call_target:
            lead.exhausted = True

    @property
    def calls(self) -> int:
        return sum(self.calls_by_pool.values())

    @property
    def conversions(self) -> int:
        return sum(self.conversions_by_attempt.values())

    @property
    def exhausted(self) -> int:
        return sum(1 for lead in self.leads.values() if lead.exhausted)

    @property
    def open_leads(self) -> int:
        return sum(1 for lead in self.leads.values() if not lead.done)

    def leads_by(self, key: str) -> Counter[str]:
        """Accepted leads per ``pool`` or ``source``."""
        return Counter(getattr(lead, key) for lead in self.leads.values())

    def conversions_after(self, attempt: int, pool: str | None = None) -> int:
        return sum(
            count
            for (lead_pool, at), count in self.conversions_by_pool_attempt.items()
            if at > attempt and (pool is None or lead_pool == pool)
        )

    def conversions_in(self, pool: str) -> int:
        return sum(
            count
            for (lead_pool, _), count in self.conversions_by_pool_attempt.items()
            if lead_pool == pool
        )

    def speed_to_lead(self) -> float | None:
        """Median seconds from intake's answer to the first call's outcome, as
        the demo's agents saw it (intake and the queue time it precisely)."""
        waits = [
            lead.first_call_at - lead.accepted_at
            for lead in self.leads.values()
            if lead.first_call_at is not None
        ]
        return statistics.median(waits) if waits else None
