"""The HTTP face every service shares.

:func:`build_app` returns a FastAPI app with problem-JSON errors, a request
body limit, request ids, a latency histogram, ``/healthz``, ``/readyz`` and
``/metrics``. Each service adds its routes and its background work through a
:class:`Runtime`, which the lifespan starts and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import is_transient
from shared.errors import (
    MalformedJson,
    PayloadTooLarge,
    RedialError,
    ServiceUnavailable,
    ValidationFailed,
)
from shared.logging import request_id_var
from shared.metrics import HTTP_REQUEST_DURATION

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]+$")
#: Paths kept out of the latency histogram: probes would drown real traffic.
_UNMEASURED = frozenset({"/healthz", "/readyz", "/metrics"})


class JsonResponse(JSONResponse):
    """JSON through orjson. A route returning one directly also skips
    FastAPI's second validation of the response model (kept for the docs)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ProblemResponse(JsonResponse):
    media_type = "application/problem+json"


def problem_response(error: RedialError) -> ProblemResponse:
    return ProblemResponse(error.problem(), status_code=error.status)


def validation_errors(
    errors: Any, *, prefix: str = "", field_of: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Turn pydantic's error list into ``{"field", "message"}`` pairs.

    ``field_of`` names the field for model-level errors (which pydantic
    locates at the model itself) by their error type.
    """
    named: list[dict[str, str]] = []
    for error in errors:
        location = [str(part) for part in error["loc"] if part not in ("body",)]
        if not location and field_of and error["type"] in field_of:
            location = [field_of[error["type"]]]
        path = (prefix + ".".join(location)).replace(".[", "[").rstrip(".")
        named.append({"field": path or "body", "message": error["msg"]})
    return named


@dataclass
class Runtime:
    """What a service holds while it runs: pool, background tasks, checks."""

    service: str
    pool: asyncpg.Pool | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: Extra readiness facts (name -> callable returning a short status).
    readiness: dict[str, Callable[[], str]] = field(default_factory=dict)
    #: Exposition text appended to /metrics: metric families a service
    #: renders itself when their values change rather than on every scrape.
    exposition: list[Callable[[], bytes]] = field(default_factory=list)

    def spawn(self, name: str, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            # Background loops handle their own failures; one that still
            # escapes is a bug, and must be loud rather than a silent stop.
            try:
                await work
            except asyncio.CancelledError:
                raise
            except BaseException:
                logger.exception("task.crashed service=%s task=%s", self.service, name)
                raise

        task = asyncio.create_task(guarded(), name=f"{self.service}.{name}")
        self.tasks.append(task)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, before parsing."""

    def __init__(
        self, app: ASGIApp, limit: int, on_refuse: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on_refuse is not None:
            self.on_refuse()
        error = PayloadTooLarge(f"request body is larger than {self.limit} bytes")
        await problem_response(error)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RequestObserver:
    """Gives each request an id (``X-Request-Id``) and times it by route."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"")
        # Kept only if it is a plain token: it goes into logs and headers.
        request_id = incoming.decode("latin-1")[:64]
        if not request_id or not _REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            path = scope["path"]
            if path not in _UNMEASURED:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                HTTP_REQUEST_DURATION.labels(
                    self.service, scope["method"], template, str(status)
                ).observe(time.perf_counter() - started)


def build_app(
    *,
    service: str,
    version: str,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]],
    runtime: Runtime,
    max_body_bytes: int,
    on_body_too_large: Callable[[], None] | None = None,
) -> FastAPI:
    """A FastAPI app with the project's common behaviour installed."""
    app = FastAPI(
        title=f"Redial {service}",
        version=version,
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    app.state.runtime = runtime

    @app.exception_handler(RedialError)
    async def _redial_error(_: Request, error: RedialError) -> Response:
        return problem_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> Response:
        # Still problem JSON with a code: a dependency that is down is a 503
        # the client may retry; anything else is our bug, logged with its trace.
        if is_transient(error):
            logger.warning("request.dependency_down error=%r", error)
            response = problem_response(
                ServiceUnavailable(
                    f"a dependency is unavailable: {type(error).__name__}"
                )
            )
            response.headers["Retry-After"] = "1"
            return response
        logger.error("request.failed", exc_info=error)
        return problem_response(RedialError("internal error; see the service log"))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, error: RequestValidationError) -> Response:
        errors = error.errors()
        # A body that is not JSON at all is a malformed request, not a field error.
        broken = [e for e in errors if e.get("type") == "json_invalid"]
        if broken:
            detail = broken[0].get("ctx", {}).get("error", "invalid JSON")
            return problem_response(
                MalformedJson(f"request body is not valid JSON: {detail}")
            )
        return problem_response(ValidationFailed(validation_errors(errors)))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up and serving."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> Response:
        """PostgreSQL answers; other dependencies are reported, not required.

        The broker is reported but does not make the service unready: events
        wait in the outbox while it is down, so traffic should keep coming.
        """
        checks = {"database": await _database_status(runtime.pool)}
        checks.update({name: probe() for name, probe in runtime.readiness.items()})
        ready = checks["database"] == "ok"
        return JsonResponse(
            {"status": "ready" if ready else "unready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=True)
    async def metrics() -> Response:
        """Prometheus exposition of this process's metrics."""
        text = b"".join([generate_latest(), *(part() for part in runtime.exposition)])
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, limit=max_body_bytes, on_refuse=on_body_too_large)
    app.add_middleware(RequestObserver, service=service)
    return app


async def _database_status(pool: asyncpg.Pool | None) -> str:
    if pool is None:
        return "starting"
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception as error:  # noqa: BLE001 - reported, not raised
        return f"unreachable: {type(error).__name__}"
    return "ok"


@contextlib.asynccontextmanager
async def running(runtime: Runtime) -> AsyncIterator[None]:
    """Stops the runtime's tasks and pool when the app shuts down."""
    try:
        yield
    finally:
        await runtime.stop()
