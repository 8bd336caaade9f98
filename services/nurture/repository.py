"""Every query of the nurture service.

The consumer writes what it learns of leads (one transaction per batch); the
scheduler claims due leads with ``FOR UPDATE SKIP LOCKED`` and writes each
one's steps and jobs in the same transaction; requests read and write
campaigns and opt-outs. Column meanings are in ``migrations/0001_nurture.sql``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from services.nurture.sequencing import Advance, LeadState, Step
from shared.db import Connection
from shared.events import Envelope, LeadSnapshot
from shared.outbox import outbox_arguments, outbox_insert
from shared.settings import NURTURE_JOBS_TOPIC

# --- campaigns ----------------------------------------------------------------


async def put_campaign(
    connection: Connection,
    name: str,
    definition: dict[str, Any],
    now: dt.datetime,
) -> tuple[asyncpg.Record, bool]:
    """Store a new version of ``name``; returns its row and whether it is new."""
    row = await connection.fetchrow(
        """
        INSERT INTO campaigns AS c (campaign, version, pools, sources,
            enrolment_age_days, priority, active, created_at, updated_at)
        VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $7)
        ON CONFLICT (campaign) DO UPDATE SET
            version = c.version + 1, pools = excluded.pools,
            sources = excluded.sources,
            enrolment_age_days = excluded.enrolment_age_days,
            priority = excluded.priority, active = excluded.active,
            updated_at = excluded.updated_at
        RETURNING campaign, version, created_at, updated_at, version = 1 AS created
        """,
        name,
        definition["pools"],
        definition["sources"],
        definition["enrolment_age_days"],
        definition["priority"],
        definition["active"],
        now,
    )
    assert row is not None
    await connection.execute(
        "INSERT INTO campaign_versions (campaign, version, definition, created_at)"
        " VALUES ($1, $2, $3, $4)",
        name,
        row["version"],
        definition,
        now,
    )
    return row, bool(row["created"])


async def campaign(connection: Connection, name: str) -> asyncpg.Record | None:
    return await connection.fetchrow(
        """
        SELECT c.campaign, c.version, c.created_at, c.updated_at, v.definition
        FROM campaigns c
        JOIN campaign_versions v USING (campaign, version)
        WHERE c.campaign = $1
        """,
        name,
    )


async def campaign_names(connection: Connection) -> list[str]:
    rows = await connection.fetch("SELECT campaign FROM campaigns ORDER BY campaign")
    return [row["campaign"] for row in rows]


async def version_steps(
    connection: Connection, keys: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], list[Step]]:
    """The steps of each (campaign, version); versions never change."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = await connection.fetch(
        """
        SELECT v.campaign, v.version, v.definition
        FROM campaign_versions v
        JOIN unnest($1::text[], $2::int[]) AS wanted(campaign, version)
            USING (campaign, version)
        """,
        [campaign for campaign, _ in wanted],
        [version for _, version in wanted],
    )
    return {
        (row["campaign"], row["version"]): [
            Step(
                step["day"],
                step["channel"],
                step["template_id"],
                step.get("content_url"),
            )
            for step in row["definition"]["steps"]
        ]
        for row in rows
    }


# --- what the consumer learns ---------------------------------------------------

_WAITING = "enrolled_at IS NULL AND ended_reason IS NULL"


