"""The manager's page at ``/``: every figure it shows is the API answer that
page_stack.MEANINGS pins to its name, under the label pinned there; the
queue's floor is shown (or its absence said plainly), and its times come from
the service's clock."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from services.metrics.floor import FloorReading
from services.metrics.page import Answer, Reports, day_label, moment_label, render
from shared.clock import ManualClock
from shared.launcher.stack import free_port
from tests.conftest import Stack
from tests.metrics.conftest import START, ZONE
from tests.metrics.page_stack import (
    FACEBOOK,
    GOOGLE,
    MEANINGS,
    PARTNERS,
    WEB,
    Answers,
    PageStack,
    Shown,
    another_metrics_page,
    figures_of,
    metrics_page,
    mismatches,
    page_stack,
    pinned,
    week_of,
)

PANELS = (
    "today",
    "floor",
    "penetration-by-pool",
    "penetration-by-source",
    "below-target",
    "speed-to-lead",
    "attempts-at-conversion",
)


@pytest.fixture(scope="module")
async def page(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PageStack]:
    async with page_stack(stack, tmp_path_factory.mktemp("page")) as built:
        yield built


@contextlib.asynccontextmanager
async def clients(page: PageStack) -> AsyncIterator[Answers]:
    async with (
        httpx.AsyncClient(base_url=page.metrics.url, timeout=30) as metrics,
        httpx.AsyncClient(base_url=page.queue.url, timeout=30) as queue,
    ):
        yield Answers(metrics, queue)


async def page_html(url: str, **params: int) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{url}/", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    return answer.text


async def test_the_page_has_every_panel(page: PageStack) -> None:
    html = await page_html(page.metrics.url)

    for panel in PANELS:
        assert f'<section id="{panel}" class="panel">' in html
    assert 'src="static/uPlot.iife.min.js"' in html
    assert html.count('data-chart="') == 3


async def test_every_figure_shown_is_the_answer_its_name_is_pinned_to(
    page: PageStack,
) -> None:
    """Each figure is in page_stack.MEANINGS, names the pinned GET and field,
    is shown under the pinned label or headings, and equals that answer."""
    shown = figures_of(await page_html(page.metrics.url))
    today = page.days[-1]

    async with clients(page) as answers:
        assert await mismatches(shown, answers, today) == []
    with_source = [name for name in shown if "data-api" in shown[name].attributes]
    # Every panel's figures are there (7 days × 2 pools and 2 sources, …).
    assert len(with_source) > 100
    assert {shown[name].attributes["data-service"] for name in with_source} == {
        "metrics",
        "queue",
    }
    used = {template for name in shown for template, _ in pinned(name, today)}
    assert set(MEANINGS) - used == {"floor:unavailable"}
    trend = [name for name in shown if name.startswith("pool-penetration:")]
    columns = {name.rsplit(":", 1)[1] for name in trend}
    assert columns == {day.isoformat() for day in week_of(today)} | {"7d"}


#: Pages that are wrong but agree with themselves: the figure on the left
#: shows (GET, pointer, value and text) what the one on the right shows.
CONSISTENT_BUT_WRONG = {
    "the capped tile reads the uncapped field": (
        "today:penetration",
        "today:uncapped_penetration",
    ),
    "a pool's day reads another pool": (
        f"pool-penetration:{WEB}:{{second}}",
        f"pool-penetration:{PARTNERS}:{{second}}",
    ),
    "a pool's day reads another day": (
        f"pool-penetration:{WEB}:{{second}}",
        f"pool-penetration:{WEB}:{{first}}",
    ),
    "the week's column reads today": (
        f"pool-penetration:{WEB}:7d",
        f"pool-penetration:{WEB}:{{today}}",
    ),
    "a source's week reads its uncapped ratio": (
        f"source-penetration:{GOOGLE}:7d",
        f"source-uncapped-penetration:{GOOGLE}:7d",
    ),
    "a speed row reads another day": (
        "speed:{today}:new_leads",
        "speed:{second}:new_leads",
    ),
    "a below-target row reads the next lead": (
        "below-target:0:missing",
        "below-target:1:missing",
    ),
    "a floor tile reads another count": ("floor:queued", "floor:due_now"),
}


@pytest.mark.parametrize(
    ("figure", "source"),
    CONSISTENT_BUT_WRONG.values(),
    ids=CONSISTENT_BUT_WRONG.keys(),
)
async def test_a_figure_naming_another_answer_than_pinned_fails(
    page: PageStack, figure: str, source: str
) -> None:
    """The check before MEANINGS followed each figure's own data-api and
    data-pointer, so these pages passed it."""
    shown = figures_of(await page_html(page.metrics.url))
    first, second, today = (day.isoformat() for day in page.days)
    figure = figure.format(first=first, second=second, today=today)
    source = source.format(first=first, second=second, today=today)
    copied = dict(shown[source].attributes, **{"data-figure": figure})
    shown[figure] = Shown(figure, copied, shown[source].text, shown[figure].headings)

    async with clients(page) as answers:
        wrong = await mismatches(shown, answers, page.days[-1])

    assert wrong, "the check let it pass"
    assert {problem.split(": ", 1)[0] for problem in wrong} == {figure}
    assert any(" pinned " in problem for problem in wrong)


async def test_a_swapped_tile_label_fails(page: PageStack) -> None:
    html = await page_html(page.metrics.url)
    labels = {"Penetration": "Uncapped", "Uncapped": "Penetration"}
    swapped = re.sub(
        '(?<=<span class="label">)(Penetration|Uncapped)(?=</span>)',
        lambda match: labels[match[1]],
        html,
    )
    shown = figures_of(swapped)

    async with clients(page) as answers:
        wrong = await mismatches(shown, answers, page.days[-1])

    assert wrong == [
        "today:penetration: is shown under ('Uncapped',), pinned ('Penetration',)",
        "today:uncapped_penetration: is shown under ('Penetration',), "
        "pinned ('Uncapped',)",
    ]


async def test_a_figure_the_table_does_not_pin_fails(page: PageStack) -> None:
    shown = figures_of(await page_html(page.metrics.url))
    attempts = shown["today:attempts"]
    shown["today:calls"] = Shown(
        "today:calls",
        dict(attempts.attributes, **{"data-figure": "today:calls"}),
        attempts.text,
        attempts.headings,
    )
    # A day outside the page's week has no entry either.
    outside = (page.days[-1] - dt.timedelta(days=7)).isoformat()
    name = f"pool-penetration:{WEB}:{outside}"
    shown[name] = Shown(name, shown[f"pool-penetration:{WEB}:7d"].attributes)

    async with clients(page) as answers:
        wrong = await mismatches(shown, answers, page.days[-1])

    assert wrong == [
        "today:calls: matches [] of MEANINGS, not one entry",
        f"{name}: matches [] of MEANINGS, not one entry",
    ]


async def test_the_figures_worked_out_by_hand(page: PageStack) -> None:
    """The scripted days of page_stack.three_days, read off the page."""
    shown = figures_of(await page_html(page.metrics.url))
    first, second, today = (day.isoformat() for day in page.days)

    def value(name: str) -> object:
        return shown[name].value

    assert value(f"pool-penetration:{WEB}:{first}") == pytest.approx(7 / 9)
    assert shown[f"pool-penetration:{WEB}:{first}"].text == "77.8 %"
    assert value(f"pool-penetration:{WEB}:{second}") == pytest.approx(2 / 3)
    assert value(f"pool-penetration:{PARTNERS}:{first}") is None
    assert shown[f"pool-penetration:{PARTNERS}:{first}"].text == "—"
    assert value(f"source-penetration:{GOOGLE}:{first}") == pytest.approx(7 / 9)
    assert value(f"source-penetration:{FACEBOOK}:{second}") == 1.0
    assert (value("today:penetration"), value("today:uncapped_penetration")) == (
        pytest.approx(1 / 3),
        pytest.approx(2 / 3),
    )
    assert (value("today:new_leads"), value("speed:" + today + ":new_leads")) == (2, 2)
    assert value("today:speed_to_lead_seconds:p50") == 600
    assert shown["today:speed_to_lead_seconds:p50"].text == "10m 00s"
    # F (no call yet) heads today's list, then E (1 of 2 calls).
    below = [
        (value(f"below-target:{i}:pool"), value(f"below-target:{i}:missing"))
        for i in range(2)
    ]
    assert below == [(PARTNERS, 1), (WEB, 1)]
    assert "below-target:2:pool" not in shown
    assert value("attempts:4:first_contacted") == 2
    assert value("attempts:share_lost_if_stopped_at_three") == 0.5
    assert shown["attempts:share_lost_if_stopped_at_three"].text == "50.0 %"


async def test_the_floor_panel_shows_the_queues_agents_and_depth(
    page: PageStack,
) -> None:
    shown = figures_of(await page_html(page.metrics.url))

    agents = {
        status: shown[f"floor:agents:{status}"].value
        for status in ("available", "busy", "away", "offline")
    }
    assert agents == {"available": 1, "busy": 1, "away": 1, "offline": 1}
    depth = [shown[f"floor:{field}"].value for field in ("queued", "due_now", "leased")]
    assert depth == [3, 3, 1]
    assert [
        shown[f"floor:pool:{pool}:{field}"].value
        for pool in (WEB, PARTNERS)
        for field in ("queued", "due_now", "leased", "agents:available", "agents:busy")
    ] == [3, 3, 0, 1, 1, 0, 0, 1, 0, 1]
    assert "floor:unavailable" not in shown


async def test_the_page_says_so_when_the_queue_cannot_be_reached(
    page: PageStack,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with another_metrics_page(page, closed) as metrics:
        html = await page_html(metrics.url)

    shown = figures_of(html)
    problem = shown["floor:unavailable"].text
    assert problem.startswith(
        f"The queue service at {closed}/v1/floor could not be reached (ConnectError)"
    )
    assert "agents and queue depth are not shown" in problem
    assert not [
        name
        for name in shown
        if name.startswith("floor:") and name != "floor:unavailable"
    ]
    # The rest of the page is all there, and still the API's answers.
    for panel in PANELS:
        assert f'<section id="{panel}" class="panel">' in html
    async with clients(page) as answers:
        assert await mismatches(shown, answers, page.days[-1]) == []
    assert shown[f"pool-penetration:{WEB}:{page.days[0].isoformat()}"].text == "77.8 %"


async def test_a_queue_that_does_not_answer_in_time_is_said_plainly(
    page: PageStack,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keeps the connection open, says nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with another_metrics_page(
            page, f"http://127.0.0.1:{port}", queue_timeout_seconds=0.3
        ) as metrics:
            html = await page_html(metrics.url)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

    problem = figures_of(html)["floor:unavailable"].text
    assert "did not answer in time" in problem


async def test_a_queue_answering_something_else_is_said_plainly(
    page: PageStack,
) -> None:
    async with another_metrics_page(page, f"{page.queue.url}/elsewhere") as metrics:
        html = await page_html(metrics.url)

    problem = figures_of(html)["floor:unavailable"].text
    assert "answered HTTP 404 instead of the floor" in problem


async def test_a_service_with_no_data_yet_renders_every_panel_empty(
    stack: Stack, scratch_database: str
) -> None:
    base = Stack(admin_dsn=stack.admin_dsn, dsn=scratch_database, broker=stack.broker)
    closed = f"127.0.0.1:{free_port()}"
    async with metrics_page(
        base, ManualClock(START), f"http://{closed}", kafka_bootstrap_servers=closed
    ) as metrics:
        html = await page_html(metrics.url)

    for panel in PANELS:
        assert f'<section id="{panel}" class="panel">' in html
    assert "No attempts were due or made in these 7 days." in html
    assert "Every lead got the attempts due so far today." in html
    assert "No lead of these days was contacted yet." in html
    assert 'data-chart="' not in html
    shown = figures_of(html)
    assert shown["today:penetration"].value is None
    assert shown["attempts:conversions"].value == 0


async def test_the_times_shown_come_from_the_service_clock(page: PageStack) -> None:
    shown = figures_of(await page_html(page.metrics.url))

    now = page.clock.now().astimezone(ZONE)
    as_of = shown["as-of"]
    assert as_of.attributes["datetime"] == now.isoformat()
    assert as_of.text == moment_label(now) == "Saturday 5 December 2026, 12:00"
    html = await page_html(page.metrics.url)
    assert f"<h2>Today, {day_label(page.days[-1])}</h2>" in html
    assert "Today, Sat 5 Dec" in html


async def test_refresh_is_every_30_seconds_unless_asked_otherwise(
    page: PageStack,
) -> None:
    default = await page_html(page.metrics.url)
    quick = await page_html(page.metrics.url, refresh=5)
    never = await page_html(page.metrics.url, refresh=0)

    assert '<body data-refresh="30">' in default
    assert '<meta http-equiv="refresh" content="30">' in default
    assert '<body data-refresh="5">' in quick
    assert '<body data-refresh="0">' in never
    assert 'http-equiv="refresh"' not in never


@pytest.mark.parametrize("refresh", ["-1", "3601", "soon"])
async def test_a_bad_refresh_is_refused_naming_it(
    page: PageStack, refresh: str
) -> None:
    async with httpx.AsyncClient(base_url=page.metrics.url) as client:
        answer = await client.get("/", params={"refresh": refresh})

    assert answer.status_code == 422
    assert [error["field"] for error in answer.json()["errors"]] == ["query.refresh"]


@pytest.mark.parametrize(
    ("name", "media_type", "starts"),
    [
        (
            "uPlot.iife.min.js",
            "text/javascript",
            "/*! https://github.com/leeoniya/uPlot (v1.6.32) */",
        ),
        ("uPlot.min.css", "text/css", ".uplot"),
        ("page.js", "text/javascript", "// The manager page"),
        ("page.css", "text/css", "/* The manager page"),
    ],
)
async def test_the_page_files_are_served(
    page: PageStack, name: str, media_type: str, starts: str
) -> None:
    async with httpx.AsyncClient(base_url=page.metrics.url) as client:
        answer = await client.get(f"/static/{name}")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media_type)
    assert answer.text.startswith(starts)


async def test_a_file_outside_the_static_folder_is_not_served(
    page: PageStack,
) -> None:
    async with httpx.AsyncClient(base_url=page.metrics.url) as client:
        answer = await client.get("/static/..%2Fpage.py")

    assert answer.status_code == 404


def test_a_source_name_cannot_end_the_chart_data_early() -> None:
    """Regression: the embedded chart data escaped only "</", so a source
    named "<!--<script>" put the HTML parser in its double-escaped script
    state: the element's real end tag was swallowed, the charts' JSON no
    longer parsed and the rest of the page became script text."""
    name = "<!--<script>"
    day = START.date()
    empty = Answer("/v1/penetration", {"groups": []})
    sources = Answer(
        "/v1/penetration", {"groups": [{"source": name, "penetration": 0.5}]}
    )
    reports = Reports(
        now=START,
        zone=ZONE,
        days=[day],
        daily=empty,
        pools_by_day=[empty],
        pools_week=empty,
        sources_by_day=[sources],
        sources_week=sources,
        below_target=Answer(
            "/v1/leads/below-target",
            {"day": day.isoformat(), "leads": [], "next_cursor": None},
        ),
        distribution=Answer(
            "/v1/attempts-distribution",
            {
                "attempts": [],
                "conversions": 0,
                "conversions_after_third_attempt": 0,
                "share_lost_if_stopped_at_three": None,
            },
        ),
        floor=FloorReading(problem="could not be reached (ConnectError)"),
        floor_api=None,
        queue_url="http://127.0.0.1:8002/v1/floor",
    )

    html = render(reports)

    opening = '<script type="application/json" id="page-charts">'
    start = html.index(opening) + len(opening)
    chart_data = html[start : html.index("</script>", start)]
    assert "<" not in chart_data
    assert orjson.loads(chart_data)["source"]["series"][0]["label"] == name
