"""The manager page's own stack, shared by its HTML and browser tests.

A database and a broker of their own (so the page shows only this data, and
the extra queue and metrics services never join the session's consumer
groups), a queue service and a metrics service reading it, each with a manual
clock, and one scripted data set: three business days of calls on the metrics
side, a small call floor on the queue side. Each test module makes
:func:`page_stack` a module fixture; the helpers here read the figures back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from services.metrics.app import create_app as create_metrics_app
from services.metrics.page import formatted
from services.queue.app import create_app as create_queue_app
from shared.clock import ManualClock
from shared.kafka import ensure_topics
from shared.launcher.stack import Broker, ensure_database, free_port
from tests.conftest import Server, Stack, served
from tests.metrics.conftest import START, Script, metrics_settings
from tests.queue.conftest import START as QUEUE_START
from tests.queue.conftest import Floor, queue_settings

WEB, PARTNERS = "web", "partners"
GOOGLE, FACEBOOK = "google-ads", "facebook"


@dataclass
class PageStack:
    base: Stack
    queue: Server
    metrics: Server
    clock: ManualClock
    #: The three scripted business days, the last one today.
    days: list[dt.date]
    #: The metrics side's script, and its leads by letter (three_days).
    script: Script
    leads: dict[str, uuid.UUID]


@contextlib.asynccontextmanager
async def page_stack(stack: Stack, log_dir: Path) -> AsyncIterator[PageStack]:
    """The whole stack with its data; a test module makes it its fixture."""
    async with (
        own_base(stack, log_dir) as base,
        queue_service(base, ManualClock(QUEUE_START)) as (queue, queue_clock),
    ):
        clock = ManualClock(START.astimezone(dt.UTC))
        async with metrics_page(base, clock, queue.url) as metrics:
            script = Script(metrics, clock, pool=WEB, source=GOOGLE)
            leads = await three_days(script)
            await call_floor(queue, queue_clock)
            yield PageStack(
                base=base,
                queue=queue,
                metrics=metrics,
                clock=clock,
                days=[script.day + dt.timedelta(days=n) for n in range(3)],
                script=script,
                leads=leads,
            )


@contextlib.asynccontextmanager
async def own_base(stack: Stack, log_dir: Path) -> AsyncIterator[Stack]:
    """A database and a broker of the page's own, on the session's server."""
    name = f"redial_page_{secrets.token_hex(4)}"
    dsn = await ensure_database(stack.admin_dsn, name)
    broker = Broker(free_port(), log_path=log_dir / "tansu.log")
    broker.start()
    try:
        await ensure_topics(broker.bootstrap, partitions=1)
        yield Stack(admin_dsn=stack.admin_dsn, dsn=dsn, broker=broker)
    finally:
        broker.stop()
        connection = await asyncpg.connect(stack.admin_dsn)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def queue_service(
    base: Stack, clock: ManualClock
) -> AsyncIterator[tuple[Server, ManualClock]]:
    settings = queue_settings(base, database_pool_max=5)
    app = create_queue_app(settings, clock, configure_logging=False)
    async with served(app) as server:
        yield server, clock


@contextlib.asynccontextmanager
async def metrics_page(
    base: Stack, clock: ManualClock, queue_url: str, **settings: object
) -> AsyncIterator[Server]:
    """A metrics service on the page's stack that reads the floor at
    ``queue_url``."""
    chosen = metrics_settings(
        base, queue_url=queue_url, database_pool_max=5, **settings
    )
    app = create_metrics_app(chosen, clock, configure_logging=False)
    async with served(app) as server:
        yield server


async def three_days(script: Script) -> dict[str, uuid.UUID]:
    """Leads of two pools and two sources over three days; the clock ends at
    noon of the third (today). Target 4, cadence 0 1h 4h 1d, so a lead that
    arrives at 09:00 has attempts due at 09:00, 10:00, 14:00 and at 14:00 the
    next day.

    - Day 0, web / google-ads: docs/metrics.md's worked example. A gets 3
      calls, B 5, C (13:00) 1: web's penetration is 7/9.
    - Day 1: A's 4th call reaches the lead (first contact at attempt 4), B's
      4th slot goes uncalled, C gets its 2nd call. In partners / facebook, D
      (10:00) converts on its 2nd call and G (09:00) gets its 3 calls.
    - Day 2 (today, noon): G converts on its 4th call; E (web / facebook,
      09:00) got 1 of its 2 due calls and F (partners / google-ads, 11:50)
      none: both are below target, F first.
    """
    local = script.local

    def lead(pool: str, source: str, at: dt.datetime) -> uuid.UUID:
        script.pool, script.source = pool, source
        return script.lead(at)

    def calls(
        lead_id: uuid.UUID, *moments: dt.datetime, last: str = "no_answer"
    ) -> None:
        for attempt, at in enumerate(moments, start=1):
            disposition = last if attempt == len(moments) else "no_answer"
            script.call(lead_id, at, disposition, attempt=attempt)

    a = lead(WEB, GOOGLE, local(9))
    b = lead(WEB, GOOGLE, local(9))
    c = lead(WEB, GOOGLE, local(13))
    calls(
        a, local(9, 2), local(10, 30), local(14, 10), local(15, day=1), last="contacted"
    )
    calls(b, local(9, 1), local(9, 20), local(9, 40), local(11), local(15))
    calls(c, local(16), local(10, day=1))

    d = lead(PARTNERS, FACEBOOK, local(10, day=1))
    script.call(d, local(10, 3, day=1), "contacted", attempt=1)
    script.call(d, local(11, 5, day=1), "converted", attempt=2)
    script.converted(d, local(11, 5, day=1), attempt=2)
    g = lead(PARTNERS, FACEBOOK, local(9, day=1))
    calls(g, local(9, 5, day=1), local(10, 10, day=1), local(14, 30, day=1))
    script.call(g, local(9, 30, day=2), "converted", attempt=4)
    script.converted(g, local(9, 30, day=2), attempt=4)

    e = lead(WEB, FACEBOOK, local(9, day=2))
    script.call(e, local(9, 10, day=2), attempt=1)
    f = lead(PARTNERS, GOOGLE, local(11, 50, day=2))

    script.clock.set(local(12, day=2))
    await script.apply()
    return {"A": a, "B": b, "C": c, "D": d, "E": e, "F": f, "G": g}


async def call_floor(queue: Server, clock: ManualClock) -> None:
    """Pools web and partners with 3 and 1 new leads; ann (web) available,
    bob (both pools) on a lease of the partners lead (the oldest, so the
    first served), cat (partners) away, dan (web) offline."""
    async with httpx.AsyncClient(base_url=queue.url, timeout=30) as api:
        for name in (WEB, PARTNERS):
            answer = await api.put(f"/v1/pools/{name}", json={})
            assert answer.status_code == 201, answer.text
        for agent, pools, status in (
            ("ann", [WEB], "available"),
            ("bob", [WEB, PARTNERS], "available"),
            ("cat", [PARTNERS], "away"),
            ("dan", [WEB], "offline"),
        ):
            answer = await api.put(f"/v1/agents/{agent}", json={"pools": pools})
            assert answer.status_code == 201, answer.text
            answer = await api.put(
                f"/v1/agents/{agent}/status", json={"status": status}
            )
            assert answer.status_code == 200, answer.text
        floor = Floor(api, queue, clock)
        await floor.route(GOOGLE, WEB)
        await floor.route(FACEBOOK, PARTNERS)
        await floor.receive(floor.snapshot(FACEBOOK))
        clock.advance(60)
        await floor.receive(*(floor.snapshot(GOOGLE) for _ in range(3)))
        leased = await floor.next_lead("bob")
        assert leased.status_code == 200, leased.text
        assert leased.json()["pool"] == PARTNERS


def another_metrics_page(
    page: PageStack, queue_url: str, **settings: object
) -> contextlib.AbstractAsyncContextManager[Server]:
    """A second metrics service on the page's data, reading the floor at
    ``queue_url``. It gets no broker: its consumer joining the first one's
    group would hold its stop up for seconds of rebalancing, and the page
    does not need it (the data is already applied)."""
    closed = f"127.0.0.1:{free_port()}"
    return metrics_page(
        page.base, page.clock, queue_url, kafka_bootstrap_servers=closed, **settings
    )


# --- reading the page back ----------------------------------------------------------


@dataclass
class Shown:
    """One figure as the page shows it."""

    name: str
    attributes: dict[str, str]
    text: str = ""

    @property
    def value(self) -> Any:
        return orjson.loads(self.attributes["data-value"])


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: list[Shown] = []
        self._open: Shown | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if "data-figure" in attributes:
            self._open = Shown(attributes["data-figure"], attributes)
            self.figures.append(self._open)

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text += data


def figures_of(page_html: str) -> dict[str, Shown]:
    """The page's figures by name; a name used twice fails the test."""
    parser = _Figures()
    parser.feed(page_html)
    names = [shown.name for shown in parser.figures]
    assert len(names) == len(set(names)), "figure names must be unique"
    return {shown.name: shown for shown in parser.figures}


