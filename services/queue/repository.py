"""Every SQL statement of the queue service.

The two hot paths, leasing and recording a call, are one statement each (plus
the outbox insert riding along), so a next-lead or an outcome costs a handful
of round trips whatever the pool's size. Functions take a connection the
caller owns and never commit it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.db import Connection
from shared.events import Envelope
from shared.outbox import outbox_arguments, outbox_insert

#: "Never", for a lead held off the queue (as in SQL below: asyncpg would read
#: PostgreSQL's 'infinity' back as a naive datetime).
FOREVER = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
#: A window that has "closed" long ago: the scheduler's mark for re-planning.
CLOSED = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TERMINAL_STATES = ("converted", "exhausted", "invalid", "opted_out", "not_callable")
STATES = ("waiting", "ready", "leased", *TERMINAL_STATES)


@dataclass
class Lead:
    """A row of ``leads``; the service changes fields and saves it back."""

    lead_id: uuid.UUID
    pool: str
    source: str | None
    campaign: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    email: str | None
    country: str | None
    region: str | None
    timezones: list[str]
    received_at: dt.datetime
    queued_at: dt.datetime
    state: str
    attempts: int
    call_target: int
    last_call_at: dt.datetime | None
    recent_calls: list[dt.datetime]
    due_at: dt.datetime
    closes_at: dt.datetime
    wait_reason: str | None
    priority_class: int
    planned_at: dt.datetime
    planned_slot: int
    weight: float
    callback_at: dt.datetime | None
    reserved_agent: str | None
    reserved_until: dt.datetime | None
    lease_id: uuid.UUID | None
    leased_agent: str | None
    lease_expires_at: dt.datetime | None
    ended_at: dt.datetime | None
    updated_at: dt.datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> Lead:
        return cls(**{name: record[name] for name in _LEAD_FIELDS})


_LEAD_FIELDS = tuple(field.name for field in dataclasses.fields(Lead))
LEAD_COLUMNS = ", ".join(_LEAD_FIELDS)
_PREFIXED = ", ".join(f"l.{name}" for name in _LEAD_FIELDS)
#: Columns an update may change (identity and contact data stay).
_MUTABLE = tuple(
    name
    for name in _LEAD_FIELDS
    if name not in ("lead_id", "source", "received_at", "queued_at")
)


def _lead_values(lead: Lead) -> list[Any]:
    return [getattr(lead, name) for name in _LEAD_FIELDS]


# --- pools and routing ------------------------------------------------------


async def pools(connection: Connection) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT name, rules, created_at, updated_at FROM pools ORDER BY name"
    )


async def pool(connection: Connection, name: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT name, rules, created_at, updated_at FROM pools WHERE name = $1", name
    )


async def save_pool(
    connection: Connection, name: str, rules: dict[str, Any], now: dt.datetime
) -> asyncpg.Record:
    row = await connection.fetchrow(
        """
        INSERT INTO pools (name, rules, created_at, updated_at)
        VALUES ($1, $2, $3, $3)
        ON CONFLICT (name) DO UPDATE SET rules = excluded.rules, updated_at = $3
        RETURNING name, rules, created_at, updated_at, (xmax = 0) AS created
        """,
        name,
        rules,
        now,
    )
    assert row is not None
    return row


async def missing_pools(connection: Connection, names: Sequence[str]) -> list[str]:
    rows = await connection.fetch(
        """
        SELECT wanted.name FROM unnest($1::text[]) AS wanted(name)
        WHERE NOT EXISTS (SELECT 1 FROM pools WHERE pools.name = wanted.name)
        """,
        list(names),
    )
    return [row["name"] for row in rows]


async def routing(connection: Connection) -> tuple[str, list[asyncpg.Record]]:
    default = await connection.fetchval("SELECT default_pool FROM routing")
    routes = await connection.fetch(
        "SELECT source, campaign, pool FROM routes ORDER BY source, campaign"
    )
    return default, routes


async def replace_routing(
    connection: Connection, default_pool: str, routes: Sequence[tuple[str, str, str]]
) -> None:
    await connection.execute("UPDATE routing SET default_pool = $1", default_pool)
    await connection.execute("DELETE FROM routes")
    await connection.execute(
        """
        INSERT INTO routes (source, campaign, pool)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
        """,
        [route[0] for route in routes],
        [route[1] for route in routes],
        [route[2] for route in routes],
    )


async def route_for(
    connection: Connection, source: str | None, campaign: str | None
) -> str:
    """The pool for a lead: the most specific route, else the default pool."""
    pool_name: str | None = await connection.fetchval(
        """
        SELECT pool FROM routes
        WHERE (source = $1 OR source = '*') AND (campaign = $2 OR campaign = '')
        ORDER BY source = '*', campaign = ''
        LIMIT 1
        """,
        source or "",
        campaign or "",
    )
    if pool_name is None:
        pool_name = await connection.fetchval("SELECT default_pool FROM routing")
    assert pool_name is not None
    return pool_name


# --- agents -----------------------------------------------------------------

_AGENT_COLUMNS = """
    a.agent_id, a.pools, a.team, a.status, a.status_at, a.leases, a.releases,
    a.expired_leases,
    (SELECT l.lease_id FROM leads l
     WHERE l.state = 'leased' AND l.leased_agent = a.agent_id LIMIT 1) AS open_lease
