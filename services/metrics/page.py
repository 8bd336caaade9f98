"""The sales manager's page, served at ``/`` as plain server-rendered HTML.

Every figure is read from the :class:`MetricsService` reports that the JSON
API serves, called with explicit day windows, and from the queue's
``GET /v1/floor``; nothing here computes a figure of its own. Each figure's
element says where it came from, so a reader (or a test) can ask the API
for the same number:

- ``data-figure``: a stable name, e.g. ``pool-penetration:web:2026-12-02``;
- ``data-service`` (``metrics`` or ``queue``) and ``data-api``: the GET that
  answers it;
- ``data-pointer``: the steps from that answer to the value, as JSON: a key,
  a list index, or ``{"field": value}`` for the list element whose field has
  that value (no such element: the value is null);
- ``data-value``: the value as JSON; the element's text is it formatted.

Times shown come from the service's clock, in the business time zone.
"""

from __future__ import annotations

import datetime as dt
import html
import urllib.parse
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.metrics.floor import FloorReading, QueueFloor
from services.metrics.schemas import GroupBy
from services.metrics.service import MetricsService
from shared.clock import Clock

#: The static files the page loads (uPlot, the page's script and style).
STATIC = Path(__file__).parent / "static"
#: Days of the penetration and speed-to-lead trends, today included.
TREND_DAYS = 7
#: Days of arrivals the attempts-at-conversion chart covers, today included.
DISTRIBUTION_DAYS = 30
#: Below-target leads listed; the rest are one API page away.
BELOW_TARGET_ROWS = 20
#: Seconds between refreshes unless the URL asks for another (``?refresh=``).
REFRESH_SECONDS = 30

Pointer = list[str | int | dict[str, Any]]


@dataclass(frozen=True)
class Answer:
    """A report as the API serves it: its GET and its JSON body."""

    api: str
    body: Any
    service: str = "metrics"


@dataclass(frozen=True)
class Reports:
    """Everything one render of the page shows."""

    now: dt.datetime
    zone: zoneinfo.ZoneInfo
    days: list[dt.date]
    daily: Answer
    pools_by_day: list[Answer]
    pools_week: Answer
    sources_by_day: list[Answer]
    sources_week: Answer
    below_target: Answer
    distribution: Answer
    floor: FloorReading
    floor_api: Answer | None
    queue_url: str


class ManagerPage:
    """Reads the reports and renders them."""

    def __init__(
        self,
        *,
        service: MetricsService,
        floor: QueueFloor,
        clock: Clock,
        zone: zoneinfo.ZoneInfo,
    ) -> None:
        self._service = service
        self._floor = floor
        self._clock = clock
        self._zone = zone

    async def reports(self) -> Reports:
        """Each report over a window named by its days, computed once from
        the clock, so a render that crosses midnight still shows one day."""
        now = self._clock.now()
        today = now.astimezone(self._zone).date()
        days = [today - dt.timedelta(days=back) for back in range(TREND_DAYS)][::-1]
        week = _window(days[0], today)
        pools_by_day = [await self._penetration("pool", _window(d, d)) for d in days]
        sources_by_day = [
            await self._penetration("source", _window(d, d)) for d in days
        ]
        reading = await self._floor.read()
        return Reports(
            now=now,
            zone=self._zone,
            days=days,
            daily=await self._penetration("day", week),
            pools_by_day=pools_by_day,
            pools_week=await self._penetration("pool", week),
            sources_by_day=sources_by_day,
            sources_week=await self._penetration("source", week),
            below_target=await self._below_target(today),
            distribution=await self._distribution(today),
            floor=reading,
            floor_api=(
                Answer("/v1/floor", reading.answer, "queue")
                if reading.answer is not None
                else None
            ),
            queue_url=self._floor.url,
        )

    async def render(self, refresh_seconds: int) -> str:
        return render(await self.reports(), refresh_seconds)

    async def _penetration(self, group_by: GroupBy, window: str) -> Answer:
        body = await self._service.penetration(group_by, window, None, None)
        return _answer("/v1/penetration", body, group_by=group_by, window=window)

    async def _below_target(self, today: dt.date) -> Answer:
        day = today.isoformat()
        body = await self._service.below_target(
            day, None, None, BELOW_TARGET_ROWS, None
        )
        return _answer("/v1/leads/below-target", body, day=day, limit=BELOW_TARGET_ROWS)

    async def _distribution(self, today: dt.date) -> Answer:
        first = today - dt.timedelta(days=DISTRIBUTION_DAYS - 1)
        window = _window(first, today)
        body = await self._service.attempts_distribution(window, None, None)
        return _answer("/v1/attempts-distribution", body, window=window)


