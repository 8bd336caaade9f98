"""Queue's Prometheus metrics. Labels are pool names, dispositions, lead
states and a two-valued result: bounded by configuration, never by traffic."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LEASES = Counter("redial_queue_leases_total", "Leads leased to an agent.", ["pool"])
OUTCOMES = Counter(
    "redial_queue_outcomes_total",
    "Call outcomes recorded, by disposition.",
    ["pool", "disposition"],
)
RELEASES = Counter(
    "redial_queue_releases_total",
    "Leases given back without a call.",
    ["pool"],
)
REAPED = Counter(
    "redial_queue_reaped_leases_total",
    "Leases that expired and were returned to their pool.",
    ["pool"],
)
LEADS = Gauge(
    "redial_queue_leads",
    "Leads per pool and state (refreshed periodically).",
    ["pool", "state"],
)
DUE_NOW = Gauge(
    "redial_queue_due_now",
    "Leads callable right now per pool (refreshed periodically).",
    ["pool"],
)
NEXT_LEAD_SECONDS = Histogram(
    "redial_queue_next_lead_seconds",
    "Time to answer next-lead inside the service.",
    ["result"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
