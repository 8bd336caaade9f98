"""Operator commands for intake: ``python -m services.intake.cli source NAME``.

Creates or updates a source and prints its credentials. A new key or secret
is generated unless one is given; the API key is shown only here, since the
database keeps its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from services.intake import repository
from services.intake.app import MIGRATIONS
from services.intake.auth import hash_api_key, new_api_key, new_webhook_secret
from services.intake.mappings import MAPPINGS
from services.intake.settings import IntakeSettings
from shared.clock import SystemClock
from shared.db import connect
from shared.migrations import migrate_service


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.intake.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    source = commands.add_parser("source", help="create or update a lead source")
    source.add_argument("name")
    source.add_argument("--mapping", choices=sorted(MAPPINGS), default="generic")
    source.add_argument(
        "--mapping-options",
        default="{}",
        help='JSON, e.g. {"fields": {"tel": "phone"}}',
    )
    source.add_argument(
        "--duplicate-policy",
        choices=["ignore", "merge_fill", "merge_overwrite"],
        default="ignore",
    )
    source.add_argument("--api-key", help="use this key instead of generating one")
    source.add_argument(
        "--webhook-secret", help="use this secret instead of generating one"
    )
    source.add_argument(
        "--rotate",
        action="store_true",
        help="issue a new key and secret for an existing source",
    )
    arguments = parser.parse_args(argv)
    asyncio.run(_save_source(arguments))
    return 0


async def _save_source(arguments: argparse.Namespace) -> None:
    settings = IntakeSettings()
    connection = await connect(settings.database_url)
    try:
        await migrate_service(connection, settings.db_schema, MIGRATIONS)
        await connection.execute(f"SET search_path = {settings.db_schema}")
        existing = await repository.source_by_name(connection, arguments.name)
        fresh = existing is None or arguments.rotate
        api_key = arguments.api_key or (new_api_key(arguments.name) if fresh else None)
        secret = arguments.webhook_secret or (new_webhook_secret() if fresh else None)
        await repository.save_source(
            connection,
            name=arguments.name,
            api_key_hash=hash_api_key(api_key) if api_key else None,
            webhook_secret=secret,
            mapping=arguments.mapping,
            mapping_options=orjson.loads(arguments.mapping_options),
            duplicate_policy=arguments.duplicate_policy,
            now=SystemClock().now(),
        )
    finally:
        await connection.close()
    print(f"source {arguments.name}: saved")
    if api_key:
        print(f"api key:        {api_key}")
    if secret:
        print(f"webhook secret: {secret}")


if __name__ == "__main__":
    sys.exit(main())
