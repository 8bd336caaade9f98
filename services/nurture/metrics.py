"""Nurture's own Prometheus metrics. Labels are campaigns (configured, few),
channels and reasons: bounded, never a lead id.

Counters count what each copy of the service did (combine copies with
``sum``); the lag gauge is each copy's own view (combine with ``max``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ENROLMENTS = Counter(
    "redial_nurture_enrolments_total",
    "Leads enrolled in a campaign.",
    ["campaign"],
)
JOBS = Counter(
    "redial_nurture_jobs_total",
    "nurture.job events written for senders, by campaign and channel.",
    ["campaign", "channel"],
)
SUPPRESSED = Counter(
    "redial_nurture_steps_suppressed_total",
    "Due steps held back: skipped for consent, opt-out or a missing address,"
    " or delayed (quiet_hours) until the SMS hours open.",
    ["campaign", "channel", "reason"],
)
LEFT = Counter(
    "redial_nurture_enrolments_ended_total",
    "Leads that left a campaign's sequence, by why: completed, converted,"
    " opted_out, reinquiry, invalid, dnc, campaign_stopped, failed (parked).",
    ["campaign", "reason"],
)
SCHEDULER_LAG = Gauge(
    "redial_nurture_scheduler_lag_seconds",
    "How long the most overdue lead of the scheduler's last pass had been due"
    " (0 when nothing was due).",
)
SCHEDULER_PASSED = Gauge(
    "redial_nurture_scheduler_last_pass_timestamp_seconds",
    "When this copy's scheduler last finished a pass (Unix time): a scheduler"
    " failing every pass leaves it behind, as its lag gauge cannot show.",
)
SCHEDULER_FAILURES = Counter(
    "redial_nurture_scheduler_failures_total",
    "Scheduler passes that failed (rolled back, retried after a backoff).",
)
PARKED = Counter(
    "redial_nurture_leads_parked_total",
    "Leads taken out of their sequence because the scheduler could not apply"
    " the rules to them (logged as scheduler.lead_parked with the error).",
)
JOB_DELAY = Histogram(
    "redial_nurture_job_delay_seconds",
    "From a step falling due to its job being written to the outbox.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
