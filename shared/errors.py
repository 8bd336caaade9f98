"""One error model for every service.

A :class:`RedialError` carries the HTTP status and a stable machine ``code``;
the HTTP layer renders it as RFC 9457 problem JSON. Domain errors subclass it
beside the service that raises them and are named after the situation.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RedialError(Exception):
    """Base of every error that reaches a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The problem-details body for this error."""
        body: dict[str, Any] = {
            "type": f"https://redial.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        }
        body.update(self.extra)
        return body


class BadRequest(RedialError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class MalformedJson(BadRequest):
    code = "malformed_json"
    title = "Malformed JSON"


class Unauthorized(RedialError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(RedialError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(RedialError):
    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(RedialError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(RedialError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class ValidationFailed(RedialError):
    """422: ``errors`` lists each bad field as ``{"field", "message"}``."""

    status = 422
    code = "validation_failed"
    title = "Validation failed"

    def __init__(self, errors: list[dict[str, str]], message: str | None = None):
        fields = ", ".join(error["field"] for error in errors)
        super().__init__(message or f"invalid fields: {fields}", errors=errors)
        self.errors = errors


class ServiceUnavailable(RedialError):
    status = 503
    code = "service_unavailable"
    title = "Service unavailable"


class EventError(Exception):
    """Raised by an event handler; ``retriable`` decides retry versus DLQ."""

    retriable: ClassVar[bool] = False


class PoisonEvent(EventError):
    """The event can never be processed: it goes to the dead-letter topic."""

    retriable = False


class TransientEventError(EventError):
    """A dependency failed; the same event is retried after a backoff."""

    retriable = True
