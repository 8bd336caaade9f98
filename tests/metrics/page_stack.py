"""The manager page's own stack, shared by its HTML and browser tests.

A database and a broker of their own (so the page shows only this data, and
the extra queue service never joins the session's consumer groups), a queue
service and a metrics service reading it, each with a manual clock, and one
scripted data set: three business days of calls on the metrics side, applied
directly (the metrics service gets no broker), a small call floor on the
queue side. Each test module makes
:func:`page_stack` a module fixture; the helpers here read the figures back
and check each against :data:`MEANINGS`, the table of what it must be.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import secrets
import urllib.parse
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
        # No broker for the metrics side: the script applies its data. On the
        # queue's broker it would also count the floor's leads (lead.queued on
        # the first day, in web and partners), as soon as it had read them and
        # a slot count ran: the first day's figures depended on timing.
        async with metrics_page(
            base, clock, queue.url, kafka_bootstrap_servers=no_broker()
        ) as metrics:
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
    ``queue_url``; like the first, it gets no broker."""
    return metrics_page(
        page.base,
        page.clock,
        queue_url,
        kafka_bootstrap_servers=no_broker(),
        **settings,
    )


def no_broker() -> str:
    """A bootstrap address nothing listens on: the metrics consumer keeps
    retrying there and never reads an event."""
    return f"127.0.0.1:{free_port()}"


# --- what each figure must be ------------------------------------------------------

Pointer = list[Any]


@dataclass(frozen=True)
class Meaning:
    """What a figure must be: the service and GET that answer it, the steps to
    its field in that answer, how its value is written (``data-format``), and
    the headings it is shown under: a tile's label, or a table cell's row and
    column headings (a row without a heading cell has "")."""

    service: str
    api: str
    pointer: Pointer
    kind: str
    headings: tuple[str, ...]


def _metrics(api: str, pointer: Pointer, kind: str, *headings: str) -> Meaning:
    return Meaning("metrics", api, pointer, kind, headings)


def _queue(pointer: Pointer, *headings: str) -> Meaning:
    return Meaning("queue", "/v1/floor", pointer, "count", headings)


DAY_REPORT = "/v1/penetration?group_by=day&window={week}"
POOL_DAY = "/v1/penetration?group_by=pool&window={day}..{day}"
POOL_WEEK = "/v1/penetration?group_by=pool&window={week}"
SOURCE_DAY = "/v1/penetration?group_by=source&window={day}..{day}"
SOURCE_WEEK = "/v1/penetration?group_by=source&window={week}"
BELOW_TARGET = "/v1/leads/below-target?day={today}&limit=20"
DISTRIBUTION = "/v1/attempts-distribution?window={month}"
TODAY: Pointer = ["groups", {"day": "{today}"}]
ON_DAY: Pointer = ["groups", {"day": "{day}"}]
POOL: Pointer = ["groups", {"pool": "{pool}"}]
SOURCE: Pointer = ["groups", {"source": "{source}"}]
FLOOR_POOL: Pointer = ["pools", {"pool": "{pool}"}]
LEAD: Pointer = ["leads", "{index}"]
ATTEMPT: Pointer = ["attempts", {"attempt": "{attempt}"}]

