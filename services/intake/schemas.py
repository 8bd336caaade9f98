"""Request and response bodies of the intake API."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.intake import normalize
from shared.events import Consent

#: At most this many attributes, and this many bytes of them as JSON: an event
#: carries them, and a broker refuses messages over about 1 MB.
ATTRIBUTES_LIMIT = 50
ATTRIBUTES_MAX_BYTES = 16_384


def attributes_too_large(attributes: dict[str, Any]) -> bool:
    return len(orjson.dumps(attributes)) > ATTRIBUTES_MAX_BYTES


def _no_nul(value: str) -> str:
    # PostgreSQL text and jsonb cannot hold U+0000; refuse it here as a 422
    # rather than fail the insert.
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "contains a NUL character")
    return value


def _no_nul_anywhere(value: Any) -> Any:
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(str(key))
            _no_nul_anywhere(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul_anywhere(item)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
ShortText = Annotated[Text, StringConstraints(strip_whitespace=True, max_length=200)]
Name = Annotated[Text, StringConstraints(strip_whitespace=True, max_length=100)]


class ConsentIn(BaseModel):
    """What the lead agreed to. A lead who asked to be contacted may be called;
    SMS and e-mail marketing need an explicit yes."""

    model_config = ConfigDict(extra="forbid")

    call: StrictBool = True
    sms: StrictBool = False
    email: StrictBool = False


def _problem(kind: str, error: normalize.FieldProblem) -> PydanticCustomError:
    return PydanticCustomError(kind, str(error))


class LeadIn(BaseModel):
    """One lead as a client sends it. Needs a phone or an e-mail address.

    Validation context: ``region`` (default phone region).
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: ShortText | None = None
    external_id: ShortText | None = Field(None, min_length=1)
    campaign: ShortText | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Text | None = Field(None, max_length=40, examples=["+1 305 555 0123"])
    email: Text | None = Field(None, max_length=254)
    postal_code: Text | None = Field(None, max_length=16)
    timezone: Text | None = Field(None, max_length=64, examples=["America/New_York"])
    consent: ConsentIn = Field(default_factory=ConsentIn)
    attributes: dict[str, Any] = Field(
        default_factory=dict, max_length=ATTRIBUTES_LIMIT
    )

    # Derived during validation; not part of the request body.
    _country: str | None = None
    _phone_zones: tuple[str, ...] = ()

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return None
        region = (info.context or {}).get("region", "US")
        try:
            parsed = normalize.phone(value, region)
        except normalize.FieldProblem as error:
            raise _problem("invalid_phone", error) from None
        if info.context is not None:
            # Keep the parse for _reachable: parsing costs more than the rest.
            info.context.setdefault("phones", {})[parsed.e164] = parsed
        return parsed.e164

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any]) -> dict[str, Any]:
        _no_nul_anywhere(value)
        if attributes_too_large(value):
            raise PydanticCustomError(
                "attributes_too_large",
                "attributes take more than {limit} bytes as JSON",
                {"limit": ATTRIBUTES_MAX_BYTES},
            )
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return normalize.email(value)
        except normalize.FieldProblem as error:
            raise _problem("invalid_email", error) from None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return normalize.timezone(value)
        except normalize.FieldProblem as error:
            raise _problem("invalid_timezone", error) from None

    @model_validator(mode="after")
    def _reachable(self, info: ValidationInfo) -> Self:
        if self.phone is None and self.email is None:
            raise PydanticCustomError(
                "missing_contact", "a lead needs a phone or an email"
            )
        region = (info.context or {}).get("region", "US")
        if self.phone is not None:
            parsed = (info.context or {}).get("phones", {}).get(
                self.phone
            ) or normalize.phone(self.phone, region)
            self._country = parsed.country
            self._phone_zones = parsed.timezones
        if self.postal_code is not None:
            try:
                self.postal_code = normalize.postal_code(
                    self.postal_code, self._country or region
                )
            except normalize.FieldProblem as error:
                raise PydanticCustomError(
                    "invalid_postal_code",
                    "{reason}",
                    {"reason": str(error)},
                ) from None
        return self

    def located(self, default_region: str) -> Located:
        """Country, region and time zones inferred from the lead's data."""
        country = self._country or default_region
        place = (
            normalize.place_of(self.postal_code, country)
            if self.postal_code
            else normalize.Place(region=None, timezone=None)
        )
        zones: list[str] = []
        for zone in (self.timezone, place.timezone, *self._phone_zones):
            if zone and zone not in zones:
                zones.append(zone)
        region = place.region
        if region is None and self.phone is not None:
            region = normalize.region_of_phone(self.phone)
        return Located(
            country=country,
            region=region,
            timezone=zones[0] if zones else None,
            # A zone the client gave is taken as the truth; otherwise every
            # candidate is kept so the queue can respect all of them.
            timezones=[self.timezone] if self.timezone else zones,
        )

    def consent_flags(self) -> Consent:
        return Consent(
            call=self.consent.call, sms=self.consent.sms, email=self.consent.email
        )


class Located(BaseModel):
    country: str | None
    region: str | None
    timezone: str | None
    timezones: list[str]


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    leads: list[dict[str, Any]] = Field(min_length=1)


class LeadAccepted(BaseModel):
    """202 body: the lead's id and what happened to this copy."""

    lead_id: uuid.UUID
    status: Literal["accepted", "duplicate"]
    duplicate_action: Literal["ignored", "merged"] | None = None
    dnc: bool = False


class BatchAccepted(BaseModel):
    results: list[LeadAccepted]
    accepted: int
    duplicates: int


class LeadOut(BaseModel):
    lead_id: uuid.UUID
    source: str
    external_id: str | None
    campaign: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    email: str | None
    postal_code: str | None
    country: str | None
    region: str | None
    timezone: str | None
    timezones: list[str]
    consent: Consent
    attributes: dict[str, Any]
    dnc: bool
    duplicates: int
    received_at: dt.datetime
    updated_at: dt.datetime