async def upsert_received(
    connection: Connection, snapshots: Sequence[LeadSnapshot], now: dt.datetime
) -> None:
    """Store new leads (or refresh a known lead's contact data and consent).

    A number or address that opted out earlier, or a listed number, makes the
    new lead opted out or DNC from the start.
    """
    if not snapshots:
        return
    await connection.execute(
        """
        INSERT INTO leads AS l (lead_id, source, first_name, last_name, phone,
            email, country, region, timezones, consent_sms, consent_email,
            sms_opted_out, email_opted_out, dnc, received_at, updated_at)
        SELECT new.lead_id, new.source, new.first_name, new.last_name,
            new.phone, new.email, new.country, new.region,
            string_to_array(new.timezones, ' '), new.consent_sms,
            new.consent_email,
            EXISTS (SELECT 1 FROM opt_outs o
                    WHERE o.channel = 'sms' AND o.address = new.phone),
            EXISTS (SELECT 1 FROM opt_outs o
                    WHERE o.channel = 'email' AND o.address = new.email),
            new.dnc OR EXISTS (SELECT 1 FROM dnc_phones d WHERE d.phone = new.phone),
            new.received_at, $14
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[], $10::bool[],
            $11::bool[], $12::bool[], $13::timestamptz[])
            AS new(lead_id, source, first_name, last_name, phone, email, country,
                region, timezones, consent_sms, consent_email, dnc, received_at)
        ON CONFLICT (lead_id) DO UPDATE SET
            first_name = excluded.first_name, last_name = excluded.last_name,
            phone = excluded.phone, email = excluded.email,
            country = excluded.country, region = excluded.region,
            timezones = excluded.timezones,
            consent_sms = excluded.consent_sms,
            consent_email = excluded.consent_email,
            sms_opted_out = l.sms_opted_out OR excluded.sms_opted_out,
            email_opted_out = l.email_opted_out OR excluded.email_opted_out,
            dnc = excluded.dnc, updated_at = excluded.updated_at
        """,
        *_snapshot_columns(snapshots),
        now,
    )


def _snapshot_columns(snapshots: Sequence[LeadSnapshot]) -> list[list[Any]]:
    return [
        [lead.lead_id for lead in snapshots],
        [lead.source for lead in snapshots],
        [lead.first_name for lead in snapshots],
        [lead.last_name for lead in snapshots],
        [lead.phone for lead in snapshots],
        [lead.email for lead in snapshots],
        [lead.country for lead in snapshots],
        [lead.region for lead in snapshots],
        [" ".join(_zones(lead)) for lead in snapshots],
        [lead.consent.sms for lead in snapshots],
        [lead.consent.email for lead in snapshots],
        [lead.dnc for lead in snapshots],
        [lead.received_at for lead in snapshots],
    ]


def _zones(lead: LeadSnapshot) -> list[str]:
    """The lead's IANA region zones. Names such as ``localtime`` or
    ``posixrules``, which zoneinfo may list but PostgreSQL does not know,
    are left out (the default zone then applies)."""
    zones = list(lead.timezones) or ([lead.timezone] if lead.timezone else [])
    return [zone for zone in zones if "/" in zone or zone == "UTC"]


@dataclass(frozen=True)
class Ended:
    """A lead taken out of nurture, for the counters."""

    lead_id: uuid.UUID
    campaign: str | None
    #: It was in a sequence (not merely waiting) when it was taken out.
    was_enrolled: bool


#: The rows a statement may take out of their sequence, locked, with whether
#: each was in one before it: RETURNING sees only the new row, and two such
#: statements in one transaction must not both count the same lead.
_BEFORE = """
    before AS (
        SELECT lead_id, enrolled_at IS NOT NULL AND finished_at IS NULL AS active
        FROM leads WHERE {match}
        ORDER BY lead_id
        FOR UPDATE
    )
"""
_END_RETURNING = """
    RETURNING leads.lead_id, leads.campaign,
        before.active AND leads.finished_at IS NOT NULL AS was_enrolled
"""