#: Every figure the page may show, by name, and what it must be. Written here
#: and never read from the page, so that a figure naming another field, pool,
#: source, day or window than its name says, or shown under another label,
#: fails; so does a figure missing from this table. In a name, ``{pool}`` and
#: ``{source}`` are any name, ``{day}`` one of the 7 days ending today, and
#: ``{index}`` and ``{attempt}`` numbers (numbers in the pointer too). The
#: calendar fills in ``{today}``, ``{week}`` (the 7 days ending today),
#: ``{month}`` (the 30 days ending today) and ``{day_heading}`` (``{day}`` as
#: a column or row heading, "Sun 29 Nov"). None: the figure is no API answer
#: (the clock's time, the queue's absence in words); other tests check those.
MEANINGS: dict[str, Meaning | None] = {
    "as-of": None,
    "floor:unavailable": None,
    # Today's tiles: the day report's group for today.
    "today:penetration": _metrics(
        DAY_REPORT, [*TODAY, "penetration"], "ratio", "Penetration"
    ),
    "today:uncapped_penetration": _metrics(
        DAY_REPORT, [*TODAY, "uncapped_penetration"], "ratio", "Uncapped"
    ),
    "today:attempts": _metrics(DAY_REPORT, [*TODAY, "attempts"], "count", "Attempts"),
    "today:attempts_due": _metrics(
        DAY_REPORT, [*TODAY, "attempts_due"], "count", "Attempts due"
    ),
    "today:new_leads": _metrics(
        DAY_REPORT, [*TODAY, "new_leads"], "count", "New leads"
    ),
    "today:speed_to_lead_seconds:p50": _metrics(
        DAY_REPORT,
        [*TODAY, "speed_to_lead_seconds", "p50"],
        "seconds",
        "Speed to lead p50",
    ),
    "today:speed_to_lead_seconds:p90": _metrics(
        DAY_REPORT,
        [*TODAY, "speed_to_lead_seconds", "p90"],
        "seconds",
        "Speed to lead p90",
    ),
    "today:share_called_within": _metrics(
        DAY_REPORT, [*TODAY, "share_called_within"], "ratio", "Called within 5 min"
    ),
    # The queue's floor, now.
    "floor:agents:available": _queue(["agents", "available"], "Available"),
    "floor:agents:busy": _queue(["agents", "busy"], "Busy"),
    "floor:agents:away": _queue(["agents", "away"], "Away"),
    "floor:agents:offline": _queue(["agents", "offline"], "Offline"),
    "floor:queued": _queue(["queued"], "Queued"),
    "floor:due_now": _queue(["due_now"], "Due now"),
    "floor:leased": _queue(["leased"], "Leased"),
    "floor:pool:{pool}:queued": _queue([*FLOOR_POOL, "queued"], "{pool}", "Queued"),
    "floor:pool:{pool}:due_now": _queue([*FLOOR_POOL, "due_now"], "{pool}", "Due now"),
    "floor:pool:{pool}:leased": _queue([*FLOOR_POOL, "leased"], "{pool}", "Leased"),
    "floor:pool:{pool}:agents:available": _queue(
        [*FLOOR_POOL, "agents", "available"], "{pool}", "Agents available"
    ),
    "floor:pool:{pool}:agents:busy": _queue(
        [*FLOOR_POOL, "agents", "busy"], "{pool}", "Agents busy"
    ),
    # Penetration by pool and by source: each day's own report, and the week's.
    "pool-penetration:{pool}:{day}": _metrics(
        POOL_DAY, [*POOL, "penetration"], "ratio", "{pool}", "{day_heading}"
    ),
    "pool-penetration:{pool}:7d": _metrics(
        POOL_WEEK, [*POOL, "penetration"], "ratio", "{pool}", "7 days"
    ),
    "pool-uncapped-penetration:{pool}:7d": _metrics(
        POOL_WEEK, [*POOL, "uncapped_penetration"], "ratio", "{pool}", "uncapped"
    ),
    "source-penetration:{source}:{day}": _metrics(
        SOURCE_DAY, [*SOURCE, "penetration"], "ratio", "{source}", "{day_heading}"
    ),
    "source-penetration:{source}:7d": _metrics(
        SOURCE_WEEK, [*SOURCE, "penetration"], "ratio", "{source}", "7 days"
    ),
    "source-uncapped-penetration:{source}:7d": _metrics(
        SOURCE_WEEK,
        [*SOURCE, "uncapped_penetration"],
        "ratio",
        "{source}",
        "uncapped",
    ),
    # Today's leads below target, in the API's order.
    "below-target:{index}:lead_id": _metrics(
        BELOW_TARGET, [*LEAD, "lead_id"], "text", "", "Lead"
    ),
    "below-target:{index}:pool": _metrics(
        BELOW_TARGET, [*LEAD, "pool"], "text", "", "Pool"
    ),
    "below-target:{index}:source": _metrics(
        BELOW_TARGET, [*LEAD, "source"], "text", "", "Source"
    ),
    "below-target:{index}:attempts": _metrics(
        BELOW_TARGET, [*LEAD, "attempts"], "count", "", "Attempts"
    ),
    "below-target:{index}:attempts_due": _metrics(
        BELOW_TARGET, [*LEAD, "attempts_due"], "count", "", "Due"
    ),
    "below-target:{index}:missing": _metrics(
        BELOW_TARGET, [*LEAD, "missing"], "count", "", "Missing"
    ),
    "below-target:{index}:penetration": _metrics(
        BELOW_TARGET, [*LEAD, "penetration"], "ratio", "", "Penetration"
    ),
    # Speed to lead: the day report's group of each day.
    "speed:{day}:new_leads": _metrics(
        DAY_REPORT, [*ON_DAY, "new_leads"], "count", "{day_heading}", "New leads"
    ),
    "speed:{day}:new_leads_called": _metrics(
        DAY_REPORT, [*ON_DAY, "new_leads_called"], "count", "{day_heading}", "Called"
    ),
    "speed:{day}:speed_to_lead_seconds:p50": _metrics(
        DAY_REPORT,
        [*ON_DAY, "speed_to_lead_seconds", "p50"],
        "seconds",
        "{day_heading}",
        "p50",
    ),
    "speed:{day}:speed_to_lead_seconds:p90": _metrics(
        DAY_REPORT,
        [*ON_DAY, "speed_to_lead_seconds", "p90"],
        "seconds",
        "{day_heading}",
        "p90",
    ),
    "speed:{day}:share_called_within": _metrics(
        DAY_REPORT,
        [*ON_DAY, "share_called_within"],
        "ratio",
        "{day_heading}",
        "Within 5 min",
    ),
    # The attempts distribution of the 30 days ending today.
    "attempts:conversions": _metrics(
        DISTRIBUTION, ["conversions"], "count", "Conversions"
    ),
    "attempts:conversions_after_third_attempt": _metrics(
        DISTRIBUTION,
        ["conversions_after_third_attempt"],
        "count",
        "After the 3rd call",
    ),
    "attempts:share_lost_if_stopped_at_three": _metrics(
        DISTRIBUTION,
        ["share_lost_if_stopped_at_three"],
        "ratio",
        "Lost if we stopped at 3",
    ),
    "attempts:{attempt}:first_contacted": _metrics(
        DISTRIBUTION,
        [*ATTEMPT, "first_contacted"],
        "count",
        "{attempt}",
        "First contacted",
    ),
    "attempts:{attempt}:converted": _metrics(
        DISTRIBUTION, [*ATTEMPT, "converted"], "count", "{attempt}", "Converted"
    ),
    "attempts:{attempt}:exhausted": _metrics(
        DISTRIBUTION, [*ATTEMPT, "exhausted"], "count", "{attempt}", "Exhausted"
    ),
    "attempts:{attempt}:abandoned": _metrics(
        DISTRIBUTION, [*ATTEMPT, "abandoned"], "count", "{attempt}", "Abandoned"
    ),
}

