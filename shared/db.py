"""PostgreSQL access through asyncpg.

Each service owns one schema and reaches it through a pool whose connections
have that schema first on their ``search_path``. JSON columns decode to Python
objects with orjson.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

#: What a query function accepts: a plain connection or one lent by a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def checked_identifier(name: str) -> str:
    """Return ``name`` if it is safe to splice into SQL as an identifier."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")
    return name


def _decode_jsonb(payload: bytes) -> object:
    # jsonb's binary form is a version byte (1) followed by the JSON text.
    return orjson.loads(payload[1:])


#: SQLSTATE classes that describe the server's state rather than the request:
#: connection (08), transaction rollback (40: serialization, deadlock),
#: insufficient resources (53), operator intervention (57: shutdown, cancel).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57"})
#: Lock not available (lock_timeout), and "not in prerequisite state", which
#: is what a database refusing connections answers.
_TRANSIENT_SQLSTATES = frozenset({"55P03", "55000"})


def is_transient(error: BaseException) -> bool:
    """True when a database failure says "try again later", not "never"."""
    # OSError covers TimeoutError and refused or reset sockets.
    connection_trouble = asyncpg.PostgresConnectionError | asyncpg.InterfaceError
    if isinstance(error, connection_trouble | OSError):
        return True
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or ""
        return (
            sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
            or sqlstate in _TRANSIENT_SQLSTATES
        )
    return False


async def _init_connection(connection: asyncpg.Connection) -> None:
    # Binary codecs, so that COPY (always binary in asyncpg) works with JSON.
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )
    await connection.set_type_codec(
        "json",
        encoder=orjson.dumps,
        decoder=orjson.loads,
        schema="pg_catalog",
        format="binary",
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without the server-side reset query.

    asyncpg resets every released connection with one more round trip
    (``RESET ALL``, ``UNLISTEN *``, unlock advisory locks…). Pooled connections
    here never change session state: settings come from ``server_settings``,
    locks are transaction-scoped, nothing LISTENs. Long-lived session state
    (the outbox relay's leader lock) uses a connection outside any pool.
    """


async def create_pool(
    dsn: str, *, schema: str, min_size: int = 2, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in ``schema`` first."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        # Nothing here should wait long: a stuck lock or a hung server shows
        # up as an error (503 for a request, a retry for a consumer).
        command_timeout=30,
        server_settings={
            "search_path": f"{checked_identifier(schema)},public",
            "application_name": f"redial-{schema}",
            "lock_timeout": "10s",
            "idle_in_transaction_session_timeout": "60s",
        },
    )
    assert pool is not None
    return pool


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection with the project's JSON codecs (scripts, launcher, tests)."""
    connection = await asyncpg.connect(dsn, **kwargs)
    await _init_connection(connection)
    return connection
