"""The metrics API's refusals: every bad parameter is a 422 naming it.

Parameters FastAPI checks (types, enums, bounds, lengths) are named with
their location (``query.limit``, ``path.lead_id``); those the service parses
itself (windows, days, cursors) by their bare name. Refused GETs change
nothing by construction, so only the answers are checked.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import orjson
import pytest

WINDOWED = (
    "/v1/penetration",
    "/v1/penetration/list",
    "/v1/sources/scorecard",
    "/v1/attempts-distribution",
)
PLAN = {
    "new_leads_per_day": 100,
    "agents": 5,
    "dialing_hours_per_day": 8,
    "minutes_per_call": 4,
    "minutes_between_calls": 200,
    "target_attempts": 6,
    "occupancy": 0.75,
    "horizon_days": 1,
}


def refused(answer: httpx.Response) -> list[str]:
    """Asserts a 422 problem and returns the fields it names."""
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert (body["status"], body["code"]) == (422, "validation_failed")
    assert all(error["message"] for error in body["errors"])
    return [error["field"] for error in body["errors"]]


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- windows ---------------------------------------------------------------------


@pytest.mark.parametrize("path", WINDOWED)
@pytest.mark.parametrize(
    "window",
    [
        "soon",
        "0d",
        "367d",
        "400d",
        "1000d",
        "7D",
        " 7d",
        "2026-12-05..2026-12-01",
        "2026-02-30..2026-03-01",
        "2026-12-01..",
        "..2026-12-01",
        "2026-12-01-2026-12-03",
        "2026-01-01..2027-01-02",
    ],
    ids=repr,
)
async def test_a_bad_window_is_refused_naming_it(
    api: httpx.AsyncClient, path: str, window: str
) -> None:
    assert refused(await api.get(path, params={"window": window})) == ["window"]


@pytest.mark.parametrize("path", WINDOWED)
@pytest.mark.parametrize("window", ["1d", "366d", "2026-01-01..2027-01-01"])
async def test_windows_up_to_366_days_are_accepted(
    api: httpx.AsyncClient, path: str, window: str
) -> None:
    answer = await api.get(path, params={"window": window})
    assert answer.status_code == 200, answer.text


async def test_a_window_longer_than_any_valid_one_is_refused_before_parsing(
    api: httpx.AsyncClient,
) -> None:
    window = "2026-12-01..2026-12-01..2026-12-03"
    answer = await api.get("/v1/penetration", params={"window": window})
    assert refused(answer) == ["query.window"]


# --- groupings, days, pages ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "group_by"),
    [
        ("/v1/penetration", "lead"),
        ("/v1/penetration", ""),
        ("/v1/penetration", "Pool"),
        # Cohorts are grouped by what a lead arrives with: no agents or days.
        ("/v1/penetration/list", "agent"),
        ("/v1/penetration/list", "day"),
    ],
)
async def test_an_unknown_grouping_is_refused(
    api: httpx.AsyncClient, path: str, group_by: str
) -> None:
    answer = await api.get(path, params={"group_by": group_by})
    assert refused(answer) == ["query.group_by"]


@pytest.mark.parametrize("name", ["pool", "source"])
async def test_an_overlong_name_filter_is_refused(
    api: httpx.AsyncClient, name: str
) -> None:
    answer = await api.get("/v1/penetration", params={name: "x" * 201})
    assert refused(answer) == [f"query.{name}"]


@pytest.mark.parametrize(
    "day", ["yesterday", "2026-13-01", "2026-02-29", "2026-12-01T00:00", "12/01/2026"]
)
async def test_a_bad_day_of_the_below_target_list_is_refused(
    api: httpx.AsyncClient, day: str
) -> None:
    answer = await api.get("/v1/leads/below-target", params={"day": day})
    assert refused(answer) == ["day"]


@pytest.mark.parametrize("limit", ["0", "-1", "501", "ten", "2.5"])
async def test_a_page_size_outside_1_to_500_is_refused(
    api: httpx.AsyncClient, limit: str
) -> None:
    answer = await api.get("/v1/leads/below-target", params={"limit": limit})
    assert refused(answer) == ["query.limit"]


@pytest.mark.parametrize("limit", ["1", "500"])
async def test_page_sizes_at_the_bounds_are_accepted(
    api: httpx.AsyncClient, limit: str
) -> None:
    answer = await api.get("/v1/leads/below-target", params={"limit": limit})
    assert answer.status_code == 200, answer.text


LEAD = str(uuid.uuid4()).encode()


@pytest.mark.parametrize(
    "cursor",
    [
        "zzz",
        "é",
        "!!!!",
        cursor_of(b"not json"),
        cursor_of(b"null"),
        cursor_of(b'{"penetration": 0.5}'),
        cursor_of(b"[0.5, 1]"),
        cursor_of(b'[0.5, 1, "' + LEAD + b'", 4]'),
        cursor_of(b'[0.5, 1, "not-a-uuid"]'),
        cursor_of(b'["half", 1, "' + LEAD + b'"]'),
        cursor_of(b'[0.5, [1], "' + LEAD + b'"]'),
        cursor_of(b'[1e400, 1, "' + LEAD + b'"]'),
    ],
)
async def test_a_cursor_this_api_did_not_make_is_refused(
    api: httpx.AsyncClient, cursor: str
) -> None:
    answer = await api.get("/v1/leads/below-target", params={"cursor": cursor})
    assert refused(answer) == ["cursor"]


@pytest.mark.parametrize("missing", [2**31, -(2**31) - 1, 10**20])
async def test_a_cursor_with_a_count_out_of_range_is_refused(
    api: httpx.AsyncClient, missing: int
) -> None:
    """Regression: a cursor whose attempts-missing count did not fit the
    query's int parameter got through decoding and failed in PostgreSQL's
    driver, a 500 instead of a 422."""
    raw = b'[0.5, %d, "%s"]' % (missing, LEAD)
    answer = await api.get("/v1/leads/below-target", params={"cursor": cursor_of(raw)})
    assert refused(answer) == ["cursor"]


# --- one lead ----------------------------------------------------------------------


async def test_a_lead_never_seen_is_not_found(api: httpx.AsyncClient) -> None:
    lead_id = uuid.uuid4()
    answer = await api.get(f"/v1/leads/{lead_id}/penetration")

    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "not_found"
    assert str(lead_id) in answer.json()["message"]


@pytest.mark.parametrize("lead_id", ["not-a-uuid", "123", "g" * 32])
async def test_a_lead_id_that_is_no_uuid_is_refused(
    api: httpx.AsyncClient, lead_id: str
) -> None:
    answer = await api.get(f"/v1/leads/{lead_id}/penetration")
    assert refused(answer) == ["path.lead_id"]


# --- the planner -------------------------------------------------------------------


async def test_a_plan_without_its_fields_names_each_missing_one(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.post("/v1/targets/plan", json={})
    assert refused(answer) == [
        "new_leads_per_day",
        "agents",
        "dialing_hours_per_day",
        "minutes_per_call",
        "minutes_between_calls",
        "target_attempts",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("new_leads_per_day", 0),
        ("new_leads_per_day", -5),
        ("agents", -1),
        ("agents", 1.5),
        ("dialing_hours_per_day", 0),
        ("dialing_hours_per_day", 25),
        ("minutes_per_call", -4),
        ("minutes_between_calls", 0),
        ("target_attempts", 0),
        ("target_attempts", 101),
        ("occupancy", 0),
        ("occupancy", 1.5),
        ("horizon_days", 0),
        ("horizon_days", "soon"),
        ("unknown_field", 1),
    ],
)
async def test_a_plan_with_a_bad_field_names_it(
    api: httpx.AsyncClient, field: str, value: Any
) -> None:
    answer = await api.post("/v1/targets/plan", json=PLAN | {field: value})
    assert refused(answer) == [field]


async def test_a_plan_body_that_is_not_json_is_a_bad_request(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.post(
        "/v1/targets/plan",
        content=b'{"agents": 5,',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "malformed_json"


async def test_a_plan_gives_the_hand_worked_figures(api: httpx.AsyncClient) -> None:
    """100 leads a day, 5 agents dialing 8 h at 75 % occupancy, 4 min a call,
    200 min between calls to a lead, target 6, horizon 1 day:

    - an agent makes 480 × 0.75 / 4 = 90 calls a day, the team 450;
    - the target needs 100 × 6 = 600 calls a day: 4.5 attempts per lead,
      penetration 450 / 600 = 0.75, and ⌈600 / 90⌉ = 7 agents to cover it;
    - calls to a lead fall at minutes 0, 200 and 400 of day 1 (600 is past
      the 480 open minutes) and 0, 200, 400 of day 2: at most ⌈480 / 200⌉ =
      3 a day, the target reached on day 2, so 100 × 2 = 200 leads are in
      progress at once, and only 3 attempts fit the one-day horizon.
    """
    answer = await api.post("/v1/targets/plan", json=PLAN)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "capacity_calls_per_day": 450.0,
        "calls_needed_per_day": 600.0,
        "sustainable_attempts_per_lead": 4.5,
        "penetration": 0.75,
        "agents_needed": 7,
        "max_attempts_per_lead_per_day": 3,
        "days_to_reach_target": 2,
        "leads_in_progress": 200.0,
        "attempts_within_horizon": 3,
        "target_reachable_in_horizon": False,
    }


async def test_the_openapi_document_declares_the_refusals(
    api: httpx.AsyncClient,
) -> None:
    paths = orjson.loads((await api.get("/openapi.json")).content)["paths"]
    for path in (*WINDOWED, "/v1/leads/below-target"):
        assert "422" in paths[path]["get"]["responses"], path
    assert "404" in paths["/v1/leads/{lead_id}/penetration"]["get"]["responses"]
    assert "422" in paths["/v1/targets/plan"]["post"]["responses"]
