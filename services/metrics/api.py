"""The metrics service's routes: parsing here, figures in service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from services.metrics.page import REFRESH_SECONDS, STATIC, ManagerPage
from services.metrics.planner import PlanRequest, PlanResult, plan_targets
from services.metrics.schemas import CohortGroupBy, GroupBy
from services.metrics.service import MetricsService

router = APIRouter(prefix="/v1", tags=["metrics"])

WINDOW_HELP = "1d (today), 7d, 30d (any Nd up to 366d) or YYYY-MM-DD..YYYY-MM-DD"
Window = Annotated[str, Query(description=WINDOW_HELP, max_length=32)]
Name = Annotated[str | None, Query(max_length=200)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid parameters, each named"}
}


def _service(request: Request) -> MetricsService:
    service: MetricsService = request.app.state.metrics
    return service


@router.get("/penetration", responses=_ERRORS)
async def penetration(
    request: Request,
    group_by: GroupBy = "pool",
    window: Window = "7d",
    pool: Name = None,
    source: Name = None,
) -> dict[str, Any]:
    """Call-target penetration per group over a window, with contact and
    conversion rates and speed to lead."""
    return await _service(request).penetration(group_by, window, pool, source)


@router.get("/penetration/list", responses=_ERRORS)
async def list_penetration(
    request: Request,
    group_by: CohortGroupBy = "pool",
    window: Annotated[str | None, Query(description=WINDOW_HELP, max_length=32)] = None,
    pool: Name = None,
    source: Name = None,
) -> dict[str, Any]:
    """List penetration, saturation and unique-attempt penetration of the
    leads that arrived in the window (every lead when no window is given)."""
    return await _service(request).list_penetration(group_by, window, pool, source)


@router.get("/leads/below-target", responses=_ERRORS)
async def below_target(
    request: Request,
    day: Annotated[
        str | None, Query(description="YYYY-MM-DD; today if omitted")
    ] = None,
    pool: Name = None,
    source: Name = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The day's leads with fewer attempts than were due, worst first."""
    return await _service(request).below_target(day, pool, source, limit, cursor)


@router.get(
    "/leads/{lead_id}/penetration",
    responses={404: {"description": "No events seen for the lead"}},
)
async def lead_penetration(request: Request, lead_id: uuid.UUID) -> dict[str, Any]:
    return await _service(request).lead_penetration(lead_id)


@router.get("/sources/scorecard", responses=_ERRORS)
async def scorecard(request: Request, window: Window = "30d") -> dict[str, Any]:
    """Per source: leads, duplicates, and contact and conversion rates beside
    the penetration its leads actually got."""
    return await _service(request).scorecard(window)


@router.get("/attempts-distribution", responses=_ERRORS)
async def attempts_distribution(
    request: Request,
    window: Window = "30d",
    pool: Name = None,
    source: Name = None,
) -> dict[str, Any]:
    """At which attempt leads were first contacted, converted, exhausted and
    abandoned."""
    return await _service(request).attempts_distribution(window, pool, source)


@router.post("/targets/plan", responses=_ERRORS)
async def plan(body: PlanRequest) -> PlanResult:
    """What call target a team can sustain, and the penetration a proposed
    target would reach."""
    return plan_targets(body)


page_router = APIRouter(tags=["page"])


@page_router.get("/", response_class=HTMLResponse, responses=_ERRORS)
async def manager_page(
    request: Request,
    refresh: Annotated[
        int, Query(ge=0, le=3600, description="Seconds between refreshes; 0: none")
    ] = REFRESH_SECONDS,
) -> HTMLResponse:
    """The sales manager's page: penetration by pool and source, today's
    below-target leads, speed to lead, the attempt at conversion, and the
    queue's agents and depth. Every figure is one of this API's answers."""
    page: ManagerPage = request.app.state.page
    return HTMLResponse(
        await page.render(refresh), headers={"Cache-Control": "no-store"}
    )


#: What the service serves: the API, the manager's page and the page's files.
routes = APIRouter()
routes.include_router(router)
routes.include_router(page_router)
routes.mount("/static", StaticFiles(directory=STATIC), name="static")
