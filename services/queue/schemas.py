"""The queue's request and response bodies, and a pool's rules."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.compliance import CallingHours, FrequencyCaps
from shared.events import Disposition

#: Pool, agent and team names: what is safe in a URL and a Prometheus label.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _seconds(value: Any) -> Any:
    """``"10m"`` → 600; numbers pass through as seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 90s, 10m, 4h, 2d")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


def _cadence(value: Any) -> Any:
    # "0m 10m 1h" is how people write a cadence; a JSON list works too.
    if isinstance(value, str):
        return value.split()
    return value


Seconds = Annotated[float, BeforeValidator(_seconds)]


class Window(BaseModel):
    """Local opening hours of one kind of day, ``"08:00"`` to ``"21:00"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _opens(self) -> Window:
        if self.end <= self.start:
            raise ValueError("end must be later than start (the window never opens)")
        return self


class Hours(BaseModel):
    """When a pool calls, in the lead's own time; ``null`` closes that day."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weekdays: Window | None = Window(start=dt.time(8), end=dt.time(21))
    saturday: Window | None = Window(start=dt.time(8), end=dt.time(21))
    sunday: Window | None = None

    @model_validator(mode="after")
    def _some_day_open(self) -> Hours:
        if self.weekdays is None and self.saturday is None and self.sunday is None:
            raise ValueError("calling hours never open: every day is closed")
        return self

    def as_calling_hours(self) -> tuple[CallingHours, ...]:
        days = (
            (self.weekdays, frozenset({1, 2, 3, 4, 5})),
            (self.saturday, frozenset({6})),
            (self.sunday, frozenset({7})),
        )
        return tuple(
            CallingHours(start=window.start, end=window.end, days=weekdays)
            for window, weekdays in days
            if window is not None
        )


class Caps(BaseModel):
    """Calls allowed per lead and per phone number; ``null`` = no pool cap.

    State laws can be stricter; the stricter limit always wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lifetime: int | None = Field(None, ge=1)
    per_day: int | None = Field(None, ge=1)
    per_24h: int | None = Field(None, ge=1)

    def as_frequency_caps(self) -> FrequencyCaps:
        return FrequencyCaps(
            lifetime=self.lifetime, per_day=self.per_day, per_24h=self.per_24h
        )


DEFAULT_CADENCE = (0, 600, 3600, 4 * 3600, 86400, 2 * 86400, 4 * 86400, 7 * 86400)


class PoolRules(BaseModel):
    """Everything that decides how a pool's leads are called."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call_target: int = Field(8, ge=1, le=100)
    #: Minimum gap before attempt n+1, in seconds; the first gap counts from
    #: arrival. A cadence shorter than the target repeats its last gap.
    cadence: Annotated[
        tuple[Annotated[Seconds, Field(ge=0)], ...],
        BeforeValidator(_cadence),
        Field(min_length=1, max_length=100),
    ] = DEFAULT_CADENCE
    calling_hours: Hours = Hours()
    #: Zone assumed for a lead whose own zone is unknown.
    timezone: str = "America/New_York"
    lease_seconds: int = Field(120, ge=5, le=3600)
    #: Relative priority of sources whose leads are equally behind; default 1.
    source_weights: dict[str, Annotated[float, Field(ge=0, le=1000)]] = Field(
        default_factory=dict
    )
    #: Attempts one agent may make before the lead goes to other agents.
    agent_attempt_limit: int | None = Field(3, ge=1)
    #: Where recycled leads go (null: they stay in this pool).
    recycle_to: Name | None = None
    #: Where exhausted leads go for another round (null: they stop).
    exhausted_to: Name | None = None
    #: How long a due callback waits for the agent who took it.
    callback_hold_seconds: int = Field(900, ge=0, le=86400)
    caps: Caps = Caps()
    #: Whether nurture may enrol a lead this pool still calls once the lead
    #: reaches nurture's enrolment age; false holds it until it is exhausted.
    nurture_while_calling: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    def gap_before(self, attempt: int) -> float:
        """Seconds between attempt ``attempt - 1`` (or arrival) and ``attempt``."""
        return self.cadence[min(attempt - 1, len(self.cadence) - 1)]

    def weight_of(self, source: str | None) -> float:
        return self.source_weights.get(source or "", 1.0)

    def described(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class PoolOut(BaseModel):
    name: str
    rules: PoolRules
    created_at: dt.datetime
    updated_at: dt.datetime


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=200, description="'*' = any")
    campaign: str | None = Field(None, max_length=200, description="null = any")
    pool: Name


class Routing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_pool: Name
    routes: list[Route] = Field(default_factory=list, max_length=10_000)


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[Name] = Field(min_length=1, max_length=100)
    team: Name | None = None


AgentStatus = Literal["available", "busy", "away", "offline"]


class StatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AgentStatus


class AgentOut(BaseModel):
    agent_id: str
    pools: list[str]
    team: str | None
    status: AgentStatus
    status_at: dt.datetime
    leases: int
    releases: int
    expired_leases: int
    open_lease: uuid.UUID | None = None


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disposition: Disposition
    duration_seconds: float = Field(0.0, ge=0, le=86400)
    callback_at: dt.datetime | None = Field(
        None,
        validate_default=True,
        description="Required for a callback: when the lead asked to be called",
    )
    note: str | None = Field(None, max_length=2000)

    # A field validator (not a model one) so the 422 names ``callback_at``;
    # ``disposition`` is declared first, so it is in ``info.data`` when valid.
    @field_validator("callback_at")
    @classmethod
    def _callback_needs_time(
        cls, value: dt.datetime | None, info: ValidationInfo
    ) -> dt.datetime | None:
        if value is None and info.data.get("disposition") == "callback":
            raise ValueError("a callback needs callback_at")
        if value is not None and value.tzinfo is None:
            raise ValueError("callback_at needs a time zone offset")
        return value


class ExternalCallIn(OutcomeIn):
    """A call made outside the queue, logged so penetration stays true."""

    agent_id: Name | None = None
    called_at: dt.datetime | None = Field(None, description="Default: now")

    @field_validator("called_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("called_at needs a time zone offset")
        return value


class DncBulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phones: list[str] = Field(min_length=1, max_length=100_000)
    reason: str = Field("bulk", max_length=200)


class DncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("manual", max_length=200)