"""


async def agent(connection: Connection, agent_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT {_AGENT_COLUMNS} FROM agents a WHERE a.agent_id = $1", agent_id
    )


async def save_agent(
    connection: Connection,
    agent_id: str,
    pools: Sequence[str],
    team: str | None,
    now: dt.datetime,
) -> bool:
    """Creates or updates the agent; True when it was created."""
    created: bool = await connection.fetchval(
        """
        INSERT INTO agents (agent_id, pools, team, status, status_at, created_at,
                            updated_at)
        VALUES ($1, $2, $3, 'offline', $4, $4, $4)
        ON CONFLICT (agent_id) DO UPDATE
            SET pools = excluded.pools, team = excluded.team, updated_at = $4
        RETURNING xmax = 0
        """,
        agent_id,
        list(pools),
        team,
        now,
    )
    return created


async def lock_agent(connection: Connection, agent_id: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        f"SELECT {_AGENT_COLUMNS} FROM agents a WHERE a.agent_id = $1 FOR UPDATE",
        agent_id,
    )


async def set_agent_status(
    connection: Connection, agent_id: str, status: str, now: dt.datetime
) -> None:
    await connection.execute(
        """
        UPDATE agents SET status = $2, status_at = $3, updated_at = $3
        WHERE agent_id = $1 AND status IS DISTINCT FROM $2
        """,
        agent_id,
        status,
        now,
    )


# --- leads ------------------------------------------------------------------


async def insert_lead(connection: Connection, lead: Lead) -> bool:
    """Stores a new lead and its phone's row; False if the lead was known."""
    placeholders = ", ".join(f"${index}" for index in range(1, len(_LEAD_FIELDS) + 1))
    inserted = await connection.fetchval(
        f"""
        WITH lead AS (
            INSERT INTO leads ({LEAD_COLUMNS}) VALUES ({placeholders})
            ON CONFLICT (lead_id) DO NOTHING
            RETURNING phone
        ), phone AS (
            INSERT INTO phones (phone) SELECT phone FROM lead WHERE phone IS NOT NULL
            ON CONFLICT (phone) DO NOTHING
        )
        SELECT count(*) FROM lead
        """,
        *_lead_values(lead),
    )
    return bool(inserted)


async def lead(
    connection: Connection, lead_id: uuid.UUID, *, for_update: bool = False
) -> Lead | None:
    lock = "FOR UPDATE" if for_update else ""
    record = await connection.fetchrow(
        f"SELECT {LEAD_COLUMNS} FROM leads WHERE lead_id = $1 {lock}", lead_id
    )
    return Lead.from_record(record) if record else None


@dataclass(frozen=True)
class CallContext:
    """What recording an outcome reads, fetched (and the lead locked) at once."""

    lead: Lead
    phone: dict[str, Any] | None
    team: str | None
    agent_attempts: int
    #: The lead's number is on the DNC list (listed while it was on lease).
    listed: bool