_SLOT = re.compile(r"\{(\w+)\}")
_NUMBERS = ("{index}", "{attempt}")


def week_of(today: dt.date) -> list[dt.date]:
    """The 7 days ending ``today``, oldest first."""
    return [today - dt.timedelta(days=back) for back in range(6, -1, -1)]


def pinned(name: str, today: dt.date) -> list[tuple[str, Meaning | None]]:
    """Each entry of :data:`MEANINGS` that ``name`` matches on a page rendered
    ``today``, with the entry's slots filled in (the right answer is one)."""
    days = [day.isoformat() for day in week_of(today)]
    calendar = {
        "today": today.isoformat(),
        "week": f"{days[0]}..{days[-1]}",
        "month": f"{today - dt.timedelta(days=29)}..{today}",
    }
    choices = {
        "pool": "[^:]+",
        "source": "[^:]+",
        "day": "|".join(map(re.escape, days)),
        "index": r"\d+",
        "attempt": r"\d+",
    }
    found = []
    for template, meaning in MEANINGS.items():
        parts = _SLOT.split(template)
        # split() alternates text and slot names: text, slot, text, …
        pattern = "".join(
            f"(?P<{part}>{choices[part]})" if index % 2 else re.escape(part)
            for index, part in enumerate(parts)
        )
        match = re.fullmatch(pattern, name)
        if match is None:
            continue
        values = calendar | match.groupdict()
        if "day" in values:
            day = dt.date.fromisoformat(values["day"])
            values["day_heading"] = f"{day:%a} {day.day} {day:%b}"
        found.append((template, _filled(meaning, values)))
    return found


def _filled(meaning: Meaning | None, values: dict[str, str]) -> Meaning | None:
    def step(template: Any) -> Any:
        if isinstance(template, dict):
            return {key: step(value) for key, value in template.items()}
        if template in _NUMBERS:
            return int(values[template.strip("{}")])
        return template.format_map(values)

    if meaning is None:
        return None
    return Meaning(
        meaning.service,
        meaning.api.format_map(values),
        [step(template) for template in meaning.pointer],
        meaning.kind,
        tuple(heading.format_map(values) for heading in meaning.headings),
    )


# --- reading the page back ----------------------------------------------------------


@dataclass
class Shown:
    """One figure as the page shows it, and the headings it is shown under
    (its tile's label, or its table cell's row and column headings)."""

    name: str
    attributes: dict[str, str]
    text: str = ""
    headings: tuple[str, ...] = ()

    @property
    def value(self) -> Any:
        return orjson.loads(self.attributes["data-value"])


