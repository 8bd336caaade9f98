"""The embedded stack: PostgreSQL, a Kafka-compatible broker and the services
on one machine without Docker. ``make run`` uses it; so does the test suite."""
