"""Every query of the metrics service.

Writes come from the consumer (one transaction per batch, rows locked in
lead-id order so concurrent batches and the slot counter cannot deadlock on
each other) and from the slot counter. Reads aggregate the day counters of a
window; none of them reads events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from services.metrics.folding import DISPOSITIONS, Changes, LeadRow, Slot
from shared.db import Connection

_LEAD_COLUMNS = LeadRow.columns()
_LEAD_TYPES = {
    "lead_id": "uuid",
    "received_at": "timestamptz",
    "round_started_at": "timestamptz",
    "first_call_at": "timestamptz",
    "last_call_at": "timestamptz",
    "first_contact_at": "timestamptz",
    "converted_at": "timestamptz",
    "ended_at": "timestamptz",
    "call_target": "int",
    "round_carried": "int",
    "round_attempts": "int",
    "target_total": "int",
    "attempts": "int",
    "first_contact_attempt": "int",
    "converted_attempt": "int",
    "duplicates": "int",
    "dnc": "bool",
    # A 2-D array cannot be unnested row by row; cadences travel as text.
    "cadence_seconds": "text",
}


def _lead_update_sql() -> str:
    # Every row exists and is locked (lock_leads), so a plain UPDATE: no
    # speculative insert per row as INSERT … ON CONFLICT would make.
    unnested = ", ".join(
        f"${index}::{_LEAD_TYPES.get(name, 'text')}[]"
        for index, name in enumerate(_LEAD_COLUMNS, start=1)
    )
    columns = ", ".join(_LEAD_COLUMNS)
    updates = ", ".join(
        f"{name} = rows.{name}::double precision[]"
        if name == "cadence_seconds"
        else f"{name} = rows.{name}"
        for name in _LEAD_COLUMNS
        if name != "lead_id"
    )
    return (
        f"UPDATE leads SET {updates} "
        f"FROM unnest({unnested}) AS rows({columns}) "
        "WHERE leads.lead_id = rows.lead_id"
    )


_LEAD_UPDATE = _lead_update_sql()


async def lock_leads(
    connection: Connection, lead_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, LeadRow]:
    """The stored rows of ``lead_ids``, locked for this transaction.

    An empty row is inserted for a lead not seen before, and locked too, so
    that two transactions folding events of one new lead take turns on its
    row instead of each writing a row that leaves out the other's events.
    Most batches are calls to known leads: then one statement does it all.
    New leads are locked after the known ones, so two batches could lock in
    crossed order; PostgreSQL then aborts one with a deadlock, which the
    consumer retries like any transient failure. (Partitions are keyed by
    lead, so two batches rarely share a lead at all.)
    """
    ordered = sorted(set(lead_ids))
    rows = await connection.fetch(_LOCK_LEADS, ordered)
    found = {row["lead_id"]: LeadRow.from_record(row) for row in rows}
    missing = [lead_id for lead_id in ordered if lead_id not in found]
    if missing:
        await connection.execute(
            """
            INSERT INTO leads (lead_id)
            SELECT unnest($1::uuid[]) ORDER BY 1
            ON CONFLICT DO NOTHING
            """,
            missing,
        )
        for row in await connection.fetch(_LOCK_LEADS, missing):
            found[row["lead_id"]] = LeadRow.from_record(row)
    return found


_LOCK_LEADS = (
    "SELECT * FROM leads WHERE lead_id = ANY($1::uuid[]) ORDER BY lead_id FOR UPDATE"
)


async def lock_slots(
    connection: Connection, lead_ids: Sequence[uuid.UUID]
) -> list[Slot]:
    if not lead_ids:
        return []
    rows = await connection.fetch(
        """
        SELECT * FROM slots WHERE lead_id = ANY($1::uuid[])
        ORDER BY lead_id, round_started_at, attempt
        FOR UPDATE
        """,
        sorted(set(lead_ids)),
    )
    return [Slot(**dict(row)) for row in rows]


async def write(connection: Connection, changes: Changes) -> None:
    """Write a folded batch: lead rows, slots, then the counters."""
    await _write_leads(connection, changes.leads.values())
    await _write_slots(connection, changes.slots.values())
    await _add_lead_days(connection, changes)
    await _add_lead_agent_days(connection, changes)
    await _add_group_days(connection, changes)
    await _touch_agents(connection, changes)


async def _write_leads(connection: Connection, leads: Iterable[LeadRow]) -> None:
    rows = sorted(leads, key=lambda lead: lead.lead_id)
    if not rows:
        return
    columns: list[list[Any]] = [[] for _ in _LEAD_COLUMNS]
    for lead in rows:
        for index, value in enumerate(lead.values()):
            columns[index].append(value)
    cadence = _LEAD_COLUMNS.index("cadence_seconds")
    columns[cadence] = [
        "{" + ",".join(repr(float(gap)) for gap in gaps) + "}"
        for gaps in columns[cadence]
    ]
    await connection.execute(_LEAD_UPDATE, *columns)


async def _write_slots(connection: Connection, slots: Iterable[Slot]) -> None:
    rows = sorted(slots, key=lambda s: (s.lead_id, s.round_started_at, s.attempt))
    if not rows:
        return
    await connection.execute(
        """
        INSERT INTO slots (lead_id, round_started_at, attempt, due_at, day, pool,
                           source, counted, cancelled)
        SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int[],
                             $4::timestamptz[], $5::date[], $6::text[], $7::text[],
                             $8::bool[], $9::bool[])
        ON CONFLICT (lead_id, round_started_at, attempt) DO UPDATE
        SET counted = EXCLUDED.counted, cancelled = EXCLUDED.cancelled
        """,
        [s.lead_id for s in rows],
        [s.round_started_at for s in rows],
        [s.attempt for s in rows],
        [s.due_at for s in rows],
        [s.day for s in rows],
        [s.pool for s in rows],
        [s.source for s in rows],
        [s.counted for s in rows],
        [s.cancelled for s in rows],
    )


async def _add_lead_days(connection: Connection, changes: Changes) -> None:
    keys = sorted(changes.lead_days)
    if not keys:
        return
    entries = [changes.lead_days[key] for key in keys]
    await connection.execute(
        """
        INSERT INTO lead_days AS d (lead_id, day, pool, source, attempts,
                                    scheduled, contacts, conversions)
        SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::text[],
                             $5::int[], $6::int[], $7::int[], $8::int[])
        ON CONFLICT (lead_id, day, pool) DO UPDATE SET
            attempts = d.attempts + EXCLUDED.attempts,
            scheduled = d.scheduled + EXCLUDED.scheduled,
            contacts = d.contacts + EXCLUDED.contacts,
            conversions = d.conversions + EXCLUDED.conversions
        """,
        [key[0] for key in keys],
        [key[1] for key in keys],
        [key[2] for key in keys],
        [source for source, _ in entries],
        [counts.attempts for _, counts in entries],
        [counts.scheduled for _, counts in entries],
        [counts.contacts for _, counts in entries],
        [counts.conversions for _, counts in entries],
    )


async def _add_lead_agent_days(connection: Connection, changes: Changes) -> None:
    keys = sorted(changes.lead_agent_days)
    if not keys:
        return
    await connection.execute(
        """
        INSERT INTO lead_agent_days AS d (lead_id, day, agent, team, attempts)
        SELECT * FROM unnest($1::uuid[], $2::date[], $3::text[], $4::text[],
                             $5::int[])
        ON CONFLICT (lead_id, day, agent) DO UPDATE SET
            attempts = d.attempts + EXCLUDED.attempts, team = EXCLUDED.team
        """,
        [key[0] for key in keys],
        [key[1] for key in keys],
        [key[2] for key in keys],
        [changes.lead_agent_days[key][0] for key in keys],
        [changes.lead_agent_days[key][1] for key in keys],
    )


_GROUP_COUNTERS = ("attempts", "contacts", "conversions", *DISPOSITIONS, "duplicates")


def _group_days_sql() -> str:
    counters = ", ".join(_GROUP_COUNTERS)
    arrays = ", ".join(
        f"${index}::int[]" for index in range(6, 6 + len(_GROUP_COUNTERS))
    )
    sums = ", ".join(f"{name} = g.{name} + EXCLUDED.{name}" for name in _GROUP_COUNTERS)
    return f"""
        INSERT INTO group_days AS g (day, pool, source, team, agent, {counters})
        SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[],
                             $5::text[], {arrays})
        ON CONFLICT (day, pool, source, team, agent) DO UPDATE SET {sums}
        """


_GROUP_DAYS_UPSERT = _group_days_sql()


async def _add_group_days(connection: Connection, changes: Changes) -> None:
    keys = sorted(changes.group_days)
    if not keys:
        return
    groups = [changes.group_days[key] for key in keys]
    counters: list[list[int]] = [
        [g.attempts for g in groups],
        [g.contacts for g in groups],
        [g.conversions for g in groups],
        *([g.by_disposition[name] for g in groups] for name in DISPOSITIONS),
        [g.duplicates for g in groups],
    ]
    keyed = [[key[index] for key in keys] for index in range(5)]
    await connection.execute(_GROUP_DAYS_UPSERT, *keyed, *counters)


async def _touch_agents(connection: Connection, changes: Changes) -> None:
    agents = sorted(changes.agents)
    if not agents:
        return
    await connection.execute(
        """
        INSERT INTO agents AS a (agent, team, last_call_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
        ON CONFLICT (agent) DO UPDATE SET
            team = CASE WHEN EXCLUDED.last_call_at >= a.last_call_at
                        THEN EXCLUDED.team ELSE a.team END,
            last_call_at = greatest(a.last_call_at, EXCLUDED.last_call_at)
        """,
        agents,
        [changes.agents[agent][0] for agent in agents],
        [changes.agents[agent][1] for agent in agents],
    )


async def count_due_slots(connection: Connection, now: dt.datetime, limit: int) -> int:
    """Count up to ``limit`` slots whose time has come into their lead's day.

    Slots a consumer batch holds are skipped and counted on a later pass, so
    the counter never waits behind the consumer (and several copies share
    the work). Returns how many were counted.
    """
    counted = await connection.fetchval(
        """
        WITH due AS (
            SELECT lead_id, round_started_at, attempt FROM slots
            WHERE NOT counted AND NOT cancelled AND due_at <= $1
            ORDER BY due_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        ), marked AS (
            UPDATE slots AS s SET counted = true
            FROM due
            WHERE s.lead_id = due.lead_id
              AND s.round_started_at = due.round_started_at
              AND s.attempt = due.attempt
            RETURNING s.lead_id, s.day, s.pool, s.source
        ), per_day AS (
            SELECT lead_id, day, pool, min(source) AS source, count(*)::int AS n
            FROM marked GROUP BY lead_id, day, pool
        ), added AS (
            INSERT INTO lead_days AS d (lead_id, day, pool, source, scheduled)
            SELECT lead_id, day, pool, source, n FROM per_day
            ORDER BY lead_id, day, pool
            ON CONFLICT (lead_id, day, pool) DO UPDATE
            SET scheduled = d.scheduled + EXCLUDED.scheduled
            RETURNING 1
        )
        -- `added` runs whether or not it is read, as every data-modifying CTE.
        SELECT count(*) FROM marked
        """,
        now,
        limit,
    )
    return int(counted or 0)


# -- reports ------------------------------------------------------------------

#: Memory a report's aggregation may use before it spills to disk. A 30-day
#: window over 100 000 active leads groups about 500 000 day rows: at the
#: server's usual 4 MB it sorts them on disk (1.6 s), here it hashes them in
#: memory (0.5 s). Per transaction, so the consumer's writes are unaffected.
REPORT_WORK_MEM = "64MB"


async def tune_for_reports(connection: Connection) -> None:
    """Settings for the rest of a report's transaction. JIT compilation is off:
    it costs more than it saves on aggregations of this size."""
    await connection.execute(
        f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'; SET LOCAL jit = off"
    )


#: The expression each group_by key stands for in lead_days.
_DAY_KEYS = {"pool": "pool", "source": "source", "day": "day::text"}
#: The same keys on the leads table, for arrival (speed-to-lead) figures.
_ARRIVAL_KEYS = {
    "pool": "coalesce(first_pool, '')",
    "source": "coalesce(source, '')",
    "day": "",  # set per query: it needs the business zone as a parameter
    "agent": "coalesce(first_call_agent, '')",
    "team": "coalesce(first_call_team, '')",
}


def _filters(
    first: int,
    pool: str | None,
    source: str | None,
    prefix: str = "",
    pool_column: str = "pool",
) -> tuple[str, list[Any]]:
    """``AND`` clauses for the given pool and source, numbered from ``$first``,
    and their values. Cohort queries filter on a lead's ``first_pool``."""
    clauses, values = [], []
    for column, value in ((pool_column, pool), ("source", source)):
        if value is not None:
            values.append(value)
            clauses.append(f"AND {prefix}{column} = ${first + len(values) - 1}")
    return " ".join(clauses), values


async def penetration_by_day_key(
    connection: Connection,
    group_by: str,
    first_day: dt.date,
    last_day: dt.date,
    pool: str | None,
    source: str | None,
) -> list[Any]:
    """Per group of lead_days in the window: leads, attempts, scheduled
    attempts, Σ min(attempts, scheduled) per lead, contacted and converted
    leads. A lead in two groups counts in each with its own attempts."""
    key = _DAY_KEYS[group_by]
    where, values = _filters(3, pool, source)
    return await connection.fetch(
        f"""
        WITH per_lead AS (
            SELECT {key} AS key, lead_id,
                   sum(attempts) AS attempts, sum(scheduled) AS scheduled,
                   bool_or(contacts > 0) AS contacted,
                   bool_or(conversions > 0) AS converted
            FROM lead_days
            WHERE day BETWEEN $1 AND $2 {where}
            GROUP BY 1, lead_id
            -- A slot counted and then taken back leaves a row of zeros.
            HAVING sum(attempts) > 0 OR sum(scheduled) > 0
        )
        SELECT key, count(*) AS leads, sum(attempts)::bigint AS attempts,
               sum(scheduled)::bigint AS scheduled,
               sum(least(attempts, scheduled))::bigint AS capped,
               count(*) FILTER (WHERE contacted) AS contacted,
               count(*) FILTER (WHERE converted) AS converted
        FROM per_lead
        GROUP BY key
        ORDER BY key
        """,
        first_day,
        last_day,
        *values,
    )


async def penetration_by_worker(
    connection: Connection,
    group_by: str,
    first_day: dt.date,
    last_day: dt.date,
    pool: str | None,
    source: str | None,
) -> list[Any]:
    """Per agent (team): the leads it called in the window and their figures
    there, with its own share of the attempts."""
    worker = "agent" if group_by == "agent" else "team"
    where, values = _filters(3, pool, source, prefix="d.")
    return await connection.fetch(
        f"""
        WITH worked AS (
            SELECT {worker} AS key, lead_id, sum(attempts) AS own
            FROM lead_agent_days
            WHERE day BETWEEN $1 AND $2
            GROUP BY 1, lead_id
        ), per_lead AS (
            SELECT d.lead_id, sum(d.attempts) AS attempts,
                   sum(d.scheduled) AS scheduled,
                   bool_or(d.contacts > 0) AS contacted,
                   bool_or(d.conversions > 0) AS converted
            -- Every lead of the window, not only those worked: restricting
            -- to `worked` made the planner guess 200 leads and probe the
            -- index once per lead (3.5 s at 100 000 leads; this is 0.5 s).
            FROM lead_days AS d
            WHERE d.day BETWEEN $1 AND $2 {where}
            GROUP BY d.lead_id
            HAVING sum(d.attempts) > 0 OR sum(d.scheduled) > 0
        )
        SELECT w.key, count(*) AS leads, sum(p.attempts)::bigint AS attempts,
               sum(p.scheduled)::bigint AS scheduled,
               sum(least(p.attempts, p.scheduled))::bigint AS capped,
               count(*) FILTER (WHERE p.contacted) AS contacted,
               count(*) FILTER (WHERE p.converted) AS converted,
               sum(w.own)::bigint AS own_attempts
        FROM worked AS w JOIN per_lead AS p USING (lead_id)
        GROUP BY w.key
        ORDER BY w.key
        """,
        first_day,
        last_day,
        *values,
    )


_GROUP_KEYS = {
    "pool": "pool",
    "source": "source",
    "agent": "agent",
    "team": "team",
    "day": "day::text",
}


async def dispositions(
    connection: Connection,
    group_by: str,
    first_day: dt.date,
    last_day: dt.date,
    pool: str | None,
    source: str | None,
) -> list[Any]:
    """Per group: the window's attempts by disposition, from group_days."""
    key = _GROUP_KEYS[group_by]
    where, values = _filters(3, pool, source)
    sums = ", ".join(f"sum({name})::bigint AS {name}" for name in DISPOSITIONS)
    return await connection.fetch(
        f"""
        SELECT {key} AS key, {sums} FROM group_days
        WHERE day BETWEEN $1 AND $2 AND attempts > 0 {where}
        GROUP BY 1
        """,
        first_day,
        last_day,
        *values,
    )


async def arrivals(
    connection: Connection,
    group_by: str,
    since: dt.datetime,
    until: dt.datetime,
    zone: str,
    now: dt.datetime,
    fast_seconds: float,
    pool: str | None,
    source: str | None,
) -> list[Any]:
    """Per group of leads that arrived in [since, until): how many, how fast
    they were first called (p50/p90 seconds), and how many within
    ``fast_seconds``; ``waiting`` are uncalled ones that still can be."""
    values: list[Any] = [since, until, now, fast_seconds]
    key = _ARRIVAL_KEYS[group_by]
    if group_by == "day":
        values.append(zone)
        key = f"(received_at AT TIME ZONE ${len(values)})::date::text"
    # Agents and teams own the leads they called first; nobody owns the rest.
    clauses = {
        "agent": ["AND first_call_agent IS NOT NULL"],
        "team": ["AND first_call_at IS NOT NULL"],
    }.get(group_by, [])
    where, filters = _filters(len(values) + 1, pool, source, pool_column="first_pool")
    clauses.append(where)
    values += filters
    # greatest() skips NULLs, so it alone would rate an uncalled lead as
    # called at once (0 s) in the percentiles and the called-within count.
    speed = (
        "CASE WHEN first_call_at IS NOT NULL"
        " THEN greatest(0, extract(epoch FROM first_call_at - received_at)) END"
    )
    return await connection.fetch(
        f"""
        SELECT {key} AS key, count(*) AS arrived,
               count(first_call_at) AS called,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {speed}) AS p50,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY {speed}) AS p90,
               count(*) FILTER (WHERE {speed} <= $4::float8) AS fast,
               count(*) FILTER (
                   WHERE first_call_at IS NULL
                     AND received_at > $3::timestamptz
                                       - make_interval(secs => $4::float8)
               ) AS waiting
        FROM leads
        -- A number on the DNC list is not to be called: not a lead to be fast on.
        WHERE received_at >= $1 AND received_at < $2 AND NOT dnc {" ".join(clauses)}
        GROUP BY 1
        """,
        *values,
    )


async def lead(connection: Connection, lead_id: uuid.UUID) -> Any:
    return await connection.fetchrow("SELECT * FROM leads WHERE lead_id = $1", lead_id)


async def lead_days(connection: Connection, lead_id: uuid.UUID) -> list[Any]:
    return await connection.fetch(
        """
        SELECT day, pool, source, attempts, scheduled, contacts, conversions
        FROM lead_days
        WHERE lead_id = $1 AND (attempts > 0 OR scheduled > 0)
        ORDER BY day, pool
        """,
        lead_id,
    )


async def next_slot(connection: Connection, lead_id: uuid.UUID) -> Any:
    return await connection.fetchrow(
        """
        SELECT attempt, due_at FROM slots
        WHERE lead_id = $1 AND NOT counted AND NOT cancelled
        ORDER BY due_at LIMIT 1
        """,
        lead_id,
    )


async def below_target(
    connection: Connection,
    day: dt.date,
    pool: str | None,
    source: str | None,
    after: tuple[float, int, uuid.UUID, str] | None,
    limit: int,
) -> list[Any]:
    """Rows of lead_days on ``day`` with fewer attempts than slots due, worst
    first: lowest penetration, then most attempts missing, then lead id and
    pool. ``after`` is the sort key of the last row of the previous page."""
    where, values = _filters(2, pool, source)
    position = len(values) + 2
    page = ""
    if after is not None:
        page = (
            f"AND (penetration, -missing, lead_id, pool) > (${position}::float8,"
            f" ${position + 1}::int, ${position + 2}::uuid, ${position + 3}::text)"
        )
        values += list(after)
    values.append(limit)
    return await connection.fetch(
        f"""
        SELECT * FROM (
            SELECT lead_id, pool, source, attempts, scheduled,
                   scheduled - attempts AS missing,
                   attempts::float8 / scheduled AS penetration
            FROM lead_days
            WHERE day = $1 AND attempts < scheduled {where}
        ) AS short
        WHERE true {page}
        ORDER BY penetration, missing DESC, lead_id, pool
        LIMIT ${len(values) + 1}
        """,
        day,
        *values,
    )


#: Keys of cohort reports (leads by their arrival) on the leads table.
_COHORT_KEYS = {"pool": "coalesce(pool, '')", "source": "coalesce(source, '')"}


async def cohort(
    connection: Connection,
    group_by: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    pool: str | None,
    source: str | None,
) -> list[Any]:
    """Per group of leads (arrived in [since, until) when given): the counts
    behind list penetration, saturation, unique-attempt penetration and the
    source scorecard."""
    key = _COHORT_KEYS[group_by]
    # Only a window's bounds are parameters: "$1 IS NULL OR …" would keep a
    # generic plan off the arrival index.
    bounds = [] if since is None or until is None else [since, until]
    arrived = "AND received_at >= $1 AND received_at < $2" if bounds else ""
    where, values = _filters(len(bounds) + 1, pool, source)
    return await connection.fetch(
        f"""
        SELECT {key} AS key, count(*) AS leads,
               count(*) FILTER (WHERE attempts > 0) AS attempted,
               coalesce(sum(attempts), 0)::bigint AS attempts,
               -- Leads on the DNC list have no attempts due, hence no target.
               coalesce(sum(target_total) FILTER (WHERE NOT dnc), 0)::bigint
                   AS target,
               coalesce(
                   sum(least(attempts, target_total)) FILTER (WHERE NOT dnc), 0
               )::bigint AS capped,
               count(*) FILTER (WHERE first_contact_attempt IS NOT NULL) AS contacted,
               count(*) FILTER (WHERE converted_attempt IS NOT NULL) AS converted,
               count(*) FILTER (WHERE state = 'exhausted') AS exhausted,
               count(*) FILTER (WHERE state = 'converted') AS state_converted,
               count(*) FILTER (WHERE state = 'invalid') AS invalid,
               count(*) FILTER (WHERE state = 'opted_out') AS opted_out,
               count(*) FILTER (WHERE state = 'open' AND dnc) AS dnc,
               coalesce(sum(duplicates), 0)::bigint AS duplicates
        FROM leads
        WHERE received_at IS NOT NULL {arrived} {where}
        GROUP BY 1
        ORDER BY 1
        """,
        *bounds,
        *values,
    )


async def duplicates_by_source(
    connection: Connection, first_day: dt.date, last_day: dt.date
) -> dict[str, int]:
    """Duplicates each source sent in the window (by the duplicate's day)."""
    rows = await connection.fetch(
        """
        SELECT source, sum(duplicates)::bigint AS duplicates FROM group_days
        WHERE day BETWEEN $1 AND $2 AND duplicates > 0
        GROUP BY source
        """,
        first_day,
        last_day,
    )
    return {row["source"]: row["duplicates"] for row in rows}


async def attempts_distribution(
    connection: Connection,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
    grace_seconds: float,
    pool: str | None,
    source: str | None,
) -> list[Any]:
    """Per attempt number, for leads that arrived in [since, until): how many
    were first contacted at it, converted at it, ended exhausted after it, and
    were abandoned after it — still open, yet not called for longer than
    the cadence's next gap plus ``grace_seconds``."""
    where, values = _filters(5, pool, source, pool_column="first_pool")
    return await connection.fetch(
        f"""
        WITH cohort AS (
            SELECT * FROM leads
            WHERE received_at >= $1 AND received_at < $2 {where}
        ), marks AS (
            SELECT first_contact_attempt AS attempt, 'contacted' AS mark
            FROM cohort WHERE first_contact_attempt IS NOT NULL
            UNION ALL
            SELECT converted_attempt, 'converted'
            FROM cohort WHERE converted_attempt IS NOT NULL
            UNION ALL
            SELECT attempts, 'exhausted' FROM cohort WHERE state = 'exhausted'
            UNION ALL
            SELECT attempts, 'abandoned' FROM cohort
            WHERE state = 'open' AND NOT dnc AND cardinality(cadence_seconds) > 0
              -- greatest() skips NULLs: the round's start when never called
              AND greatest(last_call_at, round_started_at)
                  + make_interval(secs => cadence_seconds[
                        least(round_attempts + 1, cardinality(cadence_seconds))]
                        + $4::float8)
                  < $3::timestamptz
        )
        SELECT attempt, mark, count(*) AS leads FROM marks
        GROUP BY attempt, mark ORDER BY attempt, mark
        """,
        since,
        until,
        now,
        grace_seconds,
        *values,
    )


async def gauge_penetration(
    connection: Connection, windows: Sequence[tuple[str, dt.date]], last_day: dt.date
) -> list[Any]:
    """Capped penetration per (pool, source) for several windows ending on
    ``last_day``, each named with its first day, in one pass over lead_days.
    Rows: pool, source, then ``due_<name>`` and ``capped_<name>`` each."""
    per_lead, totals = _window_columns(windows, first=3)
    return await connection.fetch(
        f"""
        WITH per_lead AS (
            SELECT pool, source, lead_id, {per_lead}
            FROM lead_days WHERE day BETWEEN $1 AND $2
            GROUP BY pool, source, lead_id
        )
        SELECT pool, source, {totals} FROM per_lead GROUP BY pool, source
        """,
        min(first for _, first in windows),
        last_day,
        *(first for _, first in windows),
    )


async def gauge_team_penetration(
    connection: Connection, windows: Sequence[tuple[str, dt.date]], last_day: dt.date
) -> list[Any]:
    """The same per team: the leads each team called in each window."""
    per_lead, _ = _window_columns(windows, first=3)
    totals = ", ".join(
        f"sum(p.due_{name}) FILTER (WHERE w.last_day >= ${index})::bigint"
        f" AS due_{name}, sum(least(p.made_{name}, p.due_{name}))"
        f" FILTER (WHERE w.last_day >= ${index})::bigint AS capped_{name}"
        for index, (name, _) in enumerate(windows, start=3)
    )
    return await connection.fetch(
        f"""
        WITH worked AS (
            SELECT team, lead_id, max(day) AS last_day FROM lead_agent_days
            WHERE day BETWEEN $1 AND $2
            GROUP BY team, lead_id
        ), per_lead AS (
            SELECT lead_id, {per_lead}
            FROM lead_days WHERE day BETWEEN $1 AND $2
            GROUP BY lead_id
        )
        SELECT w.team, {totals}
        FROM worked AS w JOIN per_lead AS p USING (lead_id)
        GROUP BY w.team
        """,
        min(first for _, first in windows),
        last_day,
        *(first for _, first in windows),
    )


def _window_columns(
    windows: Sequence[tuple[str, dt.date]], first: int
) -> tuple[str, str]:
    """Per-lead sums of attempts and due slots for each window (``$first`` on
    are the windows' first days), and their capped totals per group."""
    per_lead = ", ".join(
        f"sum(attempts) FILTER (WHERE day >= ${index}) AS made_{name},"
        f" sum(scheduled) FILTER (WHERE day >= ${index}) AS due_{name}"
        for index, (name, _) in enumerate(windows, start=first)
    )
    totals = ", ".join(
        f"sum(due_{name})::bigint AS due_{name},"
        f" sum(least(made_{name}, due_{name}))::bigint AS capped_{name}"
        for name, _ in windows
    )
    return per_lead, totals


async def pool_gauges(connection: Connection) -> list[Any]:
    """Per current pool: leads, not dialable, attempts, and the open leads
    never called with the arrival of the oldest."""
    return await connection.fetch(
        """
        SELECT pool, count(*) AS leads,
               count(*) FILTER (WHERE state <> 'open' OR dnc) AS not_dialable,
               coalesce(sum(attempts), 0)::bigint AS attempts,
               count(*) FILTER (WHERE state = 'open' AND attempts = 0 AND NOT dnc)
                   AS uncalled,
               min(coalesce(received_at, round_started_at)) FILTER (
                   WHERE state = 'open' AND attempts = 0 AND NOT dnc
               ) AS oldest_uncalled
        FROM leads WHERE pool IS NOT NULL
        GROUP BY pool
        """
    )


async def active_agents(connection: Connection, since: dt.datetime) -> list[Any]:
    return await connection.fetch(
        """
        SELECT team, count(*) AS agents FROM agents
        WHERE last_call_at >= $1 GROUP BY team
        """,
        since,
    )


async def known_teams(connection: Connection) -> list[str]:
    rows = await connection.fetch("SELECT DISTINCT team FROM agents")
    return [row["team"] for row in rows]
