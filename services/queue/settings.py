"""Queue's settings: the shared ones plus ``QUEUE_*`` variables."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings


class QueueSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QUEUE_", extra="ignore")

    service_name: str = "queue"
    #: How often the scheduler promotes due leads, re-plans leads whose calling
    #: window closed and reaps expired leases.
    tick_seconds: float = Field(1.0, gt=0, le=60)
    #: Leads re-planned per transaction. Re-planning is Python work on the
    #: service's event loop, so small batches keep next-lead answering.
    replan_batch: int = Field(200, ge=1, le=100_000)
    #: Tests that move a manual clock set this: next-lead then first runs a
    #: scheduler pass when the clock has moved past the last one, so the moved
    #: time takes effect at once. Refused in production, where the background
    #: loop alone does the work and a request never waits for it.
    scheduler_inline: bool = False
    #: How often the per-pool depth gauges are refreshed. Each refresh is a
    #: grouped count over the whole leads table (about a second of database
    #: time per million leads), so keep this well above the scrape interval.
    gauge_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _inline_scheduler_only_in_tests(self) -> Self:
        if self.scheduler_inline and self.environment == Environment.PRODUCTION:
            raise ValueError("QUEUE_SCHEDULER_INLINE is for tests, not production")
        return self
