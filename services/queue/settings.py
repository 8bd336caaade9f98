"""Queue's settings: the shared ones plus ``QUEUE_*`` variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class QueueSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUEUE_", extra="ignore")

    service_name: str = "queue"
    #: How often the scheduler promotes due leads, re-plans leads whose calling
    #: window closed and reaps expired leases. A request that finds the last
    #: pass older than this runs one itself first, so a moved clock is seen.
    tick_seconds: float = Field(1.0, gt=0, le=60)
    #: Leads re-planned per statement when their calling window has closed.
    replan_batch: int = Field(1000, ge=1, le=100_000)
    #: How often the per-pool depth gauges are refreshed (a grouped count).
    gauge_seconds: float = Field(15.0, gt=0)