async def end_reinquired(
    connection: Connection, snapshots: Sequence[LeadSnapshot], now: dt.datetime
) -> list[Ended]:
    """Take out of nurture every earlier lead of the people who inquired again.

    A new lead with the same phone or email is the person asking again: the
    queue calls the new lead, and the old one must stop hearing from nurture.
    """
    if not snapshots:
        return []
    rows = await connection.fetch(
        f"""
        WITH new AS (
            SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[],
                $5::timestamptz[]) AS new(lead_id, phone, email, received_at)
        ), earlier AS (
            SELECT l.lead_id FROM new JOIN leads l ON l.phone = new.phone
            WHERE l.lead_id <> new.lead_id AND l.received_at < new.received_at
            UNION
            SELECT l.lead_id FROM new JOIN leads l ON l.email = new.email
            WHERE l.lead_id <> new.lead_id AND l.received_at < new.received_at
        ), {_BEFORE.format(match="lead_id IN (SELECT lead_id FROM earlier)")}
        UPDATE leads SET ended_reason = $1, next_at = NULL, updated_at = $6,
            {_FINISH.format(when="true", reason="$1", now="$6")}
        FROM before
        WHERE leads.lead_id = before.lead_id AND leads.ended_reason IS NULL
            AND leads.finished_at IS NULL
        {_END_RETURNING}
        """,
        "reinquiry",
        [lead.lead_id for lead in snapshots],
        [lead.phone for lead in snapshots],
        [lead.email for lead in snapshots],
        [lead.received_at for lead in snapshots],
        now,
    )
    return [Ended(row["lead_id"], row["campaign"], row["was_enrolled"]) for row in rows]


#: Finishes a lead in a sequence when ``when`` holds; a waiting lead (or one
#: already finished) keeps its finish columns. Formatted with when/reason/now.
_FINISH = """
    finished_at = CASE WHEN ({when}) AND enrolled_at IS NOT NULL
        AND finished_at IS NULL THEN {now} ELSE finished_at END,
    finish_reason = CASE WHEN ({when}) AND enrolled_at IS NOT NULL
        AND finished_at IS NULL THEN {reason} ELSE finish_reason END
"""


@dataclass(frozen=True)
class Calling:
    """Where a lead stands with the queue after a batch's events."""

    lead_id: uuid.UUID
    pool: str | None
    calling: str
    #: None keeps what the lead's last lead.queued said.
    hold_while_calling: bool | None
    #: When the queue said it (queued_at / exhausted_at).
    at: dt.datetime


async def set_calling(
    connection: Connection, changes: Sequence[Calling], now: dt.datetime
) -> None:
    if not changes:
        return
    await connection.execute(
        """
        UPDATE leads SET
            pool = coalesce(change.pool, leads.pool),
            calling = change.calling,
            hold_while_calling = coalesce(change.hold, leads.hold_while_calling),
            calling_at = change.at,
            updated_at = $5
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[],
            $6::timestamptz[]) AS change(lead_id, pool, calling, hold, at)
        WHERE leads.lead_id = change.lead_id
            -- News older than what is applied already (a re-sent batch can
            -- land a lead's events out of order) changes nothing.
            AND (leads.calling_at IS NULL OR leads.calling_at <= change.at)
        """,
        [change.lead_id for change in changes],
        [change.pool for change in changes],
        [change.calling for change in changes],
        [change.hold_while_calling for change in changes],
        now,
        [change.at for change in changes],
    )


async def end_lead(
    connection: Connection, lead_id: uuid.UUID, reason: str, now: dt.datetime
) -> Ended | None:
    """Converted or invalid: out of nurture for good."""
    row = await connection.fetchrow(
        f"""
        WITH {_BEFORE.format(match="lead_id = $3")}
        UPDATE leads SET ended_reason = $1, next_at = NULL, updated_at = $2,
            {_FINISH.format(when="true", reason="$1", now="$2")}
        FROM before
        WHERE leads.lead_id = before.lead_id AND leads.ended_reason IS NULL
        {_END_RETURNING}
        """,
        reason,
        now,
        lead_id,
    )
    if row is None:
        return None
    return Ended(row["lead_id"], row["campaign"], row["was_enrolled"])


