"""Field mappings: how a CRM's own webhook payload becomes Redial leads.

Each source names a mapping (and options for it). A mapping takes the parsed
JSON body and returns lead dictionaries in the shape of the REST API; the
usual validation then applies to them. A payload a mapping cannot read raises
:class:`MappingProblem` naming the path that is wrong.

Shipped mappings:

``generic``
    A web form posted as JSON: one object, a list of objects, or
    ``{"leads": [...]}``. Option ``fields`` renames keys to lead fields
    (``{"fields": {"phone_number": "phone"}}``); keys that are not lead fields
    are kept in ``attributes``.
``hubspot``
    HubSpot contact records: the legacy contact shape
    (``{"vid": 1, "properties": {"firstname": {"value": "Ada"}}}``) that
    workflow webhooks send, or the CRM v3 object shape
    (``{"id": "1", "properties": {"firstname": "Ada"}}``); one or a list.
``facebook``
    Facebook Lead Ads lead objects (``{"id", "created_time", "field_data":
    [{"name", "values"}], "campaign_name", ...}``), as the Graph API returns
    them after a ``leadgen`` notification; also the notification envelope
    (``{"object": "page", "entry": [{"changes": [{"value": {...}}]}]}``) when
    its values carry ``field_data``. A bare notification holds only ids; the
    integration has to fetch the lead before forwarding it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LEAD_FIELDS = frozenset(
    {
        "external_id",
        "campaign",
        "first_name",
        "last_name",
        "phone",
        "email",
        "postal_code",
        "timezone",
        "consent",
        "attributes",
    }
)


class MappingProblem(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


Mapping = Callable[[Any, dict[str, Any]], list[dict[str, Any]]]


def _records(payload: Any, list_key: str | None = None) -> list[tuple[str, Any]]:
    """The records of a payload that is one object or a list of them."""
    if (
        isinstance(payload, dict)
        and list_key
        and isinstance(payload.get(list_key), list)
    ):
        payload = payload[list_key]
        prefix = f"{list_key}"
    else:
        prefix = ""
    if isinstance(payload, dict):
        return [(prefix or "body", payload)]
    if isinstance(payload, list) and payload:
        return [(f"{prefix}[{index}]", record) for index, record in enumerate(payload)]
    raise MappingProblem(prefix or "body", "expected an object or a non-empty list")


def generic(payload: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    renames: dict[str, str] = options.get("fields", {})
    leads: list[dict[str, Any]] = []
    for path, record in _records(payload, "leads"):
        if not isinstance(record, dict):
            raise MappingProblem(path, "expected an object")
        lead: dict[str, Any] = {}
        given = record.get("attributes") or {}
        if not isinstance(given, dict):
            raise MappingProblem(f"{path}.attributes", "expected an object")
        extra: dict[str, Any] = dict(given)
        for key, value in record.items():
            target = renames.get(key, key)
            if target in LEAD_FIELDS and target != "attributes":
                lead[target] = value
            elif key not in ("attributes", "source"):
                extra[key] = value
        if extra:
            lead["attributes"] = extra
        leads.append(lead)
    return leads


_HUBSPOT_FIELDS = {
    "firstname": "first_name",
    "lastname": "last_name",
    "email": "email",
    "phone": "phone",
    "zip": "postal_code",
}
_HUBSPOT_ATTRIBUTES = (
    "company",
    "lifecyclestage",
    "hs_analytics_source",
    "city",
    "state",
)


def hubspot(payload: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    leads: list[dict[str, Any]] = []
    for path, record in _records(payload, "results"):
        if not isinstance(record, dict) or not isinstance(
            record.get("properties"), dict
        ):
            raise MappingProblem(f"{path}.properties", "a contact needs properties")
        properties = {
            name: (value.get("value") if isinstance(value, dict) else value)
            for name, value in record["properties"].items()
        }
        record_id = record.get("vid", record.get("id", record.get("objectId")))
        lead: dict[str, Any] = {
            target: properties[name]
            for name, target in _HUBSPOT_FIELDS.items()
            if properties.get(name) not in (None, "")
        }
        if "phone" not in lead and properties.get("mobilephone"):
            lead["phone"] = properties["mobilephone"]
        if record_id is not None:
            lead["external_id"] = str(record_id)
        campaign = properties.get("hs_analytics_source_data_1")
        if campaign:
            lead["campaign"] = str(campaign)
        if _truthy(properties.get("hs_email_optout")):
            lead["consent"] = {"call": True, "sms": False, "email": False}
        attributes = {
            name: properties[name]
            for name in _HUBSPOT_ATTRIBUTES
            if properties.get(name) not in (None, "")
        }
        if attributes:
            lead["attributes"] = attributes
        leads.append(lead)
    return leads


_FACEBOOK_FIELDS = {
    "email": "email",
    "phone_number": "phone",
    "first_name": "first_name",
    "last_name": "last_name",
    "zip_code": "postal_code",
    "post_code": "postal_code",
    "postal_code": "postal_code",
}


def facebook(payload: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    leads: list[dict[str, Any]] = []
    for path, record in _facebook_lead_objects(payload):
        field_data = record.get("field_data")
        if not isinstance(field_data, list):
            raise MappingProblem(
                f"{path}.field_data",
                "missing: a leadgen notification carries only ids; fetch the lead"
                " from the Graph API and forward the lead object",
            )
        answers: dict[str, Any] = {}
        for index, entry in enumerate(field_data):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise MappingProblem(f"{path}.field_data[{index}]", "needs a name")
            values = entry.get("values") or []
            if not isinstance(values, list):
                raise MappingProblem(
                    f"{path}.field_data[{index}].values", "expected a list of answers"
                )
            answers[entry["name"]] = values[0] if values else None
        lead: dict[str, Any] = {
            target: answers[name]
            for name, target in _FACEBOOK_FIELDS.items()
            if answers.get(name) not in (None, "")
        }
        if "first_name" not in lead and answers.get("full_name"):
            first, _, last = str(answers["full_name"]).strip().partition(" ")
            lead["first_name"] = first
            if last:
                lead["last_name"] = last
        lead_id = record.get("id", record.get("leadgen_id"))
        if lead_id is not None:
            lead["external_id"] = str(lead_id)
        campaign = record.get("campaign_name") or record.get("campaign_id")
        if campaign:
            lead["campaign"] = str(campaign)
        attributes = {
            key: record[key]
            for key in ("form_id", "ad_id", "adset_id", "created_time", "platform")
            if record.get(key) is not None
        }
        attributes.update(
            {
                name: value
                for name, value in answers.items()
                if name not in _FACEBOOK_FIELDS and name != "full_name"
            }
        )
        if attributes:
            lead["attributes"] = attributes
        leads.append(lead)
    return leads


def _facebook_lead_objects(payload: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(payload, dict) and isinstance(payload.get("entry"), list):
        found: list[tuple[str, dict[str, Any]]] = []
        for entry_index, entry in enumerate(payload["entry"]):
            changes = entry.get("changes") if isinstance(entry, dict) else None
            if not isinstance(changes, list):
                raise MappingProblem(f"entry[{entry_index}].changes", "expected a list")
            for change_index, change in enumerate(changes):
                value = change.get("value") if isinstance(change, dict) else None
                path = f"entry[{entry_index}].changes[{change_index}].value"
                if not isinstance(value, dict):
                    raise MappingProblem(path, "expected an object")
                found.append((path, value))
        if not found:
            raise MappingProblem("entry", "no lead in the notification")
        return found
    records = _records(payload, "data")
    for path, record in records:
        if not isinstance(record, dict):
            raise MappingProblem(path, "expected an object")
    return records


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


MAPPINGS: dict[str, Mapping] = {
    "generic": generic,
    "hubspot": hubspot,
    "facebook": facebook,
}
