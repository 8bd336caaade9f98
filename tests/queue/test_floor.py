"""``GET /v1/floor``: agents by status, and every pool's queued, due-now and
leased leads with the agents drawing from it, counted as the pool stats
count them."""

from __future__ import annotations

import httpx

from services.queue.app import create_app
from shared.clock import ManualClock
from shared.launcher.stack import free_port
from tests.conftest import Stack, served
from tests.queue.conftest import START, Floor, queue_settings

NOBODY = {"available": 0, "busy": 0, "away": 0, "offline": 0}


async def lease(floor: Floor, agent: str) -> dict[str, str]:
    answer = await floor.next_lead(agent)
    assert answer.status_code == 200, answer.text
    leased: dict[str, str] = answer.json()
    return leased


async def a_worked_pool(floor: Floor) -> tuple[str, str]:
    """Pool with 4 leads (1 converted, 1 waiting after a call, 1 leased, 1
    ready) and an empty one; ann (first pool) available, bob (both) on a
    lease, cat (first) away, dan (second) offline."""
    pool, other = await floor.pool(), await floor.pool()
    ann = await floor.agent([pool])
    bob = await floor.agent([pool, other])
    cat = await floor.agent([pool], available=False)
    await floor.status(cat, "away")
    await floor.agent([other], available=False)
    await floor.leads(pool, 4)
    for disposition in ("converted", "no_answer"):
        leased = await lease(floor, ann)
        answer = await floor.outcome(leased["lease_id"], disposition)
        assert answer.status_code == 200, answer.text
    assert (await lease(floor, bob))["pool"] == pool
    return pool, other


def pool_entry(body: dict[str, object], name: str) -> dict[str, object]:
    pools = body["pools"]
    assert isinstance(pools, list)
    [entry] = [entry for entry in pools if entry["pool"] == name]
    assert isinstance(entry, dict)
    return entry


async def test_floor_counts_each_pools_live_leads_and_its_agents(
    floor: Floor,
) -> None:
    pool, other = await a_worked_pool(floor)

    answer = await floor.api.get("/v1/floor")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert pool_entry(body, pool) == {
        "pool": pool,
        "queued": 2,
        "due_now": 1,
        "leased": 1,
        "agents": {"available": 1, "busy": 1, "away": 1, "offline": 0},
    }
    assert pool_entry(body, other) == {
        "pool": other,
        "queued": 0,
        "due_now": 0,
        "leased": 0,
        "agents": {"available": 0, "busy": 1, "away": 0, "offline": 1},
    }


async def test_floor_depth_is_what_the_pool_stats_say(floor: Floor) -> None:
    pool, other = await a_worked_pool(floor)

    body = (await floor.api.get("/v1/floor")).json()

    for name in (pool, other):
        stats = (await floor.api.get(f"/v1/pools/{name}/stats")).json()
        entry = pool_entry(body, name)
        fields = ("queued", "due_now", "leased")
        assert {key: entry[key] for key in fields} == {
            key: stats[key] for key in fields
        }
    assert stats_of(await floor.api.get(f"/v1/pools/{pool}/stats")) == {
        "converted": 1,
        "waiting": 1,
        "leased": 1,
        "ready": 1,
    }


def stats_of(answer: httpx.Response) -> dict[str, int]:
    by_state: dict[str, int] = answer.json()["by_state"]
    return {state: leads for state, leads in by_state.items() if leads}


async def test_floor_of_a_new_queue_counts_each_agent_once_overall(
    stack: Stack, scratch_database: str
) -> None:
    """On a database of its own, so the totals hold only this test's agents:
    bob draws from two pools and counts in each, but once overall. No broker:
    leads are handed to the handler, events wait in the outbox, and a
    consumer joining the session's group would rebalance it."""
    settings = queue_settings(
        stack,
        database_url=scratch_database,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        database_pool_max=5,
    )
    clock = ManualClock(START)
    app = create_app(settings, clock, configure_logging=False)
    async with (
        served(app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as api,
    ):
        empty = (await api.get("/v1/floor")).json()
        pool, other = await a_worked_pool(Floor(api, server, clock))
        answer = await api.get("/v1/floor")

    assert empty == {
        "agents": NOBODY,
        "queued": 0,
        "due_now": 0,
        "leased": 0,
        "pools": [
            {
                "pool": "default",
                "queued": 0,
                "due_now": 0,
                "leased": 0,
                "agents": NOBODY,
            }
        ],
        "at": "2026-12-02T16:00:00Z",
    }
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["agents"] == {"available": 1, "busy": 1, "away": 1, "offline": 1}
    assert (body["queued"], body["due_now"], body["leased"]) == (2, 1, 1)
    assert [entry["pool"] for entry in body["pools"]] == sorted(
        ["default", pool, other]
    )