async def update_contact(
    connection: Connection, snapshot: LeadSnapshot, now: dt.datetime
) -> None:
    """A merged duplicate: the original lead's contact data and consent."""
    await connection.execute(
        """
        UPDATE leads SET first_name = $2, last_name = $3, phone = $4, email = $5,
            country = $6, region = $7, timezones = $8, consent_sms = $9,
            consent_email = $10, updated_at = $12,
            -- A merge can bring a number or address that opted out or is
            -- listed: the lead takes their state, as a new lead would.
            sms_opted_out = sms_opted_out OR EXISTS (SELECT 1 FROM opt_outs o
                WHERE o.channel = 'sms' AND o.address = $4),
            email_opted_out = email_opted_out OR EXISTS (SELECT 1 FROM opt_outs o
                WHERE o.channel = 'email' AND o.address = $5),
            dnc = dnc OR $11 OR EXISTS (SELECT 1 FROM dnc_phones d WHERE d.phone = $4)
        WHERE lead_id = $1
        """,
        snapshot.lead_id,
        snapshot.first_name,
        snapshot.last_name,
        snapshot.phone,
        snapshot.email,
        snapshot.country,
        snapshot.region,
        _zones(snapshot),
        snapshot.consent.sms,
        snapshot.consent.email,
        snapshot.dnc,
        now,
    )


async def contact_of(
    connection: Connection, lead_id: uuid.UUID
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT lead_id, phone, email FROM leads WHERE lead_id = $1", lead_id
    )


async def opt_out(
    connection: Connection,
    lead_id: uuid.UUID,
    channels: Sequence[str],
    addresses: dict[str, str | None],
    now: dt.datetime,
) -> list[Ended]:
    """Opt the lead, and every lead sharing the address, out of ``channels``.

    The address is remembered, so a later lead of the same person starts
    opted out. A lead left with no channel leaves its sequence at once.
    """
    for channel in channels:
        address = addresses.get(channel)
        if address:
            await connection.execute(
                """
                INSERT INTO opt_outs (channel, address, lead_id, opted_out_at)
                VALUES ($1, $2, $3, $4) ON CONFLICT (channel, address) DO NOTHING
                """,
                channel,
                address,
                lead_id,
                now,
            )
    sms, email = "sms" in channels, "email" in channels
    # One statement sets the flags and finishes the leads left with no
    # channel (a row must not be updated twice in one statement).
    rows = await connection.fetch(
        f"""
        WITH {_BEFORE.format(match=_OPTED_OUT_LEADS)}
        UPDATE leads SET
            -- Each flag follows its own address: a lead sharing only the
            -- number keeps its email.
            sms_opted_out = sms_opted_out
                OR ($3 AND (leads.lead_id = $2 OR leads.phone = $4)),
            email_opted_out = email_opted_out
                OR ($5 AND (leads.lead_id = $2 OR leads.email = $6)),
            next_at = CASE WHEN {_NO_CHANNEL} THEN NULL ELSE next_at END,
            {_FINISH.format(when=_NO_CHANNEL, reason="$1", now="$7")},
            updated_at = $7
        FROM before
        WHERE leads.lead_id = before.lead_id
        {_END_RETURNING}
        """,
        "opted_out",
        lead_id,
        sms,
        addresses.get("sms"),
        email,
        addresses.get("email"),
        now,
    )
    return [Ended(row["lead_id"], row["campaign"], row["was_enrolled"]) for row in rows]


#: After an opt-out of ($3 = sms, $5 = email) of lead $2 or its addresses
#: ($4, $6): no channel is left.
_NO_CHANNEL = (
    "(sms_opted_out OR ($3 AND (leads.lead_id = $2 OR leads.phone = $4)))"
    " AND (email_opted_out OR ($5 AND (leads.lead_id = $2 OR leads.email = $6)))"
)
#: The lead ($2) and every lead with the address that opted out.
_OPTED_OUT_LEADS = "lead_id = $2 OR ($3 AND phone = $4) OR ($5 AND email = $6)"


