"""Intake's Prometheus metrics. ``source`` is a configured source name or
``unknown`` for requests that never authenticated, so the label set stays
bounded."""

from __future__ import annotations

from prometheus_client import Counter

LEADS_RECEIVED = Counter(
    "redial_intake_leads_received_total",
    "Leads accepted as new.",
    ["source"],
)
LEADS_DUPLICATE = Counter(
    "redial_intake_leads_duplicate_total",
    "Leads that matched a stored lead's phone or e-mail.",
    ["source"],
)
LEADS_REJECTED = Counter(
    "redial_intake_leads_rejected_total",
    "Requests refused, by reason.",
    ["source", "reason"],
)
