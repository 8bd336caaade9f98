"""Metrics service: rolling lead-penetration counters, Prometheus gauges,
the managers' reports and the call-target planner (see docs/metrics.md)."""
