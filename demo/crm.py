"""The simulated CRMs: leads, each CRM's own webhook payload, and signing.

Three CRMs post through intake's signed webhook (``POST /v1/webhooks/{source}``),
each in its own format, read by the source's field mapping: HubSpot contact
records, Facebook Lead Ads lead objects and a web form's JSON with renamed
fields. Pure code: the floor does the posting.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import phonenumbers

from demo.places import Place

SIGNATURE_HEADER = "Redial-Signature"

_FIRST_NAMES = (
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John",
    "Katherine", "Linus", "Margaret", "Niklaus", "Radia", "Ken", "Shafi", "Tim",
)  # fmt: skip
_LAST_NAMES = (
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
    "Backus", "Johnson", "Torvalds", "Hamilton", "Wirth", "Perlman", "Thompson",
)  # fmt: skip
_CAMPAIGNS = ("spring-promo", "retargeting", "brand")


@dataclass(frozen=True)
class Crm:
    """One CRM: the source it posts as and how its payload looks."""

    source: str
    mapping: str
    mapping_options: dict[str, Any]
    #: Share of the leads it sends (relative).
    weight: float
    #: The demo pool kind its leads are routed to.
    pool_kind: str
    payload: Callable[[Lead], Any]


@dataclass(frozen=True)
class Lead:
    """One simulated lead, before a CRM dresses it in its own format."""

    number: int  # 1, 2, 3… in the order the CRMs send them
    external_id: str
    first_name: str
    last_name: str
    phone: str  # E.164
    email: str
    place: Place
    campaign: str
    created_at: dt.datetime


def hubspot_payload(lead: Lead) -> Any:
    """A legacy HubSpot contact, as a workflow webhook sends it."""
    properties = {
        "firstname": {"value": lead.first_name},
        "lastname": {"value": lead.last_name},
        "phone": {"value": lead.phone},
        "email": {"value": lead.email},
        "hs_analytics_source_data_1": {"value": lead.campaign},
    }
    if lead.place.postal_code:
        properties["zip"] = {"value": lead.place.postal_code}
    return {"vid": int(lead.external_id), "properties": properties}


def facebook_payload(lead: Lead) -> Any:
    """A Lead Ads lead object, as the Graph API returns it."""
    answers = [
        ("full_name", f"{lead.first_name} {lead.last_name}"),
        ("phone_number", lead.phone),
        ("email", lead.email),
    ]
    if lead.place.postal_code:
        answers.append(("zip_code", lead.place.postal_code))
    return {
        "id": lead.external_id,
        "created_time": lead.created_at.strftime("%Y-%m-%dT%H:%M:%S+0000"),
        "campaign_name": lead.campaign,
        "form_id": "demo-form",
        "field_data": [{"name": name, "values": [value]} for name, value in answers],
    }


def webform_payload(lead: Lead) -> Any:
    """A website's contact form, posted as JSON with its own field names."""
    form: dict[str, Any] = {
        "submission_id": lead.external_id,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "tel": lead.phone,
        "email": lead.email,
        "campaign": lead.campaign,
        "page": "/pricing",
    }
    if lead.place.postal_code:
        form["zip"] = lead.place.postal_code
    return form


#: Pool kinds: paid-social leads get a pool of their own, so "by pool" and
#: "by source" both have something to compare.
WEB, SOCIAL = "web", "social"

CRMS = (
    Crm("demo-hubspot", "hubspot", {}, 3, WEB, hubspot_payload),
    Crm("demo-facebook", "facebook", {}, 2, SOCIAL, facebook_payload),
    Crm(
        "demo-webform",
        "generic",
        {
            "fields": {
                "tel": "phone",
                "zip": "postal_code",
                "submission_id": "external_id",
            }
        },
        2,
        WEB,
        webform_payload,
    ),
)


class LeadMaker:
    """Makes the run's leads.

    Which CRM sends a lead, its name and campaign follow the seed. Phone
    numbers, e-mail addresses and external ids also carry a run id: a second
    run against the same stack would otherwise send the first run's leads
    again, and intake would answer "duplicate" (its dedup window is 30 days).
    """

    def __init__(self, seed: int, run_id: str, places: tuple[Place, ...]) -> None:
        if not places:
            raise ValueError("leads need at least one place to live in")
        self._seed = seed
        self._run_id = run_id
        self._places = places
        self._numbers = random.Random(f"redial-demo/phones/{run_id}")
        self._issued: set[str] = set()
        # Numeric, as HubSpot ids are, and unique across runs.
        self._id_base = int(hashlib.sha256(run_id.encode()).hexdigest()[:10], 16)

    def make(self, number: int, now: dt.datetime) -> tuple[Crm, Lead]:
        draw = random.Random(f"redial-demo/{self._seed}/lead/{number}")
        crm = draw.choices(CRMS, [crm.weight for crm in CRMS])[0]
        place = draw.choice(self._places)
        first, last = draw.choice(_FIRST_NAMES), draw.choice(_LAST_NAMES)
        lead = Lead(
            number=number,
            external_id=str(self._id_base * 100_000 + number),
            first_name=first,
            last_name=last,
            phone=self._phone(place),
            email=f"{first}.{last}.{self._run_id}.{number}@example.com".lower(),
            place=place,
            campaign=draw.choice(_CAMPAIGNS),
            created_at=now,
        )
        return crm, lead

    def _phone(self, place: Place) -> str:
        """A valid number in ``place`` that no other lead of the run has."""
        while True:
            digits = "".join(
                str(self._numbers.randrange(10)) for _ in range(place.local_digits)
            )
            if place.prefix.startswith("+1") and (
                digits[0] in "01" or digits[1:3] == "11" or digits[:3] == "555"
            ):
                continue  # not an exchange (N11 codes, 555 directory numbers)
            candidate = place.prefix + digits
            if candidate in self._issued:
                continue
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
                self._issued.add(candidate)
                return candidate


def body_of(payload: Any) -> bytes:
    return orjson.dumps(payload)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``Redial-Signature``: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "t." + body)>``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"
