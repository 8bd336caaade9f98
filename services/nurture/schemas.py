"""Nurture's request and response bodies: campaigns and opt-outs."""

from __future__ import annotations

import datetime as dt
import uuid
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from services.nurture.sequencing import Step

#: Campaign and pool names: what is safe in a URL and a Prometheus label.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
#: Something other than blanks: a blank name would match nothing.
Source = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
#: The longest a sequence may run, in days after enrolment (ten years).
MAX_DAY = 3650


class StepIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    day: int = Field(ge=0, le=MAX_DAY, description="Days after enrolment")
    channel: Literal["email", "sms"]
    template_id: str = Field(min_length=1, max_length=200, pattern=r"\S")
    content_url: AnyHttpUrl | None = Field(
        None, description="Blog article, newsletter or page the message links to"
    )

    def as_step(self) -> Step:
        url = str(self.content_url) if self.content_url is not None else None
        return Step(self.day, self.channel, self.template_id, url)


class CampaignIn(BaseModel):
    """A campaign as PUT: omitted fields take their defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[StepIn] = Field(min_length=1, max_length=100)
    #: Queue pools whose leads the campaign takes; empty = every pool.
    pools: list[Name] = Field(default_factory=list, max_length=1000)
    #: Lead sources the campaign takes; empty = every source.
    sources: list[Source] = Field(default_factory=list, max_length=1000)
    #: Days after arrival a lead not converted is enrolled.
    enrolment_age_days: int = Field(30, ge=1, le=MAX_DAY)
    #: Where several campaigns match a lead, the highest priority wins (then
    #: the first name in alphabetical order).
    priority: int = Field(0, ge=-1000, le=1000)
    #: False stops the campaign: nobody new is enrolled and the leads in it
    #: leave at their next step.
    active: bool = True

    @field_validator("steps")
    @classmethod
    def _steps_in_order(cls, steps: list[StepIn]) -> list[StepIn]:
        for index, (earlier, later) in enumerate(pairwise(steps), start=1):
            if later.day < earlier.day:
                raise ValueError(
                    f"steps.{index}.day is {later.day}, before the previous"
                    f" step's day {earlier.day}; list steps in the order they go"
                    " out"
                )
        return steps


class CampaignOut(BaseModel):
    name: str
    version: int
    definition: CampaignIn
    created_at: dt.datetime
    updated_at: dt.datetime


class OptOutIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["email", "sms", "all"]


StepState = Literal["sent", "skipped", "pending", "cancelled"]


class StepView(BaseModel):
    step: int
    day: int
    channel: Literal["email", "sms"]
    template_id: str
    content_url: str | None
    state: StepState
    #: Sent/skipped: when; pending: when it falls due (a text may wait for
    #: the SMS hours after that); cancelled: null.
    at: dt.datetime | None
    reason: str | None = None
    job_id: uuid.UUID | None = None


class ChannelView(BaseModel):
    allowed: bool
    #: null when allowed; else consent, opted_out or no_address.
    reason: str | None


class NurtureView(BaseModel):
    lead_id: uuid.UUID
    #: waiting (not enrolled yet), held (its pool keeps it while calling),
    #: enrolled, finished, or excluded (not enrolled while the reason holds:
    #: for good when converted, invalid or superseded by a re-inquiry).
    status: Literal["waiting", "held", "enrolled", "finished", "excluded"]
    reason: str | None
    campaign: str | None
    campaign_version: int | None
    received_at: dt.datetime
    #: When a waiting lead is due to be enrolled (null: no campaign matches).
    enrolment_due_at: dt.datetime | None
    enrolled_at: dt.datetime | None
    finished_at: dt.datetime | None
    channels: dict[str, ChannelView]
    steps: list[StepView]
