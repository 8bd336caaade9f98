"""Prometheus metrics that every service exposes, labelled by ``service``.

Service-specific metrics live in each service's ``metrics.py``. Every service
runs as one process, so the default registry is the whole truth for a scrape.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

HTTP_REQUEST_DURATION = Histogram(
    "redial_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["service", "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)

OUTBOX_BACKLOG = Gauge(
    "redial_outbox_backlog",
    "Events written to the outbox and not yet published.",
    ["service"],
)
OUTBOX_LEADER = Gauge(
    "redial_outbox_leader",
    "1 in the one copy of a service whose relay publishes its outbox, else 0.",
    ["service"],
)
OUTBOX_PUBLISHED = Counter(
    "redial_outbox_published_total",
    "Events the outbox relay published to Kafka.",
    ["service"],
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "redial_outbox_publish_failures_total",
    "Publish attempts that failed and will be retried.",
    ["service"],
)
OUTBOX_PARKED = Counter(
    "redial_outbox_parked_total",
    "Events the broker refused for good (e.g. too large), set aside.",
    ["service"],
)
OUTBOX_LAG = Histogram(
    "redial_outbox_lag_seconds",
    "Time from an event's commit to the broker acknowledging it.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

EVENTS_CONSUMED = Counter(
    "redial_events_consumed_total",
    "Events a consumer applied (redeliveries it skipped are not counted).",
    ["consumer"],
)
EVENTS_DEAD_LETTERED = Counter(
    "redial_events_dead_lettered_total",
    "Events a consumer could not process and sent to the dead-letter topic.",
    ["consumer"],
)
CONSUMER_PARTITIONS = Gauge(
    "redial_consumer_partitions_assigned",
    "Partitions the broker has given this copy's consumer; copies of a service"
    " split a topic's partitions between them.",
    ["consumer"],
)
CONSUMER_LAG = Gauge(
    "redial_consumer_lag_messages",
    "Messages on the consumer's assigned partitions it has not processed yet.",
    ["consumer"],
)
