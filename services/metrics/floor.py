"""The queue's call floor, read over HTTP for the manager's page.

Agents and queue depth belong to the queue service (``GET /v1/floor``); the
metrics service only shows them. A queue that is down, slow or answers
something else is a reading with a plain reason, never an error of the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

logger = logging.getLogger(__name__)


class AgentCounts(BaseModel):
    available: int
    busy: int
    away: int
    offline: int


class PoolDepth(BaseModel):
    pool: str
    queued: int
    due_now: int
    leased: int
    agents: AgentCounts


class Floor(BaseModel):
    """The part of the queue's answer the page shows."""

    agents: AgentCounts
    queued: int
    due_now: int
    leased: int
    pools: list[PoolDepth]


@dataclass(frozen=True)
class FloorReading:
    """The floor as read, or why it could not be: exactly one is set."""

    floor: Floor | None = None
    answer: dict[str, Any] | None = None
    problem: str | None = None


class QueueFloor:
    """Reads ``GET /v1/floor`` from the queue at ``base_url``."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/floor"
        self._timeout = timeout_seconds

    async def read(self) -> FloorReading:
        # One client per read: the page is rendered every few seconds at most,
        # and a fresh connection cannot be a stale one. The queue is an
        # internal address, so proxy variables of the environment do not apply.
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, trust_env=False
            ) as client:
                response = await client.get(self.url)
        except httpx.HTTPError as error:
            logger.warning("floor.unreachable url=%s error=%r", self.url, error)
            return FloorReading(problem=_unreachable(error))
        if response.status_code != httpx.codes.OK:
            logger.warning(
                "floor.refused url=%s status=%d", self.url, response.status_code
            )
            return FloorReading(
                problem=f"answered HTTP {response.status_code} instead of the floor"
            )
        try:
            answer = response.json()
            floor = Floor.model_validate(answer)
        except (ValueError, ValidationError) as error:
            logger.warning("floor.unreadable url=%s error=%r", self.url, error)
            return FloorReading(problem="answered something that is not the floor")
        return FloorReading(floor=floor, answer=answer)


def _unreachable(error: httpx.HTTPError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "did not answer in time"
    return f"could not be reached ({type(error).__name__})"
