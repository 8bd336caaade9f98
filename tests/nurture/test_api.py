"""Nurture's HTTP surface: campaigns, the lead view and opt-outs; every
refusal names the field and changes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.nurture.conftest import Story, email_step, sms_step, unique


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    return body


def invalid_fields(answer: httpx.Response) -> list[str]:
    body = problem(answer, 422, "validation_failed")
    return [error["field"] for error in body["errors"]]


async def test_a_campaign_is_created_then_versioned(api: httpx.AsyncClient) -> None:
    # Every campaign of these tests names a source of its own: a campaign for
    # every source would take the other tests' leads.
    name = unique("camp")
    first = {
        "steps": [
            email_step(0)
            | {"content_url": "https://blog.example.com/seven-calls?utm=nurture"},
            sms_step(3),
        ],
        "pools": ["web-leads"],
        "sources": ["google-ads", "Facebook Lead Ads"],
    }

    created = await api.put(f"/v1/campaigns/{name}", json=first)
    replaced = await api.put(
        f"/v1/campaigns/{name}",
        json={
            "steps": [email_step(1)],
            "sources": [unique("src")],
            "enrolment_age_days": 45,
            "priority": 5,
        },
    )
    fetched = await api.get(f"/v1/campaigns/{name}")

    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1
    assert created.json()["definition"] == {
        "steps": [
            {
                "day": 0,
                "channel": "email",
                "template_id": "tpl-0",
                "content_url": "https://blog.example.com/seven-calls?utm=nurture",
            },
            {"day": 3, "channel": "sms", "template_id": "sms-3", "content_url": None},
        ],
        "pools": ["web-leads"],
        "sources": ["google-ads", "Facebook Lead Ads"],
        "enrolment_age_days": 30,
        "priority": 0,
        "active": True,
    }
    assert replaced.status_code == 200, replaced.text
    assert fetched.json()["version"] == 2
    assert fetched.json()["definition"]["enrolment_age_days"] == 45
    assert fetched.json()["definition"]["pools"] == []
    assert fetched.json()["definition"]["sources"] != first["sources"]
    assert name in (await api.get("/v1/campaigns")).json()["campaigns"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "steps"),
        ({"steps": []}, "steps"),
        (
            {"steps": [{"day": -1, "channel": "email", "template_id": "t"}]},
            "steps.0.day",
        ),
        (
            {"steps": [{"day": 0, "channel": "fax", "template_id": "t"}]},
            "steps.0.channel",
        ),
        (
            {"steps": [{"day": 0, "channel": "sms", "template_id": ""}]},
            "steps.0.template_id",
        ),
        ({"steps": [{"day": 0, "channel": "sms"}]}, "steps.0.template_id"),
        (
            {"steps": [email_step(0) | {"content_url": "not a url"}]},
            "steps.0.content_url",
        ),
        ({"steps": [email_step(0) | {"colour": "red"}]}, "steps.0.colour"),
        ({"steps": [email_step(5), email_step(2)]}, "steps"),
        ({"steps": [email_step(0)], "enrolment_age_days": 0}, "enrolment_age_days"),
        ({"steps": [email_step(0)], "enrolment_age_days": 30.5}, "enrolment_age_days"),
        ({"steps": [email_step(0)], "pools": ["bad pool"]}, "pools.0"),
        ({"steps": [email_step(0)], "sources": [""]}, "sources.0"),
        ({"steps": [email_step(0)], "priority": 10_000}, "priority"),
        ({"steps": [email_step(0)], "active": "maybe"}, "active"),
        ({"steps": [email_step(0)], "audience": "all"}, "audience"),
    ],
)
async def test_a_bad_campaign_is_refused_by_field_and_changes_nothing(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    name = unique("camp")
    assert (
        await api.put(
            f"/v1/campaigns/{name}",
            json={"steps": [email_step(9)], "sources": [unique("src")]},
        )
    ).status_code == 201

    answer = await api.put(f"/v1/campaigns/{name}", json=body)

    assert invalid_fields(answer) == [field]
    kept = (await api.get(f"/v1/campaigns/{name}")).json()
    assert (kept["version"], kept["definition"]["steps"][0]["day"]) == (1, 9)


async def test_steps_out_of_order_are_named_in_the_message(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.put(
        f"/v1/campaigns/{unique('camp')}",
        json={"steps": [email_step(0), email_step(5), email_step(2)]},
    )

    [error] = problem(answer, 422, "validation_failed")["errors"]
    assert "steps.2.day is 2, before the previous step's day 5" in error["message"]


async def test_a_bad_campaign_name_or_unknown_campaign_is_refused(
    api: httpx.AsyncClient,
) -> None:
    bad = await api.put("/v1/campaigns/has space", json={"steps": [email_step(0)]})
    missing = await api.get(f"/v1/campaigns/{unique('none')}")

    assert invalid_fields(bad) == ["path.campaign"]
    problem(missing, 404, "not_found")


async def test_an_unknown_lead_has_no_nurture_view_and_cannot_opt_out(
    api: httpx.AsyncClient,
) -> None:
    lead = uuid.uuid4()

    view = await api.get(f"/v1/leads/{lead}/nurture")
    opt_out = await api.post(f"/v1/leads/{lead}/opt-out", json={"channel": "sms"})
    not_an_id = await api.get("/v1/leads/42/nurture")

    problem(view, 404, "not_found")
    problem(opt_out, 404, "not_found")
    assert invalid_fields(not_an_id) == ["path.lead_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "channel"),
        ({"channel": "call"}, "channel"),
        ({"channel": "sms", "x": 1}, "x"),
    ],
)
async def test_a_bad_opt_out_is_refused_and_changes_nothing(
    story: Story, body: dict[str, Any], field: str
) -> None:
    await story.put_campaign([sms_step(0)])
    lead = story.received()
    await story.apply()

    answer = await story.api.post(f"/v1/leads/{lead}/opt-out", json=body)

    assert invalid_fields(answer) == [field]
    assert (await story.view(lead))["channels"]["sms"]["allowed"] is True
