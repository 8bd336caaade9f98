"""Nurture's routes: parsing here, decisions in service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status

from services.nurture.schemas import NAME_PATTERN, CampaignIn, OptOutIn
from services.nurture.service import NurtureService

router = APIRouter(prefix="/v1", tags=["nurture"])

CampaignName = Annotated[str, Path(pattern=NAME_PATTERN)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        404: "Unknown campaign or lead",
        422: "Invalid fields, each named",
    }
    return {code: {"description": described[code]} for code in codes}


def _service(request: Request) -> NurtureService:
    service: NurtureService = request.app.state.nurture
    return service


@router.put("/campaigns/{campaign}", responses=_errors(422))
async def put_campaign(
    request: Request, campaign: CampaignName, body: CampaignIn, response: Response
) -> dict[str, Any]:
    """Create a campaign or store a new version of it. Leads not enrolled yet
    follow the new version; enrolled leads keep the one they started with."""
    stored, created = await _service(request).put_campaign(campaign, body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return stored


@router.get("/campaigns", responses=_errors())
async def list_campaigns(request: Request) -> dict[str, Any]:
    return await _service(request).list_campaigns()


@router.get("/campaigns/{campaign}", responses=_errors(404, 422))
async def get_campaign(request: Request, campaign: CampaignName) -> dict[str, Any]:
    return await _service(request).get_campaign(campaign)


@router.get("/leads/{lead_id}/nurture", responses=_errors(404, 422))
async def lead_nurture(request: Request, lead_id: uuid.UUID) -> dict[str, Any]:
    """The lead's enrolment, and each step of its campaign: sent, skipped
    (with why), pending (with when) or cancelled."""
    return await _service(request).nurture_view(lead_id)


@router.post("/leads/{lead_id}/opt-out", responses=_errors(404, 422))
async def opt_out(
    request: Request, lead_id: uuid.UUID, body: OptOutIn
) -> dict[str, Any]:
    """Stop a channel (email, sms or all) for the lead at once."""
    return await _service(request).opt_out(lead_id, body.channel)