async def call_context(
    connection: Connection, lease_id: uuid.UUID
) -> CallContext | None:
    """The leased lead (locked), its number's history, the agent's team and
    the agent's attempts on this lead; None when no open lease has this id.

    The number's row is not locked: the lease holds the number, and the call
    statement merges its history rather than overwriting it.
    """
    record = await connection.fetchrow(
        f"""
        SELECT {_PREFIXED},
               p.phone AS number, p.recent_calls AS number_recent_calls,
               p.lifetime_calls AS number_lifetime_calls,
               p.leased_until AS number_leased_until,
               p.blocked_until AS number_blocked_until,
               a.team AS agent_team, coalesce(per_agent.attempts, 0) AS agent_attempts,
               EXISTS (SELECT 1 FROM dnc WHERE dnc.phone = l.phone) AS listed
        FROM leads l
        LEFT JOIN phones p ON p.phone = l.phone
        LEFT JOIN agents a ON a.agent_id = l.leased_agent
        LEFT JOIN lead_agents per_agent
            ON per_agent.lead_id = l.lead_id AND per_agent.agent_id = l.leased_agent
        WHERE l.lease_id = $1
        FOR UPDATE OF l
        """,
        lease_id,
    )
    if record is None:
        return None
    phone_state = None
    if record["number"] is not None:
        phone_state = {
            "phone": record["number"],
            "recent_calls": record["number_recent_calls"],
            "lifetime_calls": record["number_lifetime_calls"],
            "leased_until": record["number_leased_until"],
            "blocked_until": record["number_blocked_until"],
        }
    return CallContext(
        lead=Lead.from_record(record),
        phone=phone_state,
        team=record["agent_team"],
        agent_attempts=record["agent_attempts"],
        listed=record["listed"],
    )


async def lead_by_lease(connection: Connection, lease_id: uuid.UUID) -> Lead | None:
    record = await connection.fetchrow(
        f"SELECT {LEAD_COLUMNS} FROM leads WHERE lease_id = $1 FOR UPDATE", lease_id
    )
    return Lead.from_record(record) if record else None


async def leads_with_phone(
    connection: Connection, phone: str, states: Sequence[str]
) -> list[Lead]:
    records = await connection.fetch(
        f"""
        SELECT {LEAD_COLUMNS} FROM leads
        WHERE phone = $1 AND state = ANY($2::text[])
        ORDER BY lead_id FOR UPDATE
        """,
        phone,
        list(states),
    )
    return [Lead.from_record(record) for record in records]


def _update_sql(first_parameter: int) -> str:
    assignments = ", ".join(
        f"{name} = ${first_parameter + index}"
        for index, name in enumerate(_MUTABLE, start=1)
    )
    return f"UPDATE leads SET {assignments} WHERE lead_id = ${first_parameter}"


def _update_values(lead: Lead) -> list[Any]:
    return [lead.lead_id, *(getattr(lead, name) for name in _MUTABLE)]


async def save_lead(connection: Connection, lead: Lead) -> None:
    await connection.execute(_update_sql(1), *_update_values(lead))


async def save_leads(connection: Connection, leads: Sequence[Lead]) -> None:
    await connection.executemany(
        _update_sql(1), [_update_values(lead) for lead in leads]
    )


async def phone(connection: Connection, number: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT * FROM phones WHERE phone = $1 FOR UPDATE", number
    )


async def phones(
    connection: Connection, numbers: Sequence[str]
) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT * FROM phones WHERE phone = ANY($1::text[])", list(set(numbers))
    )


async def agent_attempts(
    connection: Connection, lead_id: uuid.UUID, agent_id: str
) -> int:
    attempts = await connection.fetchval(
        "SELECT attempts FROM lead_agents WHERE lead_id = $1 AND agent_id = $2",
        lead_id,
        agent_id,
    )
    return int(attempts or 0)


async def excluded_agents(connection: Connection, lead_id: uuid.UUID) -> list[str]:
    rows = await connection.fetch(
        """
        SELECT agent_id FROM lead_agents
        WHERE lead_id = $1 AND excluded_reason IS NOT NULL ORDER BY agent_id
        """,
        lead_id,
    )
    return [row["agent_id"] for row in rows]


# --- leasing ----------------------------------------------------------------