def _window(first: dt.date, last: dt.date) -> str:
    return f"{first.isoformat()}..{last.isoformat()}"


def _answer(path: str, body: Any, **query: object) -> Answer:
    # Through JSON and back: the page reads exactly what the API's client
    # reads (dates as text, the same floats).
    wire = orjson.loads(orjson.dumps(body))
    return Answer(f"{path}?{urllib.parse.urlencode(query)}", wire)


# --- values -------------------------------------------------------------------


def pick(body: Any, pointer: Pointer) -> Any:
    """The value ``pointer`` leads to in ``body``; None where it leads nowhere."""
    value = body
    for step in pointer:
        if isinstance(step, dict):
            ((field, wanted),) = step.items()
            matches = [
                item
                for item in value or []
                if isinstance(item, dict) and item.get(field) == wanted
            ]
            value = matches[0] if matches else None
        elif isinstance(step, int):
            value = (
                value[step] if isinstance(value, list) and step < len(value) else None
            )
        else:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def formatted(kind: str, value: Any) -> str:
    """How the page writes a value of a kind (``ratio``, ``seconds``,
    ``count``, ``text``); a missing value is a dash."""
    if value is None:
        return "—"
    if kind == "ratio":
        return f"{value * 100:.1f} %"
    if kind == "seconds":
        return _duration(float(value))
    if kind == "count":
        return f"{int(value):,}"
    return str(value)


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def day_label(day: dt.date) -> str:
    return f"{day:%a} {day.day} {day:%b}"


def moment_label(moment: dt.datetime) -> str:
    return f"{moment:%A} {moment.day} {moment:%B %Y}, {moment:%H:%M}"


