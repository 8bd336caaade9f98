"""Metrics' settings: the shared ones plus ``METRICS_*`` variables."""

from __future__ import annotations

import zoneinfo

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class MetricsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="METRICS_", extra="ignore")

    service_name: str = "metrics"
    #: The zone whose calendar days the day counters and reports use: the
    #: sales floor's, so "today" is the manager's today.
    business_timezone: str = "UTC"
    #: Most events the consumer applies in one transaction. Per-statement
    #: costs are shared by the whole batch, so large batches drain a backlog
    #: faster (2 000 against 500: about a fifth); a batch holds its leads'
    #: rows locked only while it runs.
    consumer_batch: int = Field(2000, ge=1, le=10_000)
    #: How often planned attempts whose time has come are counted as due.
    tick_seconds: float = Field(1.0, gt=0, le=60)
    #: Slots counted per transaction of the slot counter.
    slot_batch: int = Field(5000, ge=1, le=1_000_000)
    #: How often the gauges are recomputed from the day counters. A refresh
    #: aggregates 30 days of them: about 2 s of database time with 100 000
    #: leads active in the window, so keep it well above the scrape interval.
    gauge_seconds: float = Field(60.0, gt=0)
    #: A lead still open whose next attempt is later than its cadence's gap
    #: by more than this counts as abandoned. The default allows for nights
    #: and closed calling hours.
    abandon_grace_seconds: float = Field(24 * 3600, ge=0)
    #: "Called within" figure of the speed-to-lead reports.
    fast_call_seconds: float = Field(300, gt=0)
    #: An agent with a call in this span counts as active.
    active_agent_seconds: float = Field(900, gt=0)
    #: The queue service, whose floor (agents by status, pool depth) the
    #: manager's page shows. Read server-side at each render of the page.
    queue_url: str = "http://127.0.0.1:8002"
    #: How long a render waits for the queue before showing the page without
    #: its floor: short, so a queue that hangs cannot hold the page up.
    queue_timeout_seconds: float = Field(2.0, gt=0, le=30)

    @field_validator("business_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @field_validator("queue_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, not {value!r}")
        return value.rstrip("/")

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.business_timezone)
