"""A small migration runner over plain SQL files.

Each service keeps numbered files in its ``migrations/`` folder
(``0001_create_leads.sql``). The runner applies, in order, every file that is
not yet recorded in ``<schema>.schema_migrations``. All pending files and
their records commit in one transaction, so a failing file leaves the schema
exactly as it was.

Several processes may start at once: a transaction-scoped advisory lock per
schema makes them take turns, and the late ones find nothing left to do. A
file that was changed after it was applied is refused (its checksum differs):
migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shared.db import Connection, checked_identifier

logger = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The migration folder or the recorded history is inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path) -> list[Migration]:
    """Read the migration files in ``folder``, sorted by version."""
    migrations: list[Migration] = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: expected NNNN_snake_name.sql")
        migrations.append(Migration(int(match[1]), path.stem, path.read_text()))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{folder}: two migrations share a version number")
    return migrations


#: Tables every service schema has (outbox, processed events), kept here once.
COMMON_MIGRATIONS = Path(__file__).parent / "sql"


async def migrate_service(
    connection: Connection, schema: str, folder: Path
) -> list[str]:
    """Apply the common tables, then the service's own files, to ``schema``."""
    applied = await migrate(connection, schema, COMMON_MIGRATIONS, track="common")
    return applied + await migrate(connection, schema, folder, track="service")


async def migrate(
    connection: Connection, schema: str, folder: Path, *, track: str
) -> list[str]:
    """Apply pending migrations of one ``track`` in ``schema``; returns names applied.

    A track is an independent numbered series of files in one schema: the
    common tables are one track, the service's own tables another.
    """
    schema = checked_identifier(schema)
    migrations = discover(folder)
    applied_now: list[str] = []

    async with connection.transaction():
        # One lock per schema, released at commit; hashtext keeps it stable.
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtext('redial.migrate.' || $1))", schema
        )
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await connection.execute(
            f"""
            CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                track text NOT NULL,
                version integer NOT NULL,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (track, version)
            )
            """
        )
        rows = await connection.fetch(
            f"SELECT version, name, checksum FROM {schema}.schema_migrations"
            " WHERE track = $1",
            track,
        )
        recorded = {row["version"]: row for row in rows}
        _check_history(schema, migrations, recorded)

        for migration in migrations:
            if migration.version in recorded:
                continue
            await connection.execute(f"SET LOCAL search_path = {schema}, public")
            try:
                await connection.execute(migration.sql)
            except asyncpg.PostgresError as error:
                raise MigrationError(
                    f"{schema}: {migration.name} failed: {error}"
                ) from error
            await connection.execute(
                f"INSERT INTO {schema}.schema_migrations"
                " (track, version, name, checksum) VALUES ($1, $2, $3, $4)",
                track,
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.name)
            logger.info(
                "migration.applied schema=%s track=%s name=%s",
                schema,
                track,
                migration.name,
            )
    return applied_now


def _check_history(
    schema: str, migrations: list[Migration], recorded: dict[int, asyncpg.Record]
) -> None:
    known = {migration.version: migration for migration in migrations}
    for version, row in recorded.items():
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"{schema}: database has migration {row['name']} that this code lacks"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"{schema}: {migration.name} changed after it was applied"
            )