async def set_dnc(
    connection: Connection, phone: str, listed: bool, now: dt.datetime
) -> tuple[list[uuid.UUID], list[Ended]]:
    """A number listed or de-listed: returns the leads with that number, and
    those a listing took out of their sequence."""
    if listed:
        await connection.execute(
            "INSERT INTO dnc_phones (phone, listed_at) VALUES ($1, $2)"
            " ON CONFLICT (phone) DO NOTHING",
            phone,
            now,
        )
    else:
        await connection.execute("DELETE FROM dnc_phones WHERE phone = $1", phone)
    # A listing takes enrolled leads out of their sequence and stops
    # waiting ones (re-planned once de-listed).
    rows = await connection.fetch(
        f"""
        WITH {_BEFORE.format(match="phone = $1")}
        UPDATE leads SET dnc = $2,
            next_at = CASE WHEN $2 THEN NULL ELSE next_at END,
            {_FINISH.format(when="$2", reason="$4", now="$3")},
            updated_at = $3
        FROM before
        WHERE leads.lead_id = before.lead_id
        {_END_RETURNING}
        """,
        phone,
        listed,
        now,
        "dnc",
    )
    ended = [
        Ended(row["lead_id"], row["campaign"], True)
        for row in rows
        if row["was_enrolled"]
    ]
    return [row["lead_id"] for row in rows], ended


async def replan_waiting(
    connection: Connection,
    lead_ids: Sequence[uuid.UUID] | None,
    now: dt.datetime,
    default_zone: str,
) -> None:
    """Choose the campaign and enrolment time of leads not enrolled yet.

    ``lead_ids`` None re-plans every waiting lead (after a campaign change).
    A lead is due at arrival + the chosen campaign's enrolment age in days of
    its zone (``default_zone`` when it has none); it has no
    time while it is ineligible (DNC, every channel opted out), while no
    active campaign takes it, or while its pool holds it during calling.
    Rows whose plan is unchanged are not rewritten.
    """
    if lead_ids is not None and not lead_ids:
        return
    # Two texts rather than "$1 IS NULL OR l.lead_id = ANY ($1)": a pooled
    # connection soon runs the statement with a generic plan, which cannot
    # drop that OR, so it read every waiting lead and compared each with the
    # whole array.
    by_id = "$1::uuid[] IS NULL" if lead_ids is None else "l.lead_id = ANY ($1)"
    # One table, the plan computed per row by correlated subqueries: a join of
    # leads with itself depends on the statistics, and when they say no lead
    # waits (a new table, just after a mass enrolment) PostgreSQL chose a
    # nested loop that compared every planned row with every other (3 s for
    # 2 000 leads, 30 s for 5 000). The WHERE clause is checked again on a
    # row a concurrent pass has just enrolled, which is then left alone.
    await connection.execute(
        f"""
        UPDATE leads l SET (campaign, next_at) = ({_PLAN}), updated_at = $2
        WHERE l.{_WAITING.replace(" AND ", " AND l.")} AND {by_id}
            AND NOT EXISTS (
                SELECT 1 FROM ({_PLAN}) AS planned(campaign, next_at)
                WHERE planned.campaign IS NOT DISTINCT FROM l.campaign
                    AND planned.next_at IS NOT DISTINCT FROM l.next_at
            )
        """,
        lead_ids,
        now,
        default_zone,
    )


#: The campaign and enrolment time of waiting lead ``l``: exactly one row.
_PLAN = """
    SELECT pick.campaign,
        CASE WHEN pick.campaign IS NULL OR l.dnc
                OR (l.sms_opted_out AND l.email_opted_out)
                OR (l.hold_while_calling AND l.calling = 'open')
            THEN NULL
            -- Calendar days in the lead's zone, like the steps' days: an
            -- arrival at 10:00 is enrolled at 10:00, DST or not.
            ELSE ((l.received_at AT TIME ZONE coalesce(l.timezones[1], $3))
                + make_interval(days => pick.age))
                AT TIME ZONE coalesce(l.timezones[1], $3)
        END
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT c.campaign, c.enrolment_age_days AS age
        FROM campaigns c
        WHERE c.active
            AND (c.pools = '{}' OR l.pool = ANY (c.pools))
            AND (c.sources = '{}' OR l.source = ANY (c.sources))
        ORDER BY c.priority DESC, c.campaign
        LIMIT 1
    ) AS pick ON true
"""


