"""With the broker down intake keeps accepting; the events arrive later."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from services.intake.app import create_app
from shared.clock import ManualClock
from shared.db import connect
from shared.events import DncUpdated, new_event
from shared.kafka import ensure_topics
from shared.launcher.stack import Broker
from tests.conftest import Server, Stack, unique_phone
from tests.intake.conftest import intake_settings, make_source
from tests.kafka_reader import events_about


async def test_leads_accepted_during_an_outage_are_published_after_it(
    stack: Stack, scratch_database: str, own_broker: Broker, clock: ManualClock
) -> None:
    """An intake of its own (fresh database, own broker) so stopping the broker
    disturbs no other test; its start also migrates an empty database."""
    settings = intake_settings(
        stack,
        database_url=scratch_database,
        kafka_bootstrap_servers=own_broker.bootstrap,
    )
    server = Server(create_app(settings, clock, configure_logging=False))
    await server.start()
    db = await connect(scratch_database, server_settings={"search_path": "intake"})
    try:
        source = await make_source(db, server, clock)
        own_broker.stop()

        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            answers = [
                await http.post(
                    "/v1/leads", headers=source.auth, json={"phone": unique_phone()}
                )
                for _ in range(5)
            ]
            assert [answer.status_code for answer in answers] == [202] * 5
            ids = {answer.json()["lead_id"] for answer in answers}
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                )
                == 5
            )
            ready = await _ready_while_broker_down(http)
            assert ready.status_code == 200
            assert ready.json()["checks"]["broker"].startswith("unreachable")

        # Tansu keeps nothing across a restart: the topics come back empty.
        own_broker.start()
        await ensure_topics(own_broker.bootstrap, partitions=3)
        events = await events_about(own_broker.bootstrap, ids, count=5, timeout=40)

        assert sorted(event.subject for event in events) == sorted(ids)
        assert {event.type for event in events} == {"lead.received.v1"}
        assert await _unpublished(db) == 0
    finally:
        await db.close()
        await server.stop()


async def _ready_while_broker_down(http: httpx.AsyncClient) -> httpx.Response:
    """/readyz once the relay has noticed the outage (its first send fails)."""
    async with asyncio.timeout(30):
        while True:
            answer = await http.get("/readyz")
            if answer.json()["checks"]["broker"] != "unknown":
                return answer
            await asyncio.sleep(0.1)


async def _unpublished(db: asyncpg.Connection) -> int:
    async with asyncio.timeout(10):
        while count := await db.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        ):
            await asyncio.sleep(0.05)
    return count


async def test_phone_put_on_the_dnc_list_is_flagged_at_intake(
    stack: Stack, intake: Server, clock: ManualClock
) -> None:
    """The queue owns the list; intake learns it from dnc.updated events."""
    db = await connect(stack.dsn, server_settings={"search_path": "intake"})
    phone = unique_phone()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        event = new_event(
            DncUpdated(phone=phone, listed=True, updated_at=clock.now()),
            source="redial/queue",
            subject=phone,
            time=clock.now(),
        )
        await producer.send_and_wait("lead-events", event.to_json(), key=event.key)
        async with asyncio.timeout(20):
            while not await db.fetchval(
                "SELECT 1 FROM dnc_phones WHERE phone = $1", phone
            ):
                await asyncio.sleep(0.05)
        source = await make_source(db, intake, clock)

        async with httpx.AsyncClient(base_url=intake.url) as http:
            answer = await http.post(
                "/v1/leads", headers=source.auth, json={"phone": phone}
            )

        assert answer.status_code == 202
        assert answer.json()["dnc"] is True
        [received] = await events_about(
            stack.bootstrap, {answer.json()["lead_id"]}, count=1
        )
        assert orjson.loads(received.to_json())["data"]["dnc"] is True
    finally:
        await producer.stop()
        await db.close()


async def test_database_down_is_a_503_problem_then_recovers(
    stack: Stack, scratch_database: str, clock: ManualClock
) -> None:
    """With PostgreSQL refusing connections, requests get problem JSON with a
    503 and Retry-After (not a bare 500), readiness says so, and the service
    recovers by itself when the database is back."""
    settings = intake_settings(stack, database_url=scratch_database)
    server = Server(create_app(settings, clock, configure_logging=False))
    await server.start()
    name = scratch_database.partition("?")[0].rpartition("/")[2]
    admin = await asyncpg.connect(stack.admin_dsn)
    try:
        db = await connect(scratch_database, server_settings={"search_path": "intake"})
        source = await make_source(db, server, clock)
        await db.close()
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )

        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            down = await http.post(
                "/v1/leads", headers=source.auth, json={"phone": unique_phone()}
            )
            ready = await http.get("/readyz")
            await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            back = await _first_accepted(http, source.auth)

        assert down.status_code == 503, down.text
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["code"] == "service_unavailable"
        assert down.headers["retry-after"] == "1"
        assert ready.status_code == 503
        assert back.status_code == 202
    finally:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await admin.close()
        await server.stop()


async def _first_accepted(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> httpx.Response:
    """Posts until one is accepted: the pool replaces its dead connections."""
    async with asyncio.timeout(20):
        while True:
            answer = await http.post(
                "/v1/leads", headers=headers, json={"phone": unique_phone()}
            )
            if answer.status_code != 503:
                return answer
            await asyncio.sleep(0.1)