# Why each part of the lease statement is there:
# - agent: locks the agent row, so one agent's concurrent requests queue up
#   here and only the first finds the agent available.
# - own_callback: a due callback reserved for this agent comes first.
# - best: per pool, the first ready lead in priority order that this agent
#   may call; FOR UPDATE SKIP LOCKED so concurrent agents take different
#   leads instead of waiting on each other. The walk follows
#   leads_ready_by_priority and filters DNC and exclusions per row.
# - phone: claims the number for the lease, unless another lead with the same
#   number is on an open lease or the number's caps are reached.
# - leased / busy: the lead and the agent change only if the number was free.
_LEASE_SQL = """
WITH agent AS (
    SELECT agent_id, pools, team FROM agents
    WHERE agent_id = $1 AND status = 'available'
    FOR UPDATE
), own_callback AS (
    SELECT l.lead_id FROM leads l, agent
    WHERE l.state = 'ready' AND l.reserved_agent = $1 AND l.closes_at > $2
      AND l.pool = ANY(agent.pools)
      AND NOT EXISTS (
          SELECT 1 FROM lead_agents excluded
          WHERE excluded.lead_id = l.lead_id AND excluded.agent_id = $1
            AND excluded.excluded_reason IS NOT NULL)
      AND NOT EXISTS (SELECT 1 FROM dnc WHERE dnc.phone = l.phone)
    ORDER BY l.due_at
    LIMIT 1
    FOR UPDATE OF l SKIP LOCKED
), best AS (
    SELECT candidate.lead_id
    FROM agent
    CROSS JOIN LATERAL unnest(agent.pools) AS member(pool)
    CROSS JOIN LATERAL (
        SELECT l.lead_id, l.priority_class, l.planned_slot, l.weight, l.due_at
        FROM leads l
        WHERE l.state = 'ready' AND l.pool = member.pool AND l.closes_at > $2
          AND (l.reserved_agent IS NULL OR l.reserved_until <= $2
               OR l.reserved_agent = $1)
          AND NOT EXISTS (
              SELECT 1 FROM lead_agents excluded
              WHERE excluded.lead_id = l.lead_id AND excluded.agent_id = $1
                AND excluded.excluded_reason IS NOT NULL)
          AND NOT EXISTS (SELECT 1 FROM dnc WHERE dnc.phone = l.phone)
        ORDER BY l.priority_class, l.planned_slot, l.weight DESC, l.due_at,
                 l.lead_id
        LIMIT 1
        FOR UPDATE OF l SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority_class, candidate.planned_slot,
             candidate.weight DESC, candidate.due_at, candidate.lead_id
    LIMIT 1
), chosen AS (
    SELECT lead_id FROM own_callback
    UNION ALL
    SELECT lead_id FROM best WHERE NOT EXISTS (SELECT 1 FROM own_callback)
    LIMIT 1
), lease_length AS (
    -- The pool's row decides, so every copy of the service agrees as soon as a
    -- pool is created or changed (a copy's cached rules lag until its next
    -- scheduler pass); a row stored without the rule (the migration's default
    -- pool) falls back to this process's rules, then to the default length.
    SELECT coalesce(
        (SELECT (p.rules ->> 'lease_seconds')::float8
         FROM pools p, leads l, chosen
         WHERE l.lead_id = chosen.lead_id AND p.name = l.pool),
        (SELECT length.seconds
         FROM unnest($4::text[], $5::float8[]) AS length(pool, seconds), leads l,
              chosen
         WHERE l.lead_id = chosen.lead_id AND length.pool = l.pool),
        $6) AS seconds
), phone AS (
    UPDATE phones SET leased_until = $2 + make_interval(secs => lease_length.seconds)
    FROM leads l, chosen, lease_length
    WHERE l.lead_id = chosen.lead_id AND phones.phone = l.phone
      AND (phones.leased_until IS NULL OR phones.leased_until <= $2)
      AND (phones.blocked_until IS NULL OR phones.blocked_until <= $2)
    RETURNING phones.phone
), leased AS (
    UPDATE leads l
    SET state = 'leased', lease_id = $3, leased_agent = $1,
        lease_expires_at = $2 + make_interval(secs => lease_length.seconds),
        updated_at = $2
    FROM chosen, lease_length
    WHERE l.lead_id = chosen.lead_id
      AND (l.phone IS NULL OR EXISTS (SELECT 1 FROM phone))
    RETURNING l.*
), busy AS (
    UPDATE agents SET status = 'busy', status_at = $2, leases = leases + 1,
        updated_at = $2
    WHERE agent_id = $1 AND EXISTS (SELECT 1 FROM leased)
)
SELECT
    (SELECT team FROM agent) AS team,
    EXISTS (SELECT 1 FROM agent) AS agent_ok,
    (SELECT lead_id FROM chosen) AS chosen_id,
    leased.*
FROM (SELECT 1) AS one LEFT JOIN leased ON true
"""


@dataclass(frozen=True)
class LeaseAttempt:
    agent_ok: bool
    team: str | None
    chosen: uuid.UUID | None
    lead: Lead | None


async def lease_next(
    connection: Connection,
    *,
    agent_id: str,
    lease_id: uuid.UUID,
    now: dt.datetime,
    lease_seconds: dict[str, float],
    default_lease_seconds: float,
) -> LeaseAttempt:
    record = await connection.fetchrow(
        _LEASE_SQL,
        agent_id,
        now,
        lease_id,
        list(lease_seconds),
        list(lease_seconds.values()),
        default_lease_seconds,
    )
    assert record is not None
    leased = Lead.from_record(record) if record["lead_id"] is not None else None
    return LeaseAttempt(
        agent_ok=record["agent_ok"],
        team=record["team"],
        chosen=record["chosen_id"],
        lead=leased,
    )