# --- the scheduler --------------------------------------------------------------

#: The opt-out and DNC state of a lead's addresses as the lists say now. A
#: lead's own flags are written when it arrives or an opt-out or listing is
#: applied; two such transactions running side by side (different partitions
#: or copies) cannot see each other, so the claim looks at the lists again.
_LISTED = {
    "sms_opted_out": "EXISTS (SELECT 1 FROM opt_outs o"
    " WHERE o.channel = 'sms' AND o.address = {lead}.phone)",
    "email_opted_out": "EXISTS (SELECT 1 FROM opt_outs o"
    " WHERE o.channel = 'email' AND o.address = {lead}.email)",
    "dnc": "EXISTS (SELECT 1 FROM dnc_phones d WHERE d.phone = {lead}.phone)",
}
_CLAIM = f"""
    SELECT l.lead_id, l.campaign, coalesce(l.campaign_version, c.version) AS version,
        coalesce(c.active, false) AS active, l.first_name, l.last_name, l.phone,
        l.email, l.country, l.region, l.timezones, l.consent_sms,
        l.consent_email, l.enrolled_at, l.next_step, l.next_at,
        l.sms_opted_out OR {_LISTED["sms_opted_out"].format(lead="l")}
            AS sms_opted_out,
        l.email_opted_out OR {_LISTED["email_opted_out"].format(lead="l")}
            AS email_opted_out,
        l.dnc OR {_LISTED["dnc"].format(lead="l")} AS dnc,
        (NOT l.sms_opted_out AND {_LISTED["sms_opted_out"].format(lead="l")})
            OR (NOT l.email_opted_out AND {_LISTED["email_opted_out"].format(lead="l")})
            OR (NOT l.dnc AND {_LISTED["dnc"].format(lead="l")}) AS behind_lists
    FROM leads l
    LEFT JOIN campaigns c ON c.campaign = l.campaign
    WHERE l.next_at <= $1  -- leads_next_at
    ORDER BY l.next_at
    LIMIT $2
    -- Copies of the service skip each other's claimed rows instead of
    -- waiting for them; a row's next_at has moved on when its lock is freed.
    FOR UPDATE OF l SKIP LOCKED
"""


@dataclass(frozen=True)
class Claimed:
    """A due lead, locked for the claiming transaction."""

    state: LeadState
    #: Its number is on the do-not-call list.
    dnc: bool
    #: The opt-out or DNC lists say more than the lead's own flags.
    behind_lists: bool


async def claim_due(
    connection: Connection, now: dt.datetime, limit: int
) -> list[Claimed]:
    """Lock up to ``limit`` due leads, earliest first, for this transaction."""
    rows = await connection.fetch(_CLAIM, now, limit)
    return [
        Claimed(
            lead_state(
                row,
                campaign_version=row["version"],
                campaign_active=row["active"],
                next_at=row["next_at"],
            ),
            dnc=row["dnc"],
            behind_lists=row["behind_lists"],
        )
        for row in rows
    ]


def lead_state(
    row: asyncpg.Record,
    *,
    campaign_version: int,
    campaign_active: bool,
    next_at: dt.datetime,
) -> LeadState:
    """The scheduler's view of a ``leads`` row (or a claim's row, whose flags
    already include the lists)."""
    return LeadState(
        lead_id=row["lead_id"],
        campaign=row["campaign"] or "",
        campaign_version=campaign_version,
        campaign_active=campaign_active,
        first_name=row["first_name"],
        last_name=row["last_name"],
        phone=row["phone"],
        email=row["email"],
        country=row["country"],
        region=row["region"],
        timezones=row["timezones"],
        consent_sms=row["consent_sms"],
        consent_email=row["consent_email"],
        sms_opted_out=row["sms_opted_out"],
        email_opted_out=row["email_opted_out"],
        enrolled_at=row["enrolled_at"],
        next_step=row["next_step"],
        next_at=next_at,
    )


