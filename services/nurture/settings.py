"""Nurture's settings: the shared ones plus ``NURTURE_*`` variables."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.nurture.sequencing import SmsHours
from shared.settings import ServiceSettings


class NurtureSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NURTURE_", extra="ignore")

    service_name: str = "nurture"
    #: Texts go out only inside these local hours (and the law's), in every
    #: zone the lead may be in; a step due outside them waits for the opening.
    sms_start: dt.time = dt.time(8)
    sms_end: dt.time = dt.time(21)
    #: The zone assumed for a lead whose own zone is unknown.
    default_timezone: str = "America/New_York"
    #: How often the scheduler looks for due leads when it has caught up.
    tick_seconds: float = Field(1.0, gt=0, le=60)
    #: Leads claimed per scheduler transaction.
    scheduler_batch: int = Field(1000, ge=1, le=20_000)
    #: Most events the consumer applies in one transaction.
    consumer_batch: int = Field(1000, ge=1, le=10_000)

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @model_validator(mode="after")
    def _sms_hours_open(self) -> Self:
        if self.sms_end <= self.sms_start:
            raise ValueError("NURTURE_SMS_END must be later than NURTURE_SMS_START")
        return self

    @property
    def sms_hours(self) -> SmsHours:
        return SmsHours(self.sms_start, self.sms_end)