_OUTBOX_AFTER_LEASE, _ = outbox_insert(9)


async def record_lease(
    connection: Connection,
    lead: Lead,
    *,
    reason: str,
    now: dt.datetime,
    events: Sequence[Envelope],
) -> None:
    """The lease's history row and its event, in one statement."""
    await connection.execute(
        f"""
        WITH lease AS (
            INSERT INTO leases (lease_id, lead_id, agent_id, pool, attempt, reason,
                                leased_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        )
        {_OUTBOX_AFTER_LEASE}
        """,
        lead.lease_id,
        lead.lead_id,
        lead.leased_agent,
        lead.pool,
        lead.attempts + 1,
        reason,
        now,
        lead.lease_expires_at,
        *outbox_arguments(events, now_ts=now),
    )


# --- recording a call -------------------------------------------------------

_CALL_FIRST = len(_MUTABLE) + 2
_OUTBOX_AFTER_CALL, _ = outbox_insert(_CALL_FIRST + 17)
_RECORD_CALL_SQL = f"""
WITH lead AS (
    {_update_sql(1)}
), call AS (
    INSERT INTO calls (call_id, lead_id, lease_id, agent_id, pool, attempt,
                       disposition, duration_seconds, called_at, via_queue,
                       callback_at, logged_at, note)
    VALUES (${_CALL_FIRST}, $1, ${_CALL_FIRST + 1}, ${_CALL_FIRST + 2},
            ${_CALL_FIRST + 3}, ${_CALL_FIRST + 4}, ${_CALL_FIRST + 5},
            ${_CALL_FIRST + 6}, ${_CALL_FIRST + 7}, ${_CALL_FIRST + 8},
            ${_CALL_FIRST + 9}, ${_CALL_FIRST + 10}, ${_CALL_FIRST + 16})
), lease AS (
    UPDATE leases SET ended_at = ${_CALL_FIRST + 10}, end_reason = 'outcome',
        disposition = ${_CALL_FIRST + 5}
    WHERE lease_id = ${_CALL_FIRST + 1}
), agent AS (
    UPDATE agents SET status = 'available', status_at = ${_CALL_FIRST + 10},
        updated_at = ${_CALL_FIRST + 10}
    WHERE ${_CALL_FIRST + 1}::uuid IS NOT NULL AND agent_id = ${_CALL_FIRST + 2}
      AND status = 'busy'
), per_agent AS (
    INSERT INTO lead_agents (lead_id, agent_id, attempts, excluded_reason)
    SELECT $1, ${_CALL_FIRST + 2}, 1, ${_CALL_FIRST + 11}
    WHERE ${_CALL_FIRST + 2}::text IS NOT NULL
    ON CONFLICT (lead_id, agent_id) DO UPDATE
        SET attempts = lead_agents.attempts + 1,
            excluded_reason = coalesce(lead_agents.excluded_reason,
                                       excluded.excluded_reason)
), phone AS (
    -- Merged, not overwritten: a call logged for another lead with this
    -- number may have added to the history meanwhile.
    UPDATE phones SET recent_calls = ARRAY(
            SELECT DISTINCT called FROM unnest(
                phones.recent_calls || ${_CALL_FIRST + 12}::timestamptz[]) AS called
            WHERE called > ${_CALL_FIRST + 10}::timestamptz - interval '50 hours'
            ORDER BY called),
        lifetime_calls = lifetime_calls + 1,
        blocked_until = ${_CALL_FIRST + 13},
        leased_until = CASE
            WHEN leased_until = (SELECT expires_at FROM leases
                                 WHERE lease_id = ${_CALL_FIRST + 1}::uuid)
            THEN NULL ELSE leased_until END
    WHERE phone = ${_CALL_FIRST + 14}
), siblings AS (
    -- Other queued leads with this number are re-planned by the scheduler's
    -- next pass, against their own pool's caps and the number's new history;
    -- meanwhile next-lead skips them (their window reads as closed).
    -- A dnc disposition holds them off the queue instead, as the list does.
    UPDATE leads SET
        closes_at = CASE WHEN ${_CALL_FIRST + 15}
                         THEN '9999-01-01 00:00+00'::timestamptz
                         ELSE '1970-01-01 00:00+00'::timestamptz END,
        due_at = CASE WHEN ${_CALL_FIRST + 15} THEN '9999-01-01 00:00+00'::timestamptz
                      ELSE due_at END,
        state = CASE WHEN ${_CALL_FIRST + 15} THEN 'waiting' ELSE state END,
        wait_reason = CASE WHEN ${_CALL_FIRST + 15} THEN 'dnc' ELSE wait_reason END
    WHERE phone = ${_CALL_FIRST + 14} AND lead_id <> $1
      AND state IN ('waiting', 'ready') AND wait_reason IS DISTINCT FROM 'dnc'
), listed AS (
    INSERT INTO dnc (phone, listed_at, reason)
    SELECT ${_CALL_FIRST + 14}, ${_CALL_FIRST + 10}, 'dnc disposition'
    WHERE ${_CALL_FIRST + 15} AND ${_CALL_FIRST + 14}::text IS NOT NULL
    ON CONFLICT (phone) DO NOTHING
)
{_OUTBOX_AFTER_CALL}
"""


