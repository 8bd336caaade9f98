"""The queue's routes: parsing and status codes here, decisions in service."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status

from services.queue.schemas import (
    NAME_PATTERN,
    AgentIn,
    DncBulkIn,
    DncIn,
    ExternalCallIn,
    OutcomeIn,
    PoolRules,
    Routing,
    StatusIn,
)
from services.queue.service import NextLead, QueueService
from shared.http import JsonResponse

router = APIRouter(prefix="/v1", tags=["queue"])

PoolName = Annotated[str, Path(pattern=NAME_PATTERN)]
AgentName = Annotated[str, Path(pattern=NAME_PATTERN)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        404: "Unknown pool, agent, lease or lead",
        409: "The state does not allow it (agent busy, lease ended or expired)",
        422: "Invalid fields, each named",
    }
    return {code: {"description": described[code]} for code in codes}


def _service(request: Request) -> QueueService:
    service: QueueService = request.app.state.queue
    return service


@router.put("/pools/{pool}", responses=_errors(422))
async def put_pool(
    request: Request, pool: PoolName, rules: PoolRules, response: Response
) -> dict[str, Any]:
    """Create or replace a pool's rules; omitted rules take their defaults."""
    body, created = await _service(request).put_pool(pool, rules)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return body


@router.get("/pools/{pool}", responses=_errors(404))
async def get_pool(request: Request, pool: PoolName) -> dict[str, Any]:
    return await _service(request).get_pool(pool)


@router.get("/pools/{pool}/stats", responses=_errors(404))
async def pool_stats(request: Request, pool: PoolName) -> dict[str, Any]:
    """Leads by state and source, due now and leased."""
    return await _service(request).pool_stats(pool)


@router.get("/floor")
async def floor(request: Request) -> dict[str, Any]:
    """Agents by status, and every pool's queued, due-now and leased leads
    with the agents drawing from it: what a floor manager watches."""
    return await _service(request).floor()


@router.put("/routing", responses=_errors(422))
async def put_routing(request: Request, routing: Routing) -> dict[str, Any]:
    """Replace the routing table: (source, campaign) → pool, and the default."""
    return await _service(request).put_routing(routing)


@router.get("/routing")
async def get_routing(request: Request) -> dict[str, Any]:
    return await _service(request).get_routing()


@router.put("/agents/{agent}", responses=_errors(422))
async def put_agent(
    request: Request, agent: AgentName, body: AgentIn, response: Response
) -> dict[str, Any]:
    """Create or update an agent: the pools they draw from and their team."""
    out, created = await _service(request).put_agent(agent, body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return out


@router.get("/agents/{agent}", responses=_errors(404))
async def get_agent(request: Request, agent: AgentName) -> dict[str, Any]:
    """The agent, with lease, release and expired-lease counts."""
    return await _service(request).get_agent(agent)


@router.put("/agents/{agent}/status", responses=_errors(404, 409, 422))
async def put_status(
    request: Request, agent: AgentName, body: StatusIn
) -> dict[str, Any]:
    """Presence: only ``available`` agents get leads."""
    return await _service(request).set_status(agent, body.status)


@router.post(
    "/agents/{agent}/next-lead",
    responses={
        204: {"description": "Nothing is due for this agent"},
        **_errors(404, 409),
    },
)
async def next_lead(request: Request, agent: AgentName) -> Response:
    """Lease the highest-priority lead this agent may call now."""
    leased = await _service(request).next_lead(agent)
    if leased is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return JsonResponse(_lease_body(leased))


def _iso(when: dt.datetime) -> str:
    """UTC with a ``Z``, as every other answer writes times."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _lease_body(leased: NextLead) -> dict[str, Any]:
    lead = leased.lead
    return {
        "lease_id": str(leased.lease_id),
        "expires_at": _iso(leased.expires_at),
        "pool": leased.pool,
        "attempt": leased.attempt,
        "call_target": leased.call_target,
        "reason": {
            key: _iso(value) if isinstance(value, dt.datetime) else value
            for key, value in leased.reason.items()
        },
        "lead": {
            "lead_id": str(lead.lead_id),
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "phone": lead.phone,
            "email": lead.email,
            "source": lead.source,
            "campaign": lead.campaign,
            "timezones": lead.timezones,
            "region": lead.region,
        },
    }


@router.post("/leases/{lease}/outcome", responses=_errors(404, 409, 422))
async def post_outcome(
    request: Request, lease: uuid.UUID, outcome: OutcomeIn
) -> dict[str, Any]:
    """Record the call made on a lease; the lease ends."""
    return await _service(request).outcome(lease, outcome)


@router.post("/leases/{lease}/release", responses=_errors(404, 409))
async def post_release(request: Request, lease: uuid.UUID) -> dict[str, Any]:
    """Give the lead back without a call; counted against the agent."""
    return await _service(request).release(lease)


@router.get("/leads/{lead_id}", responses=_errors(404))
async def get_lead(request: Request, lead_id: uuid.UUID) -> dict[str, Any]:
    """State, attempts, next due time and the lead's calls and leases."""
    return await _service(request).lead_view(lead_id)


@router.get("/leads/{lead_id}/eligibility", responses=_errors(404))
async def get_eligibility(request: Request, lead_id: uuid.UUID) -> dict[str, Any]:
    """Why the lead is or is not being served right now, with until-times."""
    return await _service(request).eligibility(lead_id)


@router.post(
    "/leads/{lead_id}/calls",
    status_code=status.HTTP_201_CREATED,
    responses=_errors(404, 409, 422),
)
async def post_call(
    request: Request, lead_id: uuid.UUID, call: ExternalCallIn
) -> dict[str, Any]:
    """Log a call made outside the queue, so penetration stays true."""
    return await _service(request).log_call(lead_id, call)


@router.put("/dnc/{phone}", responses=_errors(422))
async def put_dnc(
    request: Request, phone: str, response: Response, body: DncIn | None = None
) -> dict[str, Any]:
    """Put a number on the do-not-call list (checked at every lease)."""
    added, _ = await _service(request).list_dnc(
        [phone], (body or DncIn()).reason, field_name="phone"
    )
    response.status_code = status.HTTP_201_CREATED if added else status.HTTP_200_OK
    return await _service(request).dnc_entry(phone)


@router.post("/dnc", responses=_errors(422))
async def post_dnc(request: Request, body: DncBulkIn) -> dict[str, Any]:
    """Bulk load: every number valid, or none is listed."""
    added, already = await _service(request).list_dnc(body.phones, body.reason)
    return {"listed": added, "already_listed": already}


@router.get("/dnc/{phone}", responses=_errors(404, 422))
async def get_dnc(request: Request, phone: str) -> dict[str, Any]:
    return await _service(request).dnc_entry(phone)


@router.delete(
    "/dnc/{phone}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_errors(404, 422),
)
async def delete_dnc(request: Request, phone: str) -> Response:
    await _service(request).unlist_dnc(phone)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
