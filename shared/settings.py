"""Settings from environment variables.

Every service has one settings class on :class:`ServiceSettings`. Variables
shared by all services (``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``,
``REDIAL_*``) keep one name everywhere; a service's own variables carry its
prefix (``INTAKE_DEFAULT_REGION``). Settings are built once at start.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LEAD_EVENTS_TOPIC = "lead-events"
NURTURE_JOBS_TOPIC = "nurture-jobs"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic that belongs to ``topic``."""
    return f"{topic}.dlq"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


def _shared(name: str) -> AliasChoices:
    # An alias makes pydantic-settings read the variable without the service
    # prefix, so DATABASE_URL means the same thing to every service.
    return AliasChoices(name, name.lower())


class ServiceSettings(BaseSettings):
    """What every service needs; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: Environment = Field(
        Environment.DEVELOPMENT, validation_alias=_shared("REDIAL_ENVIRONMENT")
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=_shared("DATABASE_URL"),
    )
    database_pool_min: int = Field(
        2, ge=1, validation_alias=_shared("DATABASE_POOL_MIN")
    )
    database_pool_max: int = Field(
        10, ge=1, validation_alias=_shared("DATABASE_POOL_MAX")
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS")
    )
    # Tansu cannot hand out producer ids, so idempotence is off by default and
    # switched on where the broker supports it (Apache Kafka in production).
    kafka_idempotent_producer: bool = Field(
        False, validation_alias=_shared("KAFKA_IDEMPOTENT_PRODUCER")
    )
    topic_partitions: int = Field(
        6, ge=1, le=1000, validation_alias=_shared("REDIAL_TOPIC_PARTITIONS")
    )
    topic_replication: int = Field(
        1, ge=1, validation_alias=_shared("REDIAL_TOPIC_REPLICATION")
    )
    log_format: str = Field(
        "text", pattern="^(text|json)$", validation_alias=_shared("REDIAL_LOG_FORMAT")
    )
    log_level: str = Field("INFO", validation_alias=_shared("REDIAL_LOG_LEVEL"))
    outbox_poll_seconds: float = Field(
        0.2, gt=0, validation_alias=_shared("REDIAL_OUTBOX_POLL_SECONDS")
    )
    outbox_batch_size: int = Field(
        500, ge=1, validation_alias=_shared("REDIAL_OUTBOX_BATCH_SIZE")
    )
    outbox_retention_seconds: float = Field(
        3600, ge=0, validation_alias=_shared("REDIAL_OUTBOX_RETENTION_SECONDS")
    )
    #: The longest a consumer's fetch may wait at the broker for records.
    #: Apache Kafka answers a fetch once any record is there, so this only
    #: sets how often an idle consumer asks; Tansu holds every fetch this
    #: long, so there it is added to each event's delivery (aiokafka's own
    #: default, 500 ms, made speed to lead half a second slower per hop).
    consumer_fetch_wait_ms: int = Field(
        100, ge=1, le=5000, validation_alias=_shared("REDIAL_CONSUMER_FETCH_WAIT_MS")
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, validation_alias=_shared("REDIAL_MAX_BODY_BYTES")
    )
    #: End-to-end tests only: read the time from this shared clock file
    #: (:class:`shared.clock.SharedClock`) instead of the system clock, so a
    #: test can move every service's time at once. Honoured only when
    #: ``REDIAL_ENVIRONMENT`` is ``test``; any other environment refuses to
    #: start with it set, so a stray variable cannot freeze production time.
    test_clock_file: Path | None = Field(
        None, validation_alias=_shared("REDIAL_TEST_CLOCK_FILE")
    )

    #: The schema this service owns; set by each subclass.
    service_name: str = "service"

    @property
    def db_schema(self) -> str:
        """The PostgreSQL schema this service owns."""
        return self.service_name

    @field_validator("test_clock_file", mode="before")
    @classmethod
    def _blank_means_none(cls, value: object) -> object:
        # REDIAL_TEST_CLOCK_FILE= (set but empty) means "no test clock".
        return None if value == "" else value

    @model_validator(mode="after")
    def _test_clock_only_in_tests(self) -> Self:
        if self.test_clock_file is not None and self.environment != Environment.TEST:
            raise ValueError(
                "REDIAL_TEST_CLOCK_FILE is set but REDIAL_ENVIRONMENT is "
                f"{self.environment.value!r}: the shared test clock stops "
                "real time and is accepted only with REDIAL_ENVIRONMENT=test"
            )
        return self

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError("DATABASE_POOL_MIN must not exceed DATABASE_POOL_MAX")
        return self