class _Figures(HTMLParser):
    """Collects the figures, and on the way the tile labels and table
    headings they are shown under."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[Shown] = []
        self._open: Shown | None = None
        self._tile: str | None = None
        self._columns: list[str] = []
        self._in_head = False
        self._row = ""
        self._cell = -1
        self._reading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        classes = attributes.get("class", "").split()
        if tag == "div" and "tile" in classes:
            self._tile = ""
        elif tag == "span" and "label" in classes and self._tile is not None:
            self._reading = "label"
        elif tag == "thead":
            self._in_head, self._columns = True, []
        elif tag == "tr":
            self._row, self._cell = "", -1
        elif tag in ("th", "td") and self._in_head:
            self._columns.append("")
            self._reading = "column"
        elif tag in ("th", "td"):
            self._cell += 1
            self._reading = "row" if tag == "th" else None
        if "data-figure" in attributes:
            self._open = Shown(attributes["data-figure"], attributes)
            self._open.headings = self._headings()
            self.figures.append(self._open)

    def _headings(self) -> tuple[str, ...]:
        if self._tile is not None:
            return (self._tile,)
        if self._cell >= 0:
            return (self._row, self._columns[self._cell])
        return ()

    def handle_endtag(self, tag: str) -> None:
        self._open = None
        if tag in ("span", "th"):
            self._reading = None
        elif tag == "div":
            self._tile = None
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._cell = -1

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.text += data
        if self._reading == "label" and self._tile is not None:
            self._tile += data
        elif self._reading == "column":
            self._columns[-1] += data
        elif self._reading == "row":
            self._row += data


def figures_of(page_html: str) -> dict[str, Shown]:
    """The page's figures by name; a name used twice fails the test."""
    parser = _Figures()
    parser.feed(page_html)
    names = [shown.name for shown in parser.figures]
    assert len(names) == len(set(names)), "figure names must be unique"
    return {shown.name: shown for shown in parser.figures}


def resolve(body: Any, pointer: list[Any]) -> Any:
    """Follows a pointer through an API answer (written here again, not
    imported, so the page's own reading is what is checked)."""
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
    """The API answers the table names, each fetched once."""

    metrics: httpx.AsyncClient
    queue: httpx.AsyncClient
    fetched: dict[tuple[str, str], Any] = field(default_factory=dict)

    async def expected(self, meaning: Meaning) -> Any:
        """The value at the meaning's pointer in its GET's answer."""
        key = (meaning.service, meaning.api)
        if key not in self.fetched:
            client = self.metrics if meaning.service == "metrics" else self.queue
            answer = await client.get(meaning.api)
            assert answer.status_code == 200, (meaning.api, answer.text)
            self.fetched[key] = answer.json()
        return resolve(self.fetched[key], meaning.pointer)


def _request(api: str) -> tuple[str, list[tuple[str, str]]]:
    """A GET's path and query, the query's order aside."""
    parts = urllib.parse.urlsplit(api)
    return parts.path, sorted(urllib.parse.parse_qsl(parts.query))


async def mismatches(
    shown: dict[str, Shown], answers: Answers, today: dt.date
) -> list[str]:
    """Every figure of a page rendered ``today`` that :data:`MEANINGS` does
    not pin, or that is not what it pins: another GET or pointer than the
    pinned ones, another format or headings, or a value or text other than
    the pinned GET's answer."""
    wrong = []
    for name, figure in shown.items():
        found = pinned(name, today)
        if len(found) != 1:
            entries = [template for template, _ in found]
            wrong.append(f"{name}: matches {entries} of MEANINGS, not one entry")
            continue
        [(_, meaning)] = found
        if meaning is not None:
            problems = await _problems(figure, meaning, answers)
            wrong.extend(f"{name}: {problem}" for problem in problems)
    return wrong


async def _problems(figure: Shown, meaning: Meaning, answers: Answers) -> list[str]:
    attributes = figure.attributes
    problems = []
    service, api = attributes.get("data-service"), attributes.get("data-api", "")
    if (service, _request(api)) != (meaning.service, _request(meaning.api)):
        problems.append(
            f"names {service} {api}, pinned {meaning.service} {meaning.api}"
        )
    pointer = orjson.loads(attributes.get("data-pointer", "null"))
    if pointer != meaning.pointer:
        problems.append(f"points at {pointer}, pinned {meaning.pointer}")
    if attributes.get("data-format") != meaning.kind:
        problems.append(
            f"is written as {attributes.get('data-format')}, pinned {meaning.kind}"
        )
    if figure.headings != meaning.headings:
        problems.append(f"is shown under {figure.headings}, pinned {meaning.headings}")

    expected = await answers.expected(meaning)
    want_text = formatted(meaning.kind, expected)
    if figure.value != expected or figure.text != want_text:
        problems.append(
            f"shows {figure.value!r}/{figure.text!r}, API {expected!r}/{want_text!r}"
        )
    return problems
