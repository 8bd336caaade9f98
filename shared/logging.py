"""Structured logging, configured once at each entry point.

Modules log through ``logging.getLogger(__name__)`` with lower-case event
names and key=value context (``lead.accepted lead_id=… source=…``). The ids of
the request, lead and event being handled live in context variables and are
added to every record: as JSON fields when deployed, as a suffix locally.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from shared.events import Envelope

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
lead_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "lead_id", default=None
)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "event_id", default=None
)
_CONTEXT = (
    ("request_id", request_id_var),
    ("lead_id", lead_id_var),
    ("event_id", event_id_var),
)


@contextlib.contextmanager
def event_context(envelope: Envelope | None) -> Iterator[None]:
    """Tag log records with the event (and its lead) being handled."""
    if envelope is None:
        yield
        return
    event_token = event_id_var.set(str(envelope.id))
    lead_token = lead_id_var.set(envelope.subject)
    try:
        yield
    finally:
        event_id_var.reset(event_token)
        lead_id_var.reset(lead_token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in _CONTEXT:
            setattr(record, name, variable.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, _ in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, context ids at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{name}={value}"
            for name, _ in _CONTEXT
            if (value := getattr(record, name, None)) is not None
        ]
        return f"{line} [{' '.join(context)}]" if context else line


def configure(*, json: bool, level: str = "INFO", service: str | None = None) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_redial", False):
            root.removeHandler(existing)
    handler._redial = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every failed reconnect at ERROR; our loops report those.
    logging.getLogger("aiokafka").setLevel(
        logging.CRITICAL if level == "INFO" else level
    )
    if service:
        logging.getLogger(__name__).debug("logging.configured service=%s", service)