@dataclass(frozen=True)
class CallRecord:
    call_id: uuid.UUID
    lease_id: uuid.UUID | None
    agent_id: str | None
    pool: str
    attempt: int
    disposition: str
    duration_seconds: float
    called_at: dt.datetime
    via_queue: bool
    callback_at: dt.datetime | None
    #: Why the agent is not given this lead again, if they are not.
    exclude_reason: str | None
    phone_recent_calls: list[dt.datetime]
    phone_blocked_until: dt.datetime | None
    list_on_dnc: bool
    note: str | None = None


async def record_call(
    connection: Connection,
    lead: Lead,
    call: CallRecord,
    *,
    phone_number: str | None,
    now: dt.datetime,
    events: Sequence[Envelope],
) -> None:
    """The lead's new state, the call, the lease's end, the agent, the per-agent
    count, the number's history and the events: one statement."""
    await connection.execute(
        _RECORD_CALL_SQL,
        *_update_values(lead),
        call.call_id,
        call.lease_id,
        call.agent_id,
        call.pool,
        call.attempt,
        call.disposition,
        call.duration_seconds,
        call.called_at,
        call.via_queue,
        call.callback_at,
        now,
        call.exclude_reason,
        call.phone_recent_calls,
        call.phone_blocked_until,
        phone_number,
        call.list_on_dnc,
        call.note,
        *outbox_arguments(events, now_ts=now),
    )


async def end_lease(
    connection: Connection,
    lease_id: uuid.UUID,
    *,
    reason: str,
    now: dt.datetime,
) -> None:
    """Closes a lease without a call (release or expiry) and frees its number."""
    await connection.execute(
        """
        WITH lease AS (
            UPDATE leases SET ended_at = $2, end_reason = $3
            WHERE lease_id = $1 AND ended_at IS NULL
            RETURNING lead_id, expires_at
        )
        -- Only this lease's claim: once it expired, another lead with the
        -- same number may hold the number under a lease of its own.
        UPDATE phones SET leased_until = NULL
        FROM leads, lease
        WHERE leads.lead_id = lease.lead_id AND phones.phone = leads.phone
          AND phones.leased_until = lease.expires_at
        """,
        lease_id,
        now,
        reason,
    )


async def count_release(
    connection: Connection, agent_id: str, column: str, status: str, now: dt.datetime
) -> None:
    assert column in ("releases", "expired_leases")
    await connection.execute(
        f"""
        UPDATE agents SET {column} = {column} + 1, status = $2, status_at = $3,
            updated_at = $3
        WHERE agent_id = $1
        """,
        agent_id,
        status,
        now,
    )


async def lease_row(
    connection: Connection, lease_id: uuid.UUID
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT * FROM leases WHERE lease_id = $1", lease_id
    )


# --- the scheduler ----------------------------------------------------------


async def promote_due(connection: Connection, now: dt.datetime, limit: int) -> int:
    """Waiting leads whose time has come become ready; returns how many."""
    result = await connection.execute(
        """
        UPDATE leads SET state = 'ready', wait_reason = NULL, updated_at = $1
        WHERE lead_id IN (
            SELECT lead_id FROM leads
            WHERE state = 'waiting' AND due_at <= $1 AND closes_at > $1
            ORDER BY due_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        """,
        now,
        limit,
    )
    return int(result.split()[-1])


async def closed_windows(
    connection: Connection, now: dt.datetime, limit: int
) -> list[Lead]:
    """Queued leads whose calling window has closed, locked for re-planning."""
    records = await connection.fetch(
        f"""
        SELECT {LEAD_COLUMNS} FROM leads
        WHERE state IN ('waiting', 'ready') AND closes_at <= $1
        ORDER BY closes_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        now,
        limit,
    )
    return [Lead.from_record(record) for record in records]


async def expired_leases(
    connection: Connection, now: dt.datetime, limit: int
) -> list[Lead]:
    records = await connection.fetch(
        f"""
        SELECT {LEAD_COLUMNS} FROM leads
        WHERE state = 'leased' AND lease_expires_at <= $1
        ORDER BY lease_expires_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        now,
        limit,
    )
    return [Lead.from_record(record) for record in records]


