"""The SQL migration runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.launcher.stack import prepare
from shared.migrations import MigrationError, discover, migrate, migrate_service
from tests.conftest import ROOT, Stack


@pytest.fixture
async def connection(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stack.dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def schema() -> str:
    return f"m_{secrets.token_hex(4)}"


def write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(sql)


async def tables(connection: asyncpg.Connection, schema: str) -> set[str]:
    rows = await connection.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        schema,
    )
    return {row["table_name"] for row in rows}


async def test_empty_schema_gets_every_migration_in_order(
    connection: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_second.sql", "ALTER TABLE a ADD COLUMN name text;")

    applied = await migrate(connection, schema, tmp_path, track="service")

    assert applied == ["0001_first", "0002_second"]
    assert await tables(connection, schema) == {"a", "schema_migrations"}


async def test_second_run_applies_nothing(
    connection: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    await migrate(connection, schema, tmp_path, track="service")

    assert await migrate(connection, schema, tmp_path, track="service") == []


async def test_existing_schema_gets_only_the_new_file(
    connection: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    await migrate(connection, schema, tmp_path, track="service")
    await connection.execute(f"INSERT INTO {schema}.a VALUES (1)")
    write(
        tmp_path, "0002_second.sql", "ALTER TABLE a ADD COLUMN name text DEFAULT 'x';"
    )

    assert await migrate(connection, schema, tmp_path, track="service") == [
        "0002_second"
    ]
    assert await connection.fetchval(f"SELECT name FROM {schema}.a WHERE id = 1") == "x"


async def test_changed_applied_file_is_refused(
    connection: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    await migrate(connection, schema, tmp_path, track="service")
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id bigint);")

    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(connection, schema, tmp_path, track="service")


async def test_failing_file_leaves_the_schema_as_it_was(
    connection: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_broken.sql", "ALTER TABLE nowhere ADD COLUMN x int;")

    with pytest.raises(MigrationError, match="0002_broken failed"):
        await migrate(connection, schema, tmp_path, track="service")

    assert await tables(connection, schema) == set()


async def test_database_ahead_of_the_code_is_refused(
    connection: asyncpg.Connection, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_second.sql", "CREATE TABLE b (id int);")
    await migrate(connection, schema, tmp_path, track="service")
    (tmp_path / "0002_second.sql").unlink()

    with pytest.raises(MigrationError, match="that this code lacks"):
        await migrate(connection, schema, tmp_path, track="service")


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
def test_badly_named_file_is_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path, name, "SELECT 1;")

    with pytest.raises(MigrationError, match="NNNN_snake_name"):
        discover(tmp_path)


async def test_processes_starting_together_apply_each_file_once(
    stack: Stack, schema: str, tmp_path: Path
) -> None:
    write(tmp_path, "0001_first.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_slow.sql", "SELECT pg_sleep(0.2); CREATE TABLE b (id int);")
    connections = [await asyncpg.connect(stack.dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(migrate(c, schema, tmp_path, track="service") for c in connections)
        )
    finally:
        for connection in connections:
            await connection.close()

    assert sorted(map(len, results)) == [0, 0, 2]


async def test_service_schemas_migrate_on_an_empty_and_an_existing_database(
    scratch_database: str, stack: Stack
) -> None:
    await prepare(scratch_database, stack.bootstrap, partitions=3)
    connection = await asyncpg.connect(scratch_database)
    try:
        intake_tables = await tables(connection, "intake")
        assert {"leads", "sources", "outbox", "processed_events"} <= intake_tables
        again = await migrate_service(
            connection, "intake", ROOT / "services/intake/migrations"
        )
        assert again == []
    finally:
        await connection.close()