async def catch_up_with_lists(
    connection: Connection, lead_ids: Sequence[uuid.UUID], now: dt.datetime
) -> list[Ended]:
    """Set the flags of ``lead_ids`` from the opt-out and DNC lists; a lead
    found listed leaves its sequence (or, waiting, is no longer due)."""
    if not lead_ids:
        return []
    listed = _LISTED["dnc"].format(lead="leads")
    rows = await connection.fetch(
        f"""
        WITH {_BEFORE.format(match="lead_id = ANY ($1::uuid[])")}
        UPDATE leads SET
            sms_opted_out = sms_opted_out
                OR {_LISTED["sms_opted_out"].format(lead="leads")},
            email_opted_out = email_opted_out
                OR {_LISTED["email_opted_out"].format(lead="leads")},
            dnc = dnc OR {listed},
            next_at = CASE WHEN {listed} THEN NULL ELSE next_at END,
            {_FINISH.format(when=listed, reason="$2", now="$3")},
            updated_at = $3
        FROM before
        WHERE leads.lead_id = before.lead_id
        {_END_RETURNING}
        """,
        list(lead_ids),
        "dnc",
        now,
    )
    return [
        Ended(row["lead_id"], row["campaign"], True)
        for row in rows
        if row["was_enrolled"]
    ]


_OUTBOX_SQL, _ = outbox_insert(9)
_ADVANCE = f"""
    WITH advanced AS (
        UPDATE leads SET
            enrolled_at = change.enrolled_at,
            campaign_version = change.version,
            next_step = change.next_step,
            next_at = change.next_at,
            finished_at = CASE WHEN change.finish_reason IS NOT NULL
                THEN $8::timestamptz END,
            finish_reason = change.finish_reason,
            history = leads.history || change.records::jsonb,
            updated_at = $8
        FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::int[],
            $5::timestamptz[], $6::text[], $7::text[])
            AS change(lead_id, enrolled_at, version, next_step, next_at,
                finish_reason, records)
        WHERE leads.lead_id = change.lead_id
        RETURNING 1
    )
    {_OUTBOX_SQL}
"""


async def save_advances(
    connection: Connection,
    advances: Sequence[tuple[Advance, int]],
    jobs: Sequence[Envelope],
    now: dt.datetime,
) -> None:
    """Write each lead's new position and history, and queue its jobs on
    ``nurture-jobs``, in one statement of the claiming transaction."""
    if not advances:
        return
    await connection.execute(
        _ADVANCE,
        [advance.lead_id for advance, _ in advances],
        [advance.enrolled_at for advance, _ in advances],
        [version for _, version in advances],
        [advance.next_step for advance, _ in advances],
        [advance.next_at for advance, _ in advances],
        [advance.finish_reason for advance, _ in advances],
        # As JSON text: a list of lists would be sent as a 2-D array, which
        # unnest flattens across leads.
        [
            orjson.dumps([record.as_json() for record in advance.records]).decode()
            for advance, _ in advances
        ],
        now,
        *outbox_arguments(jobs, now_ts=now, topic=NURTURE_JOBS_TOPIC),
    )


# --- reads ------------------------------------------------------------------------


async def lead(connection: Connection, lead_id: uuid.UUID) -> asyncpg.Record | None:
    return await connection.fetchrow(
        """
        SELECT l.*, v.definition,
            c.enrolment_age_days AS chosen_age
        FROM leads l
        LEFT JOIN campaigns c ON c.campaign = l.campaign
        LEFT JOIN campaign_versions v ON v.campaign = l.campaign
            AND v.version = coalesce(l.campaign_version, c.version)
        WHERE l.lead_id = $1
        """,
        lead_id,
    )