async def lapse_reservations(
    connection: Connection, now: dt.datetime, limit: int
) -> list[asyncpg.Record]:
    """Ends callback reservations whose hold has passed while the lead was
    callable and not called; returns the leads and the agents they were for."""
    return await connection.fetch(
        """
        WITH lapsed AS (
            SELECT lead_id, reserved_agent FROM leads
            -- reserved_agent IS NOT NULL lets leads_reserved_until serve
            -- this; without it every pass reads the whole table.
            WHERE reserved_until <= $1 AND reserved_agent IS NOT NULL
              AND state = 'ready'
            ORDER BY reserved_until
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE leads SET reserved_agent = NULL, reserved_until = NULL,
            updated_at = $1
        FROM lapsed
        WHERE leads.lead_id = lapsed.lead_id
        RETURNING leads.lead_id, leads.pool, lapsed.reserved_agent AS agent_id
        """,
        now,
        limit,
    )


async def mark_pool_for_replanning(
    connection: Connection,
    pool_name: str,
    call_target: int,
    changed_at: dt.datetime,
    limit: int,
    *,
    skip_locked: bool = True,
) -> int:
    """Up to ``limit`` leads of the pool take its target and are left for the
    scheduler's next pass to re-plan (a window that has "closed" is how it
    finds them); returns how many. Call until it returns less than ``limit``:
    each call is a short statement, so next-lead is never locked out of the
    pool for long. Leads on lease take the target only; leads held for the
    DNC list stay held; leads no window fitted get another chance. With
    ``skip_locked`` false it waits for leads other transactions hold, for a
    last pass over the few that the skipping passes stepped over."""
    skip = "SKIP LOCKED" if skip_locked else ""
    result = await connection.execute(
        f"""
        UPDATE leads SET call_target = $2, updated_at = greatest(updated_at, $3),
            closes_at = CASE WHEN state = 'leased' OR wait_reason = 'dnc'
                             THEN closes_at ELSE '1970-01-01 00:00+00'::timestamptz END,
            state = CASE WHEN state = 'not_callable' THEN 'waiting' ELSE state END
        WHERE lead_id IN (
            SELECT lead_id FROM leads
            WHERE pool = $1
              AND (state IN ('waiting', 'ready', 'leased')
                   OR (state = 'not_callable' AND wait_reason = 'no_window'))
              -- Not marked yet: a marked lead has the new target and, unless
              -- leased or held for the DNC list, a closed window. (updated_at
              -- cannot tell: a lead leased or called at or after the change's
              -- clock reading would be skipped and keep the old target.)
              AND (call_target <> $2
                   OR (state <> 'leased' AND wait_reason IS DISTINCT FROM 'dnc'
                       AND closes_at <> '1970-01-01 00:00+00'::timestamptz))
            LIMIT $4
            FOR UPDATE {skip}
        )
        """,
        pool_name,
        call_target,
        changed_at,
        limit,
    )
    return int(result.split()[-1])


# --- do-not-call ------------------------------------------------------------


async def list_phones(
    connection: Connection, numbers: Sequence[str], reason: str, now: dt.datetime
) -> list[str]:
    """Adds numbers to the DNC list; returns those that were not on it."""
    rows = await connection.fetch(
        """
        INSERT INTO dnc (phone, listed_at, reason)
        -- DISTINCT resolves untyped parameters as text: cast them.
        SELECT DISTINCT unnest($1::text[]), $2::timestamptz, $3::text
        ON CONFLICT (phone) DO NOTHING
        RETURNING phone
        """,
        list(numbers),
        now,
        reason,
    )
    return [row["phone"] for row in rows]


async def hold_listed(
    connection: Connection, numbers: Sequence[str], now: dt.datetime
) -> None:
    """Queued leads with these numbers wait, off the queue, while listed."""
    await connection.execute(
        """
        UPDATE leads SET state = 'waiting', wait_reason = 'dnc',
            due_at = '9999-01-01 00:00+00', closes_at = '9999-01-01 00:00+00',
            updated_at = $2
        WHERE phone = ANY($1::text[]) AND state IN ('waiting', 'ready')
        """,
        list(numbers),
        now,
    )