# --- HTML -----------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def figure(
    name: str,
    kind: str,
    answer: Answer,
    pointer: Pointer,
    *,
    tag: str = "span",
    css: str = "",
) -> str:
    """One figure: its formatted value in ``tag``, with where it came from."""
    value = pick(answer.body, pointer)
    attributes = {
        "class": css,
        "data-figure": name,
        "data-service": answer.service,
        "data-api": answer.api,
        "data-pointer": _json(pointer),
        "data-value": _json(value),
        "data-format": kind,
    }
    written = " ".join(
        f'{key}="{_e(text)}"' for key, text in attributes.items() if text
    )
    return f"<{tag} {written}>{_e(formatted(kind, value))}</{tag}>"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    header = "".join(f'<th scope="col">{_e(title)}</th>' for title in head)
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return (
        f'<table class="{_e(css)}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _th(text: object) -> str:
    return f'<th scope="row">{_e(text)}</th>'


def _tile(label: str, content: str, note: str = "") -> str:
    written_note = f'<span class="note">{_e(note)}</span>' if note else ""
    return (
        f'<div class="tile"><span class="label">{_e(label)}</span>'
        f"{content}{written_note}</div>"
    )


def _section(identifier: str, title: str, body: str, explain: str = "") -> str:
    explained = f'<p class="explain">{_e(explain)}</p>' if explain else ""
    return (
        f'<section id="{_e(identifier)}" class="panel">'
        f"<h2>{_e(title)}</h2>{explained}{body}</section>"
    )


def render(reports: Reports, refresh_seconds: int = REFRESH_SECONDS) -> str:
    """The whole page."""
    local = reports.now.astimezone(reports.zone)
    charts = {
        "pool": _trend_chart(reports, reports.pools_by_day, "pool"),
        "source": _trend_chart(reports, reports.sources_by_day, "source"),
        "attempts": _attempts_chart(reports.distribution),
    }
    panels = "".join(
        [
            _today_panel(reports),
            _floor_panel(reports),
            _trend_panel(reports, "pool"),
            _trend_panel(reports, "source"),
            _below_target_panel(reports),
            _speed_panel(reports),
            _attempts_panel(reports),
        ]
    )
    refresh_meta = (
        f'<noscript><meta http-equiv="refresh" content="{refresh_seconds}"></noscript>'
        if refresh_seconds
        else ""
    )
    refresh_note = (
        f"Refreshes every {refresh_seconds} s." if refresh_seconds else "No refresh."
    )
    # No "<" at all inside the script element: "</script" would end it early,
    # and "<!--" then "<script" (a pool or source so named) would make the
    # parser swallow its real end tag. "<" only occurs in JSON strings, where
    # "\u003c" reads back as the same character.
    chart_data = _json(charts).replace("<", "\\u003c")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Redial · sales floor</title>
<link rel="stylesheet" href="static/uPlot.min.css">
<link rel="stylesheet" href="static/page.css">
{refresh_meta}
<script src="static/uPlot.iife.min.js" defer></script>
<script src="static/page.js" defer></script>
</head>
<body data-refresh="{refresh_seconds}">
<header>
<h1>Sales floor</h1>
<p id="refresh-status" role="status" aria-live="polite"></p>
</header>
<main id="page">
<p class="as-of">Figures as of <time data-figure="as-of" \
datetime="{_e(local.isoformat())}">{_e(moment_label(local))}</time> \
({_e(reports.zone.key)}). {_e(refresh_note)}</p>
<div class="panels">{panels}</div>
<script type="application/json" id="page-charts">{chart_data}</script>
</main>
</body>
</html>
"""


# --- panels ---------------------------------------------------------------------


def _today_panel(reports: Reports) -> str:
    today = reports.days[-1].isoformat()
    daily = reports.daily

    def of(field: str, kind: str, *more: str) -> str:
        pointer: Pointer = ["groups", {"day": today}, field, *more]
        name = ":".join(["today", field, *more])
        return figure(name, kind, daily, pointer, css="value")

    tiles = [
        _tile("Penetration", of("penetration", "ratio"), "capped per lead"),
        _tile("Uncapped", of("uncapped_penetration", "ratio"), "over-calling shows"),
        _tile("Attempts", of("attempts", "count")),
        _tile("Attempts due", of("attempts_due", "count")),
        _tile("New leads", of("new_leads", "count")),
        _tile("Speed to lead p50", of("speed_to_lead_seconds", "seconds", "p50")),
        _tile("Speed to lead p90", of("speed_to_lead_seconds", "seconds", "p90")),
        _tile(
            "Called within 5 min",
            of("share_called_within", "ratio"),
            "of today's new leads",
        ),
    ]
    return _section(
        "today",
        f"Today, {day_label(reports.days[-1])}",
        f'<div class="tiles">{"".join(tiles)}</div>',
    )


def _floor_panel(reports: Reports) -> str:
    answer = reports.floor_api
    if reports.floor.floor is None or answer is None:
        message = (
            f"The queue service at {reports.queue_url} {reports.floor.problem}, "
            "so agents and queue depth are not shown. The other panels are "
            "unaffected; the queue is asked again at the next refresh."
        )
        body = f'<p class="problem" data-figure="floor:unavailable">{_e(message)}</p>'
        return _section("floor", "Agents and queue", body)
    statuses = ("available", "busy", "away", "offline")
    agents = [
        _tile(
            status.capitalize(),
            figure(f"floor:agents:{status}", "count", answer, ["agents", status]),
        )
        for status in statuses
    ]
    depth = [
        _tile(label, figure(f"floor:{field}", "count", answer, [field]))
        for label, field in (
            ("Queued", "queued"),
            ("Due now", "due_now"),
            ("Leased", "leased"),
        )
    ]
    rows = []
    for entry in reports.floor.floor.pools:
        cells = [_th(entry.pool)]
        for steps in (
            ["queued"],
            ["due_now"],
            ["leased"],
            ["agents", "available"],
            ["agents", "busy"],
        ):
            name = ":".join(["floor:pool", entry.pool, *steps])
            pointer: Pointer = ["pools", {"pool": entry.pool}, *steps]
            cells.append(figure(name, "count", answer, pointer, tag="td"))
        rows.append(cells)
    table = _table(
        ["Pool", "Queued", "Due now", "Leased", "Agents available", "Agents busy"],
        rows,
        "numbers",
    )
    body = (
        f'<h3>Agents</h3><div class="tiles">{"".join(agents)}</div>'
        f'<h3>Queue</h3><div class="tiles">{"".join(depth)}</div>{table}'
    )
    return _section(
        "floor",
        "Agents and queue",
        body,
        "From the queue service, now. Queued = waiting + ready; due now = ready "
        "leads inside their calling hours.",
    )


def _keys(answers: Iterable[Answer], group_by: str) -> list[str]:
    keys = {
        group[group_by]
        for answer in answers
        for group in answer.body["groups"]
        if group[group_by] is not None
    }
    return sorted(keys)


def _trend_panel(reports: Reports, group_by: str) -> str:
    by_day = reports.pools_by_day if group_by == "pool" else reports.sources_by_day
    week = reports.pools_week if group_by == "pool" else reports.sources_week
    keys = _keys([*by_day, week], group_by)
    title = f"Penetration by {group_by}, last {TREND_DAYS} days"
    if not keys:
        empty = (
            '<p class="empty">No attempts were due or made in these '
            f"{TREND_DAYS} days.</p>"
        )
        return _section(f"penetration-by-{group_by}", title, empty)
    rows = []
    for key in keys:
        cells = [_th(key)]
        for day, answer in zip(reports.days, by_day, strict=True):
            cells.append(
                figure(
                    f"{group_by}-penetration:{key}:{day.isoformat()}",
                    "ratio",
                    answer,
                    ["groups", {group_by: key}, "penetration"],
                    tag="td",
                )
            )
        for field in ("penetration", "uncapped_penetration"):
            cells.append(
                figure(
                    f"{group_by}-{field.replace('_', '-')}:{key}:{TREND_DAYS}d",
                    "ratio",
                    week,
                    ["groups", {group_by: key}, field],
                    tag="td",
                    css="week",
                )
            )
        rows.append(cells)
    head = [
        group_by.capitalize(),
        *(day_label(day) for day in reports.days),
        f"{TREND_DAYS} days",
        "uncapped",
    ]
    chart = (
        f'<div class="chart" data-chart="{_e(group_by)}" role="img" '
        f'aria-label="{_e(title)}"></div>'
    )
    return _section(
        f"penetration-by-{group_by}",
        title,
        chart + _table(head, rows, "numbers"),
        "Σ min(attempts, due) ÷ Σ due over each day's leads; a dash where "
        f"nothing was due. The {TREND_DAYS}-day columns cap over the whole week.",
    )


def _trend_chart(
    reports: Reports, by_day: Sequence[Answer], group_by: str
) -> dict[str, Any]:
    keys = _keys(by_day, group_by)
    return {
        "labels": [day_label(day) for day in reports.days],
        "series": [
            {
                "label": key,
                "values": [
                    pick(answer.body, ["groups", {group_by: key}, "penetration"])
                    for answer in by_day
                ],
            }
            for key in keys
        ],
    }


def _below_target_panel(reports: Reports) -> str:
    answer = reports.below_target
    leads = answer.body["leads"]
    title = (
        f"Below target today ({len(leads)}{'+' if answer.body['next_cursor'] else ''})"
    )
    if not leads:
        body = '<p class="empty">Every lead got the attempts due so far today.</p>'
        return _section("below-target", title, body)
    rows = []
    for index, lead in enumerate(leads):
        lead_id = lead["lead_id"]
        shown = figure(
            f"below-target:{index}:lead_id", "text", answer, ["leads", index, "lead_id"]
        )
        link = f'<td><a href="v1/leads/{_e(lead_id)}/penetration">{shown}</a></td>'
        cells = [link]
        for field, kind in (
            ("pool", "text"),
            ("source", "text"),
            ("attempts", "count"),
            ("attempts_due", "count"),
            ("missing", "count"),
            ("penetration", "ratio"),
        ):
            cells.append(
                figure(
                    f"below-target:{index}:{field}",
                    kind,
                    answer,
                    ["leads", index, field],
                    tag="td",
                )
            )
        rows.append(cells)
    table = _table(
        ["Lead", "Pool", "Source", "Attempts", "Due", "Missing", "Penetration"],
        rows,
        "numbers leads",
    )
    more = ""
    if answer.body["next_cursor"]:
        query = urllib.parse.urlencode(
            {
                "day": answer.body["day"],
                "limit": BELOW_TARGET_ROWS,
                "cursor": answer.body["next_cursor"],
            }
        )
        more = (
            f'<p class="more">More leads are below target: '
            f'<a href="v1/leads/below-target?{_e(query)}">the next page</a>.</p>'
        )
    return _section(
        "below-target",
        title,
        table + more,
        "Leads with fewer attempts today than their cadence made due, worst first.",
    )


def _speed_panel(reports: Reports) -> str:
    daily = reports.daily
    rows = []
    for day in reversed(reports.days):
        key = day.isoformat()

        def of(field: str, kind: str, *more: str, key: str = key) -> str:
            pointer: Pointer = ["groups", {"day": key}, field, *more]
            name = ":".join(["speed", key, field, *more])
            return figure(name, kind, daily, pointer, tag="td")

        rows.append(
            [
                _th(day_label(day)),
                of("new_leads", "count"),
                of("new_leads_called", "count"),
                of("speed_to_lead_seconds", "seconds", "p50"),
                of("speed_to_lead_seconds", "seconds", "p90"),
                of("share_called_within", "ratio"),
            ]
        )
    table = _table(
        ["Day", "New leads", "Called", "p50", "p90", "Within 5 min"], rows, "numbers"
    )
    return _section(
        "speed-to-lead",
        "Speed to lead",
        table,
        "First call − arrival of the day's new leads.",
    )


def _attempts_panel(reports: Reports) -> str:
    answer = reports.distribution
    title = (
        f"Attempt at contact and conversion, leads of the last {DISTRIBUTION_DAYS} days"
    )
    attempts = [entry["attempt"] for entry in answer.body["attempts"]]
    headline = [
        _tile(
            "Conversions",
            figure(
                "attempts:conversions", "count", answer, ["conversions"], css="value"
            ),
        ),
        _tile(
            "After the 3rd call",
            figure(
                "attempts:conversions_after_third_attempt",
                "count",
                answer,
                ["conversions_after_third_attempt"],
                css="value",
            ),
        ),
        _tile(
            "Lost if we stopped at 3",
            figure(
                "attempts:share_lost_if_stopped_at_three",
                "ratio",
                answer,
                ["share_lost_if_stopped_at_three"],
                css="value",
            ),
            "of conversions",
        ),
    ]
    tiles = f'<div class="tiles">{"".join(headline)}</div>'
    if not attempts:
        empty = '<p class="empty">No lead of these days was contacted yet.</p>'
        return _section("attempts-at-conversion", title, tiles + empty)
    rows = [
        [
            _th(attempt),
            *(
                figure(
                    f"attempts:{attempt}:{field}",
                    "count",
                    answer,
                    ["attempts", {"attempt": attempt}, field],
                    tag="td",
                )
                for field in ("first_contacted", "converted", "exhausted", "abandoned")
            ),
        ]
        for attempt in attempts
    ]
    table = _table(
        ["Attempt", "First contacted", "Converted", "Exhausted", "Abandoned"],
        rows,
        "numbers",
    )
    chart = (
        '<div class="chart" data-chart="attempts" role="img" '
        f'aria-label="{_e(title)}"></div>'
    )
    return _section(
        "attempts-at-conversion",
        title,
        tiles + chart + table,
        "At which call leads were first reached and converted: the calls after "
        "the third are the ones a team that gives up early never makes.",
    )


def _attempts_chart(answer: Answer) -> dict[str, Any]:
    entries = answer.body["attempts"]
    return {
        "attempts": [entry["attempt"] for entry in entries],
        "series": [
            {
                "label": "first contacted",
                "values": [entry["first_contacted"] for entry in entries],
            },
            {"label": "converted", "values": [entry["converted"] for entry in entries]},
        ],
    }
