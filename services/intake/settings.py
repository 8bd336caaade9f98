"""Intake's settings: the shared ones plus ``INTAKE_*`` variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore")

    service_name: str = "intake"
    #: Region for phone numbers written without a +country prefix.
    default_region: str = Field("US", pattern="^[A-Z]{2}$")
    #: A lead matching a stored one's phone or e-mail this recently is a duplicate.
    dedup_window_seconds: int = Field(30 * 24 * 3600, ge=0)
    #: Webhook signatures older or newer than this are refused as replays.
    signature_tolerance_seconds: int = Field(300, ge=1)
    #: How long an Idempotency-Key keeps answering with its first response.
    idempotency_ttl_seconds: int = Field(24 * 3600, ge=60)
    batch_limit: int = Field(1000, ge=1, le=10_000)