def resolve(body: Any, pointer: list[Any]) -> Any:
    """Follows a figure's pointer through an API answer (written here again,
    not imported, so the page's own reading is what is checked)."""
    for step in pointer:
        if isinstance(step, dict):
            [(key, wanted)] = step.items()
            body = next((item for item in body if item.get(key) == wanted), None)
        elif isinstance(step, int):
            body = body[step] if step < len(body) else None
        else:
            body = body.get(step)
        if body is None:
            return None
    return body


@dataclass
class Answers:
    """The API answers the figures name, each fetched once."""

    metrics: httpx.AsyncClient
    queue: httpx.AsyncClient
    fetched: dict[tuple[str, str], Any] = field(default_factory=dict)

    async def expected(self, shown: Shown) -> Any:
        service, api = shown.attributes["data-service"], shown.attributes["data-api"]
        if (service, api) not in self.fetched:
            client = self.metrics if service == "metrics" else self.queue
            answer = await client.get(api)
            assert answer.status_code == 200, (api, answer.text)
            self.fetched[service, api] = answer.json()
        pointer = orjson.loads(shown.attributes["data-pointer"])
        return resolve(self.fetched[service, api], pointer)


async def mismatches(
    shown: dict[str, Shown], answers: Answers, texts: dict[str, str] | None = None
) -> list[str]:
    """Every figure whose value or text differs from its API answer; ``texts``
    replaces the parsed texts (with what a browser displays)."""
    wrong = []
    for name, figure in shown.items():
        if "data-api" not in figure.attributes:
            continue
        expected = await answers.expected(figure)
        text = (texts or {}).get(name, figure.text)
        want_text = formatted(figure.attributes["data-format"], expected)
        if figure.value != expected or text != want_text:
            wrong.append(f"{name}: shows {figure.value!r}/{text!r}, API {expected!r}")
    return wrong
