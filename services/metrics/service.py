"""The metrics service's decisions: folding events into counters, counting
planned attempts as they fall due, refreshing the gauges, and the reports.

Definitions (docs/metrics.md has them with a worked example):

- A lead's *slots* are the attempts its pool's cadence plans: attempt k at
  the round's start plus the first k gaps, for k up to the call target. A
  slot counts as *due* on its business day once its time has passed, unless
  the lead ended (or moved to another pool) before it.
- Penetration of a group over a window = Σ min(attemptsᵢ, dueᵢ) / Σ dueᵢ over
  the group's leads, attempts and due slots both counted inside the window;
  the uncapped ratio is Σ attemptsᵢ / Σ dueᵢ.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg
from prometheus_client import generate_latest

from services.metrics import repository
from services.metrics.folding import (
    DISPOSITIONS,
    Changes,
    Folder,
    Observation,
    lead_of,
    needs_slots,
)
from services.metrics.metrics import (
    ACTIVE_AGENTS,
    ATTEMPTS,
    ATTEMPTS_AT_CONTACT,
    ATTEMPTS_AT_CONVERSION,
    ATTEMPTS_PER_LEAD,
    EVENT_DELAY,
    GAUGES_REFRESHED,
    LIST_PENETRATION,
    OLDEST_UNCALLED,
    PENETRATION,
    RECOMPUTED,
    SPEED_TO_LEAD,
    TEAM_PENETRATION,
    UNCALLED,
    WINDOWS,
)
from services.metrics.schemas import (
    CohortGroupBy,
    GroupBy,
    PageKey,
    Window,
    decode_cursor,
    encode_cursor,
    parse_day,
    parse_window,
)
from services.metrics.settings import MetricsSettings
from shared.clock import Clock
from shared.db import Connection, is_transient
from shared.errors import NotFound
from shared.events import Envelope

logger = logging.getLogger(__name__)


class MetricsService:
    def __init__(
        self, *, pool: asyncpg.Pool, settings: MetricsSettings, clock: Clock
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._zone = settings.zone
        #: Observations of the batch being applied, made once it commits.
        self._staged: list[Observation] = []
        self._staged_events: list[Envelope] = []
        self._staged_attempts: collections.Counter[tuple[str, str]] = (
            collections.Counter()
        )
        self._rendered = b""
        #: Label sets each gauge was last given, to drop the vanished ones.
        self._gauge_labels: dict[str, set[tuple[str, ...]]] = {}

    # -- consuming ------------------------------------------------------------

    async def apply_events(
        self, connection: Connection, envelopes: Sequence[Envelope]
    ) -> None:
        """Fold a batch into the counters inside the consumer's transaction."""
        self._staged, self._staged_events = [], list(envelopes)
        self._staged_attempts = collections.Counter()
        lead_ids = [lead for lead in map(lead_of, envelopes) if lead is not None]
        if not lead_ids:
            return
        leads = await repository.lock_leads(connection, lead_ids)
        reslotted = [
            lead
            for envelope in envelopes
            if (lead := lead_of(envelope)) is not None
            and needs_slots(envelope, leads.get(lead))
        ]
        slots = await repository.lock_slots(connection, reslotted)
        changes: Changes = Folder(leads, slots, self._zone, reslotted).fold(envelopes)
        await repository.write(connection, changes)
        self._staged = changes.observations
        self._staged_attempts = changes.attempts

    def after_commit(self) -> None:
        """Make the committed batch's Prometheus observations."""
        now = self._clock.now()
        for envelope in self._staged_events:
            EVENT_DELAY.observe(max(0.0, (now - envelope.time).total_seconds()))
        for observation in self._staged:
            _observe(observation)
        for (pool, disposition), calls in self._staged_attempts.items():
            ATTEMPTS.labels(pool, disposition).inc(calls)
        self._staged, self._staged_events = [], []
        self._staged_attempts = collections.Counter()

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[Connection]:
        """A connection in a read-only transaction tuned for aggregation."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(readonly=True),
        ):
            await repository.tune_for_reports(connection)
            yield connection

    # -- due slots --------------------------------------------------------------

    async def count_due_slots(self) -> int:
        """Count every slot whose time has come; returns how many."""
        total = 0
        while True:
            async with self._pool.acquire() as connection:
                counted = await repository.count_due_slots(
                    connection, self._clock.now(), self._settings.slot_batch
                )
            total += counted
            if counted < self._settings.slot_batch:
                return total

    async def run_slot_counter(self) -> None:
        while True:
            try:
                await self.count_due_slots()
            except Exception as error:
                if not is_transient(error):
                    logger.exception("slots.count_failed")
                else:
                    logger.warning("slots.count_retry error=%r", error)
            await asyncio.sleep(self._settings.tick_seconds)

    # -- gauges -------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """Recompute every gauge from the counters."""
        now = self._clock.now()
        today = now.astimezone(self._zone).date()
        windows = [
            (name.removesuffix("d"), parse_window(name, today, self._zone).first)
            for name in WINDOWS
        ]
        async with self._reading() as connection:
            by_pool = await repository.gauge_penetration(connection, windows, today)
            by_team = await repository.gauge_team_penetration(
                connection, windows, today
            )
            pools = await repository.pool_gauges(connection)
            agents = await repository.active_agents(
                connection,
                now - dt.timedelta(seconds=self._settings.active_agent_seconds),
            )
            teams = await repository.known_teams(connection)
        self._set("penetration", PENETRATION, _by_window(by_pool, "pool", "source"))
        self._set("team_penetration", TEAM_PENETRATION, _by_window(by_team, "team"))
        self._set(
            "list",
            LIST_PENETRATION,
            {(r["pool"],): r["not_dialable"] / r["leads"] for r in pools},
        )
        self._set(
            "saturation",
            ATTEMPTS_PER_LEAD,
            {(r["pool"],): r["attempts"] / r["leads"] for r in pools},
        )
        self._set("uncalled", UNCALLED, {(r["pool"],): r["uncalled"] for r in pools})
        self._set(
            "oldest",
            OLDEST_UNCALLED,
            {
                (r["pool"],): (
                    max(0.0, (now - r["oldest_uncalled"]).total_seconds())
                    if r["oldest_uncalled"]
                    else 0.0
                )
                for r in pools
            },
        )
        active = {(name,): 0.0 for name in teams}
        active.update({(r["team"],): r["agents"] for r in agents})
        self._set("agents", ACTIVE_AGENTS, active)
        GAUGES_REFRESHED.set(now.timestamp())
        self._rendered = generate_latest(RECOMPUTED)

    def exposition(self) -> bytes:
        """The recomputed gauges as of the last refresh, for /metrics."""
        return self._rendered

    def _set(self, name: str, gauge: Any, values: Mapping[Any, float]) -> None:
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        for labels in self._gauge_labels.get(name, set()) - values.keys():
            gauge.remove(*labels)
        self._gauge_labels[name] = set(values)

    async def run_gauges(self) -> None:
        while True:
            try:
                await self.refresh_gauges()
            except Exception as error:  # noqa: BLE001 - next refresh retries
                logger.warning("gauges.refresh_failed error=%r", error)
            await asyncio.sleep(self._settings.gauge_seconds)

    # -- reports --------------------------------------------------------------

    def _today(self) -> dt.date:
        return self._clock.now().astimezone(self._zone).date()

    def window(self, text: str) -> Window:
        return parse_window(text, self._today(), self._zone)

    async def penetration(
        self, group_by: GroupBy, window: str, pool: str | None, source: str | None
    ) -> dict[str, Any]:
        span = self.window(window)
        async with self._reading() as connection:
            if group_by in ("agent", "team"):
                rows = await repository.penetration_by_worker(
                    connection, group_by, span.first, span.last, pool, source
                )
            else:
                rows = await repository.penetration_by_day_key(
                    connection, group_by, span.first, span.last, pool, source
                )
            by_disposition = await repository.dispositions(
                connection, group_by, span.first, span.last, pool, source
            )
            arrivals = await repository.arrivals(
                connection,
                group_by,
                span.since,
                span.until,
                self._zone.key,
                self._clock.now(),
                self._settings.fast_call_seconds,
                pool,
                source,
            )
        speed = {row["key"]: row for row in arrivals}
        calls = {row["key"]: row for row in by_disposition}
        counted = {row["key"]: row for row in rows}
        groups = []
        for key in sorted(counted.keys() | speed.keys()):
            groups.append(
                {group_by: key}
                | _penetration_figures(counted.get(key), group_by)
                | {
                    "attempts_by_disposition": {
                        name: calls[key][name] if key in calls else 0
                        for name in DISPOSITIONS
                    }
                }
                | _speed_figures(speed.get(key), self._settings.fast_call_seconds)
            )
        return {
            "group_by": group_by,
            "window": span.described(),
            "filters": {"pool": pool, "source": source},
            "groups": groups,
        }

    async def lead_penetration(self, lead_id: uuid.UUID) -> dict[str, Any]:
        async with self._reading() as connection:
            lead = await repository.lead(connection, lead_id)
            if lead is None:
                raise NotFound(f"no events seen for lead {lead_id}")
            days = await repository.lead_days(connection, lead_id)
            upcoming = await repository.next_slot(connection, lead_id)
        attempts_counted = sum(day["attempts"] for day in days)
        due = sum(day["scheduled"] for day in days)
        target = lead["call_target"]
        return {
            "lead_id": str(lead_id),
            "source": lead["source"],
            "pool": lead["pool"],
            "state": lead["state"],
            "received_at": _iso(lead["received_at"]),
            "attempts": lead["attempts"],
            "call_target": target,
            "target_total": lead["target_total"],
            "round": {
                "pool": lead["pool"],
                "started_at": _iso(lead["round_started_at"]),
                "attempts": lead["round_attempts"],
                "call_target": target,
                "target_penetration": (
                    min(lead["round_attempts"], target) / target if target else None
                ),
            },
            "attempts_due": due,
            "penetration": _ratio(min(attempts_counted, due), due),
            "uncapped_penetration": _ratio(attempts_counted, due),
            "next_attempt_due": (
                {"attempt": upcoming["attempt"], "at": _iso(upcoming["due_at"])}
                if upcoming
                else None
            ),
            "first_call_at": _iso(lead["first_call_at"]),
            "speed_to_lead_seconds": _speed(lead),
            "first_contact_attempt": lead["first_contact_attempt"],
            "converted_attempt": lead["converted_attempt"],
            "days": [
                {
                    "day": day["day"].isoformat(),
                    "pool": day["pool"],
                    "attempts": day["attempts"],
                    "attempts_due": day["scheduled"],
                    "penetration": _ratio(
                        min(day["attempts"], day["scheduled"]), day["scheduled"]
                    ),
                    "contacts": day["contacts"],
                    "conversions": day["conversions"],
                }
                for day in days
            ],
        }

    async def below_target(
        self,
        day: str | None,
        pool: str | None,
        source: str | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        on = parse_day(day) if day else self._today()
        after: PageKey | None = decode_cursor(cursor) if cursor else None
        async with self._reading() as connection:
            rows = await repository.below_target(
                connection, on, pool, source, after, limit + 1
            )
        page, more = rows[:limit], len(rows) > limit
        last = page[-1] if page else None
        return {
            "day": on.isoformat(),
            "timezone": self._zone.key,
            "leads": [
                {
                    "lead_id": str(row["lead_id"]),
                    "pool": row["pool"],
                    "source": row["source"] or None,
                    "attempts": row["attempts"],
                    "attempts_due": row["scheduled"],
                    "missing": row["missing"],
                    "penetration": row["penetration"],
                }
                for row in page
            ],
            "next_cursor": (
                encode_cursor(
                    (
                        last["penetration"],
                        -last["missing"],
                        last["lead_id"],
                        last["pool"],
                    )
                )
                if more and last
                else None
            ),
        }

    async def list_penetration(
        self,
        group_by: CohortGroupBy,
        window: str | None,
        pool: str | None,
        source: str | None,
    ) -> dict[str, Any]:
        span = self.window(window) if window else None
        async with self._reading() as connection:
            rows = await repository.cohort(
                connection,
                group_by,
                span.since if span else None,
                span.until if span else None,
                pool,
                source,
            )
        groups = []
        for row in rows:
            not_dialable = (
                row["exhausted"]
                + row["state_converted"]
                + row["invalid"]
                + row["opted_out"]
                + row["dnc"]
            )
            groups.append(
                {
                    group_by: row["key"],
                    "leads": row["leads"],
                    "not_dialable": {
                        "exhausted": row["exhausted"],
                        "converted": row["state_converted"],
                        "invalid": row["invalid"],
                        "opted_out": row["opted_out"],
                        "dnc": row["dnc"],
                    },
                    "list_penetration": _ratio(not_dialable, row["leads"]),
                    "attempts": row["attempts"],
                    "saturation": _ratio(row["attempts"], row["leads"]),
                    "leads_attempted": row["attempted"],
                    "unique_attempt_penetration": _ratio(
                        row["attempted"], row["leads"]
                    ),
                }
            )
        return {
            "group_by": group_by,
            "window": span.described() if span else None,
            "groups": groups,
        }

    async def scorecard(self, window: str) -> dict[str, Any]:
        span = self.window(window)
        async with self._reading() as connection:
            rows = await repository.cohort(
                connection, "source", span.since, span.until, None, None
            )
            duplicates = await repository.duplicates_by_source(
                connection, span.first, span.last
            )
        by_source = {row["key"]: row for row in rows}
        sources = []
        for name in sorted(by_source.keys() | duplicates.keys()):
            row = by_source.get(name) or _NO_LEADS
            leads, attempted = row["leads"], row["attempted"]
            duplicated = duplicates.get(name, 0)
            sources.append(
                {
                    "source": name,
                    "leads": leads,
                    "duplicates": duplicated,
                    "duplicate_rate": _ratio(duplicated, leads + duplicated),
                    "leads_attempted": attempted,
                    "attempts": row["attempts"],
                    "target_penetration": _ratio(row["capped"], row["target"]),
                    "saturation": _ratio(row["attempts"], leads),
                    "contacted": row["contacted"],
                    "converted": row["converted"],
                    "contact_rate": _ratio(row["contacted"], attempted),
                    "conversion_rate": _ratio(row["converted"], attempted),
                    "conversion_rate_all_leads": _ratio(row["converted"], leads),
                }
            )
        return {"window": span.described(), "sources": sources}

    async def attempts_distribution(
        self, window: str, pool: str | None, source: str | None
    ) -> dict[str, Any]:
        span = self.window(window)
        async with self._reading() as connection:
            rows = await repository.attempts_distribution(
                connection,
                span.since,
                span.until,
                self._clock.now(),
                self._settings.abandon_grace_seconds,
                pool,
                source,
            )
        marks = ("contacted", "converted", "exhausted", "abandoned")
        by_attempt: dict[int, dict[str, int]] = {}
        for row in rows:
            counts = by_attempt.setdefault(row["attempt"], dict.fromkeys(marks, 0))
            counts[row["mark"]] += row["leads"]
        conversions = sum(counts["converted"] for counts in by_attempt.values())
        late = sum(
            counts["converted"] for attempt, counts in by_attempt.items() if attempt > 3
        )
        return {
            "window": span.described(),
            "filters": {"pool": pool, "source": source},
            "attempts": [
                {
                    "attempt": attempt,
                    "first_contacted": counts["contacted"],
                    "converted": counts["converted"],
                    "exhausted": counts["exhausted"],
                    "abandoned": counts["abandoned"],
                }
                for attempt, counts in sorted(by_attempt.items())
            ],
            "conversions": conversions,
            "conversions_after_third_attempt": late,
            "share_lost_if_stopped_at_three": _ratio(late, conversions),
        }


def _by_window(rows: Sequence[Any], *keys: str) -> dict[tuple[str, ...], float]:
    """Gauge values per (keys…, window) from rows of due_<n>/capped_<n>."""
    values = {}
    for row in rows:
        for window in WINDOWS:
            name = window.removesuffix("d")
            due = row[f"due_{name}"]
            if due:
                labels = (*(row[key] for key in keys), window)
                values[labels] = row[f"capped_{name}"] / due
    return values


#: A scorecard source that sent only duplicates in the window.
_NO_LEADS = dict.fromkeys(
    ("leads", "attempted", "attempts", "capped", "target", "contacted", "converted"),
    0,
)


def _penetration_figures(row: Any, group_by: str) -> dict[str, Any]:
    leads = row["leads"] if row else 0
    due = row["scheduled"] if row else 0
    figures = {
        "leads": leads,
        "attempts": row["attempts"] if row else 0,
        "attempts_due": due,
        "penetration": _ratio(row["capped"], due) if row else None,
        "uncapped_penetration": _ratio(row["attempts"], due) if row else None,
        "contact_rate": _ratio(row["contacted"], leads) if row else None,
        "conversion_rate": _ratio(row["converted"], leads) if row else None,
    }
    if group_by in ("agent", "team"):
        figures["own_attempts"] = row["own_attempts"] if row else 0
    return figures


def _speed_figures(row: Any, fast_seconds: float) -> dict[str, Any]:
    settled = row["arrived"] - row["waiting"] if row else 0
    return {
        "new_leads": row["arrived"] if row else 0,
        "new_leads_called": row["called"] if row else 0,
        "speed_to_lead_seconds": {
            "p50": row["p50"] if row else None,
            "p90": row["p90"] if row else None,
        },
        "called_within_seconds": fast_seconds,
        "share_called_within": _ratio(row["fast"], settled) if row else None,
    }


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _speed(lead: Any) -> float | None:
    if lead["first_call_at"] is None or lead["received_at"] is None:
        return None
    return max(0.0, (lead["first_call_at"] - lead["received_at"]).total_seconds())


def _observe(observation: Observation) -> None:
    if observation.metric == "speed_to_lead":
        SPEED_TO_LEAD.labels(observation.pool).observe(observation.value)
    elif observation.metric == "attempts_at_contact":
        ATTEMPTS_AT_CONTACT.labels(observation.pool).observe(observation.value)
    elif observation.metric == "attempts_at_conversion":
        ATTEMPTS_AT_CONVERSION.labels(observation.pool).observe(observation.value)