async def other_agents_may_call(
    connection: Connection, pool_name: str, lead_id: uuid.UUID, agent_id: str
) -> bool:
    """Whether any agent of the pool but ``agent_id`` may still get the lead."""
    found: bool = await connection.fetchval(
        """
        SELECT EXISTS (
            SELECT 1 FROM agents a
            WHERE $1 = ANY(a.pools) AND a.agent_id <> $3
              AND NOT EXISTS (
                  SELECT 1 FROM lead_agents excluded
                  WHERE excluded.lead_id = $2 AND excluded.agent_id = a.agent_id
                    AND excluded.excluded_reason IS NOT NULL))
        """,
        pool_name,
        lead_id,
        agent_id,
    )
    return found


async def lift_exclusions(
    connection: Connection, lead_id: uuid.UUID, *, reason: str
) -> None:
    """Every agent excluded from the lead for ``reason`` may get it again."""
    await connection.execute(
        """
        UPDATE lead_agents SET excluded_reason = NULL
        WHERE lead_id = $1 AND excluded_reason = $2
        """,
        lead_id,
        reason,
    )


async def unlist_phone(connection: Connection, number: str) -> bool:
    result = await connection.execute("DELETE FROM dnc WHERE phone = $1", number)
    return result != "DELETE 0"


async def dnc_entry(connection: Connection, number: str) -> asyncpg.Record | None:
    return await connection.fetchrow("SELECT * FROM dnc WHERE phone = $1", number)


# --- reads ------------------------------------------------------------------


async def pool_stats(
    connection: Connection, pool_name: str, now: dt.datetime
) -> list[asyncpg.Record]:
    return await connection.fetch(
        """
        SELECT state, coalesce(source, '') AS source, count(*) AS leads,
               count(*) FILTER (WHERE state = 'ready' AND closes_at > $2) AS due_now
        FROM leads WHERE pool = $1
        GROUP BY state, source ORDER BY state, source
        """,
        pool_name,
        now,
    )


async def depth_by_pool(
    connection: Connection, now: dt.datetime
) -> list[asyncpg.Record]:
    return await connection.fetch(
        """
        SELECT pool, state, count(*) AS leads,
               count(*) FILTER (WHERE state = 'ready' AND closes_at > $1) AS due_now
        FROM leads GROUP BY pool, state
        """,
        now,
    )


async def live_depth_by_pool(
    connection: Connection, now: dt.datetime
) -> list[asyncpg.Record]:
    """Queued, due-now and leased leads per pool, counted as ``pool_stats``
    counts them but over live leads only. Each arm of the OR is the predicate
    of a partial index (leads_window_closes, leads_lease_expiry), so the
    planner can read live leads through a BitmapOr of the two and leave the
    finished ones, the bulk of the table once it has run a while, unread."""
    return await connection.fetch(
        """
        SELECT pool,
               count(*) FILTER (WHERE state IN ('waiting', 'ready')) AS queued,
               count(*) FILTER (WHERE state = 'ready' AND closes_at > $1) AS due_now,
               count(*) FILTER (WHERE state = 'leased') AS leased
        FROM leads
        WHERE state IN ('waiting', 'ready') OR state = 'leased'
        GROUP BY pool
        """,
        now,
    )


async def agents_by_status(connection: Connection) -> list[asyncpg.Record]:
    """Agents per status, overall (``pool`` NULL) and per pool they draw from;
    an agent of two pools counts once overall and once in each pool."""
    return await connection.fetch(
        """
        SELECT NULL::text AS pool, status, count(*) AS agents
        FROM agents GROUP BY status
        UNION ALL
        SELECT pool, status, count(*) AS agents
        -- DISTINCT: an agent put in the same pool twice is one agent there.
        FROM (SELECT DISTINCT agent_id, status, unnest(pools) AS pool
              FROM agents) AS membership
        GROUP BY pool, status
        """
    )


async def history(
    connection: Connection, lead_id: uuid.UUID
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    calls = await connection.fetch(
        """
        SELECT call_id, lease_id, agent_id, pool, attempt, disposition,
               duration_seconds, called_at, via_queue, callback_at, note
        FROM calls WHERE lead_id = $1 ORDER BY called_at, attempt
        """,
        lead_id,
    )
    leases = await connection.fetch(
        """
        SELECT lease_id, agent_id, pool, attempt, reason, leased_at, expires_at,
               ended_at, end_reason, disposition
        FROM leases WHERE lead_id = $1 ORDER BY leased_at
        """,
        lead_id,
    )
    return calls, leases
