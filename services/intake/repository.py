"""Every SQL statement of the intake service. Functions take a connection so
the caller decides the transaction."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.db import Connection
from shared.events import Envelope
from shared.outbox import outbox_arguments, outbox_insert

#: Advisory-lock class for dedup buckets (the first key of the two-key form).
DEDUP_LOCK_CLASS = 7301

LEAD_COLUMNS = (
    "id",
    "source",
    "external_id",
    "campaign",
    "first_name",
    "last_name",
    "phone",
    "email",
    "postal_code",
    "country",
    "region",
    "timezone",
    "timezones",
    "consent_call",
    "consent_sms",
    "consent_email",
    "attributes",
    "dnc",
    "received_at",
    "updated_at",
)


@dataclass(frozen=True)
class Source:
    name: str
    webhook_secret: str | None
    mapping: str
    mapping_options: dict[str, Any]
    duplicate_policy: str


def _source(row: asyncpg.Record | None) -> Source | None:
    if row is None:
        return None
    return Source(
        name=row["name"],
        webhook_secret=row["webhook_secret"],
        mapping=row["mapping"],
        mapping_options=row["mapping_options"],
        duplicate_policy=row["duplicate_policy"],
    )


_SOURCE_SELECT = (
    "SELECT name, webhook_secret, mapping, mapping_options, duplicate_policy"
    " FROM sources"
)


async def source_by_key_hash(
    connection: asyncpg.Connection | asyncpg.Pool, key_hash: bytes
) -> Source | None:
    return _source(
        await connection.fetchrow(f"{_SOURCE_SELECT} WHERE api_key_hash = $1", key_hash)
    )


async def source_by_name(
    connection: asyncpg.Connection | asyncpg.Pool, name: str
) -> Source | None:
    return _source(await connection.fetchrow(f"{_SOURCE_SELECT} WHERE name = $1", name))


async def save_source(
    connection: Connection,
    *,
    name: str,
    api_key_hash: bytes | None,
    webhook_secret: str | None,
    mapping: str,
    mapping_options: dict[str, Any],
    duplicate_policy: str,
    now: dt.datetime,
) -> None:
    """Create or update a source; a ``None`` credential keeps the stored one."""
    await connection.execute(
        """
        INSERT INTO sources (name, api_key_hash, webhook_secret, mapping,
                             mapping_options, duplicate_policy, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (name) DO UPDATE SET
            api_key_hash = coalesce(EXCLUDED.api_key_hash, sources.api_key_hash),
            webhook_secret = coalesce(EXCLUDED.webhook_secret, sources.webhook_secret),
            mapping = EXCLUDED.mapping,
            mapping_options = EXCLUDED.mapping_options,
            duplicate_policy = EXCLUDED.duplicate_policy
        """,
        name,
        api_key_hash,
        webhook_secret,
        mapping,
        mapping_options,
        duplicate_policy,
        now,
    )


async def lock_dedup_buckets(connection: Connection, buckets: list[int]) -> None:
    """Serialise transactions that could match the same phone, e-mail or key.

    ``buckets`` must be sorted: every transaction takes its locks in the same
    order, so two of them can wait for each other but never deadlock. The locks
    end with the transaction.
    """
    await connection.execute(
        "SELECT pg_advisory_xact_lock($1, bucket)"
        " FROM unnest($2::int[]) WITH ORDINALITY AS b(bucket, position)"
        " ORDER BY position",
        DEDUP_LOCK_CLASS,
        buckets,
    )


async def idempotent_response(
    connection: Connection, source: str, key: str, since: dt.datetime
) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys"
        " WHERE source = $1 AND key = $2 AND created_at >= $3",
        source,
        key,
        since,
    )


async def save_idempotent_response(
    connection: Connection,
    *,
    source: str,
    key: str,
    request_hash: bytes,
    response: Any,
    now: dt.datetime,
) -> None:
    # An expired row for the same key is replaced: the key starts afresh.
    await connection.execute(
        """
        INSERT INTO idempotency_keys (source, key, request_hash, response, created_at)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (source, key) DO UPDATE SET
            request_hash = EXCLUDED.request_hash,
            response = EXCLUDED.response,
            created_at = EXCLUDED.created_at
        """,
        source,
        key,
        request_hash,
        response,
        now,
    )


async def purge_idempotency_keys(
    connection: asyncpg.Connection | asyncpg.Pool, before: dt.datetime
) -> str:
    return await connection.execute(
        "DELETE FROM idempotency_keys WHERE created_at < $1", before
    )


async def leads_by_external_id(
    connection: Connection, source: str, external_ids: list[str]
) -> dict[str, tuple[uuid.UUID, bool]]:
    """Stored leads of ``source`` by external id, with their dnc flag."""
    if not external_ids:
        return {}
    rows = await connection.fetch(
        # Served by leads_source_external_id.
        "SELECT external_id, id, dnc FROM leads"
        " WHERE source = $1 AND external_id = ANY($2::text[])",
        source,
        external_ids,
    )
    return {row["external_id"]: (row["id"], row["dnc"]) for row in rows}


async def matches_and_listed(
    connection: Connection,
    phones: list[str],
    emails: list[str],
    since: dt.datetime,
) -> tuple[list[asyncpg.Record], set[str]]:
    """In one round trip: leads received since ``since`` sharing a phone or an
    e-mail (oldest first), and which of the phones are on the DNC list."""
    rows = await connection.fetch(
        f"""
        WITH listed AS (
            SELECT coalesce(array_agg(phone), '{{}}') AS phones
            FROM dnc_phones WHERE phone = ANY($1::text[])
        )
        SELECT listed.phones AS listed_phones, matched.*
        FROM listed LEFT JOIN LATERAL (
            -- One arm per index (leads_phone_received, leads_email_received):
            -- written as an OR, a batch's long lists get a sequential scan.
            SELECT {", ".join(LEAD_COLUMNS)} FROM leads
            WHERE id IN (
                SELECT id FROM leads
                WHERE phone = ANY($1::text[]) AND received_at >= $3
                UNION ALL
                SELECT id FROM leads
                WHERE email = ANY($2::text[]) AND received_at >= $3
            )
            ORDER BY received_at, id
        ) matched ON true
        """,
        phones,
        emails,
        since,
    )
    listed = set(rows[0]["listed_phones"]) if rows else set()
    return [row for row in rows if row["id"] is not None], listed


#: SQL array type of each lead column, for inserting through unnest().
_COLUMN_ARRAY_TYPES = {
    "id": "uuid[]",
    "timezones": "text[]",  # sent joined by "\n" and split again: see below
    "consent_call": "bool[]",
    "consent_sms": "bool[]",
    "consent_email": "bool[]",
    "attributes": "jsonb[]",
    "dnc": "bool[]",
    "received_at": "timestamptz[]",
    "updated_at": "timestamptz[]",
}


def _insert_leads_sql() -> str:
    arrays = ", ".join(
        f"${index}::{_COLUMN_ARRAY_TYPES.get(column, 'text[]')}"
        for index, column in enumerate(LEAD_COLUMNS, start=1)
    )
    selected = ", ".join(
        # unnest() would flatten an array of arrays, so the zones of each lead
        # travel as one newline-joined string.
        "string_to_array(timezones, E'\\n')" if column == "timezones" else column
        for column in LEAD_COLUMNS
    )
    outbox, _ = outbox_insert(len(LEAD_COLUMNS) + 1)
    # Leads and their events in one statement: one round trip fewer for
    # every request (both data-modifying parts always run to completion).
    return f"""
        WITH new_leads AS (
            INSERT INTO leads ({", ".join(LEAD_COLUMNS)})
            SELECT {selected}
            FROM unnest({arrays}) AS new({", ".join(LEAD_COLUMNS)})
        ), queued AS ({outbox})
        SELECT 1
    """


_INSERT_LEADS_AND_EVENTS = _insert_leads_sql()


async def insert_leads_and_events(
    connection: Connection,
    rows: Sequence[dict[str, Any]],
    events: Sequence[Envelope],
    now: dt.datetime,
) -> None:
    """Insert new leads (dicts keyed by :data:`LEAD_COLUMNS`) and queue
    ``events`` in the outbox, in one statement."""
    if not rows and not events:
        return
    columns = [
        [
            "\n".join(row[column]) if column == "timezones" else row[column]
            for row in rows
        ]
        for column in LEAD_COLUMNS
    ]
    await connection.execute(
        _INSERT_LEADS_AND_EVENTS, *columns, *outbox_arguments(events, now_ts=now)
    )


async def update_lead(
    connection: Connection,
    lead_id: uuid.UUID,
    changes: dict[str, Any],
) -> None:
    # Column names come from LEAD_COLUMNS only, never from the request.
    assert set(changes) <= set(LEAD_COLUMNS)
    assignments = ", ".join(
        f"{column} = ${index}" for index, column in enumerate(changes, start=2)
    )
    await connection.execute(
        f"UPDATE leads SET {assignments} WHERE id = $1", lead_id, *changes.values()
    )


async def insert_duplicates(
    connection: Connection, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Rows of (lead_id, source, matched_on, action, received_at)."""
    if rows:
        await connection.copy_records_to_table(
            "duplicates",
            records=rows,
            columns=("lead_id", "source", "matched_on", "action", "received_at"),
        )


async def lead_with_counts(
    connection: Connection | asyncpg.Pool, lead_id: uuid.UUID, source: str
) -> asyncpg.Record | None:
    """The lead if it belongs to ``source``; ``dnc`` is whether its phone is on
    the list now (the stored column is what it was on arrival)."""
    return await connection.fetchrow(
        f"""
        SELECT {", ".join(f"l.{column}" for column in LEAD_COLUMNS if column != "dnc")},
               EXISTS (SELECT 1 FROM dnc_phones d WHERE d.phone = l.phone) AS dnc,
               (SELECT count(*) FROM duplicates u WHERE u.lead_id = l.id)
                   AS duplicates
        FROM leads l WHERE l.id = $1 AND l.source = $2
        """,
        lead_id,
        source,
    )


async def lock_leads(
    connection: Connection, lead_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Lock stored leads for a merge, in id order, and re-read them."""
    return await connection.fetch(
        f"""
        SELECT {", ".join(LEAD_COLUMNS)} FROM leads
        WHERE id = ANY($1::uuid[])
        ORDER BY id
        FOR UPDATE
        """,
        lead_ids,
    )


async def list_phone(connection: Connection, phone: str, now: dt.datetime) -> None:
    await connection.execute(
        "INSERT INTO dnc_phones (phone, listed_at) VALUES ($1, $2)"
        " ON CONFLICT (phone) DO NOTHING",
        phone,
        now,
    )


async def unlist_phone(connection: Connection, phone: str) -> None:
    await connection.execute("DELETE FROM dnc_phones WHERE phone = $1", phone)
