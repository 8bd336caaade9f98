"""Metrics' own Prometheus metrics. Labels are pools, sources, teams,
dispositions and three windows: bounded by configuration, never by traffic
(no lead or agent id).

The gauges are recomputed from the database, so every copy of the service
reports the same values (combine copies with ``max``); the counters and
histograms count the events each copy applied (combine with ``sum``).

The recomputed gauges live in a registry of their own, rendered once per
refresh: with 500 pools × sources they are thousands of lines, which
prometheus_client takes tens of milliseconds to format, too long to redo on
every scrape for values that change once a minute.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WINDOWS = ("1d", "7d", "30d")
#: The gauges recomputed from the database; see the module docstring.
RECOMPUTED = CollectorRegistry(auto_describe=True)

PENETRATION = Gauge(
    "redial_metrics_penetration_ratio",
    "Capped lead penetration of the window: sum of min(attempts, attempts due)"
    " per lead over the sum of attempts due.",
    ["pool", "source", "window"],
    registry=RECOMPUTED,
)
TEAM_PENETRATION = Gauge(
    "redial_metrics_team_penetration_ratio",
    "Capped lead penetration of the leads each team called in the window.",
    ["team", "window"],
    registry=RECOMPUTED,
)
LIST_PENETRATION = Gauge(
    "redial_metrics_list_penetration_ratio",
    "Share of the pool's leads no longer dialable (exhausted, converted,"
    " invalid, opted out or on the do-not-call list).",
    ["pool"],
    registry=RECOMPUTED,
)
ATTEMPTS_PER_LEAD = Gauge(
    "redial_metrics_attempts_per_lead",
    "Saturation: average attempts per lead of the pool.",
    ["pool"],
    registry=RECOMPUTED,
)
UNCALLED = Gauge(
    "redial_metrics_uncalled_leads",
    "Open leads of the pool never called yet.",
    ["pool"],
    registry=RECOMPUTED,
)
OLDEST_UNCALLED = Gauge(
    "redial_metrics_oldest_uncalled_lead_age_seconds",
    "Age of the pool's oldest open lead never called (0 when none).",
    ["pool"],
    registry=RECOMPUTED,
)
ACTIVE_AGENTS = Gauge(
    "redial_metrics_active_agents",
    "Agents with a call in the last 15 minutes (METRICS_ACTIVE_AGENT_SECONDS).",
    ["team"],
    registry=RECOMPUTED,
)
GAUGES_REFRESHED = Gauge(
    "redial_metrics_gauges_refreshed_timestamp_seconds",
    "When this copy last recomputed the gauges above (Unix time); a stale"
    " value means they no longer move.",
    registry=RECOMPUTED,
)
ATTEMPTS = Counter(
    "redial_metrics_attempts_total",
    "Calls counted, by disposition.",
    ["pool", "disposition"],
)
SPEED_TO_LEAD = Histogram(
    "redial_metrics_speed_to_lead_seconds",
    "Time from a lead's arrival to its first call.",
    ["pool"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400),
)
_ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20)
ATTEMPTS_AT_CONTACT = Histogram(
    "redial_metrics_attempts_at_contact",
    "The attempt number at which a lead was first reached.",
    ["pool"],
    buckets=_ATTEMPT_BUCKETS,
)
ATTEMPTS_AT_CONVERSION = Histogram(
    "redial_metrics_attempts_at_conversion",
    "The attempt number at which a lead converted.",
    ["pool"],
    buckets=_ATTEMPT_BUCKETS,
)
EVENT_DELAY = Histogram(
    "redial_metrics_event_delay_seconds",
    "Time from an event's creation to its effect being committed here.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
