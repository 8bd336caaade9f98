"""Intake's routes. Parsing and status codes live here; decisions in service."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
from fastapi import APIRouter, Header, Request, Response, status
from pydantic import ValidationError

from services.intake.auth import SIGNATURE_HEADER
from services.intake.metrics import LEADS_REJECTED
from services.intake.repository import Source
from services.intake.schemas import (
    BatchAccepted,
    BatchIn,
    LeadAccepted,
    LeadIn,
    LeadOut,
)
from services.intake.service import IntakeService
from shared.errors import MalformedJson, RedialError, ValidationFailed
from shared.http import JsonResponse, validation_errors

router = APIRouter(prefix="/v1", tags=["intake"])
T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON"},
    401: {"description": "Missing or wrong credentials"},
    409: {"description": "Idempotency-Key reused with another body"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid fields, each named"},
}
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


def _service(request: Request) -> IntakeService:
    service: IntakeService = request.app.state.intake
    return service


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedJson(f"request body is not valid JSON: {error}") from None


async def _json_body(request: Request) -> tuple[bytes, Any]:
    body = await request.body()
    return body, _loads(body)


def _schema(model: type[Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


@router.post(
    "/leads",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=LeadAccepted,
    responses=_ERRORS,
    openapi_extra=_schema(LeadIn),
)
async def post_lead(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Accept one lead. 202 means it is stored and its event is queued."""
    service = _service(request)
    source = await _rejecting("unknown", service.authenticate(authorization))
    body, document = await _rejecting(source.name, _json_body(request))
    if not isinstance(document, dict):
        _reject(
            source.name,
            ValidationFailed([{"field": "body", "message": "expected a lead object"}]),
        )
    results = await _take(
        request, source, [document], prefix="", body=body, key=idempotency_key
    )
    return _accepted(results[0].model_dump(mode="json"))


@router.post(
    "/leads/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    responses=_ERRORS,
    openapi_extra=_schema(BatchIn),
)
async def post_batch(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Accept up to the batch limit of leads, all or none."""
    service = _service(request)
    source = await _rejecting("unknown", service.authenticate(authorization))
    body, document = await _rejecting(source.name, _json_body(request))
    try:
        batch = BatchIn.model_validate(document)
    except ValidationError as error:
        _reject(source.name, ValidationFailed(validation_errors(error.errors())))
    results = await _take(
        request,
        source,
        batch.leads,
        prefix="leads[{index}].",
        body=body,
        key=idempotency_key,
    )
    return _accepted(_batch_response(results).model_dump(mode="json"))


@router.post(
    "/webhooks/{source_name}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    responses=_ERRORS,
)
async def post_webhook(
    source_name: str,
    request: Request,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A CRM's own payload, signed with the source's webhook secret.

    The source's field mapping turns it into leads; then it is a batch.
    """
    service = _service(request)
    body = await request.body()
    source, verified = await _rejecting(
        "unknown", service.authenticate_webhook(source_name, signature, body)
    )
    # A captured request replayed inside the signature window is answered as
    # a retry of the first, not stored again.
    idempotency_key = idempotency_key or f"signature:{verified}"
    try:
        raw_leads = service.map_webhook(source, _loads(body))
    except RedialError as error:
        _reject(source.name, error)
    results = await _take(
        request,
        source,
        raw_leads,
        prefix="leads[{index}]." if len(raw_leads) > 1 else "",
        body=body,
        key=idempotency_key,
    )
    return _accepted(_batch_response(results).model_dump(mode="json"))


@router.get("/leads/{lead_id}", response_model=LeadOut, responses={404: {}, 401: {}})
async def get_lead(
    lead_id: uuid.UUID,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> LeadOut:
    """One of this source's leads, with its current do-not-call flag and how
    many duplicates of it arrived."""
    service = _service(request)
    source = await _rejecting("unknown", service.authenticate(authorization))
    return await service.get_lead(source, lead_id)


async def _take(
    request: Request,
    source: Source,
    raw_leads: list[Any],
    *,
    prefix: str,
    body: bytes,
    key: str | None,
) -> list[LeadAccepted]:
    """Validate the leads and accept them: what every posting route ends with."""
    service = _service(request)
    leads = _parse(service, raw_leads, source, prefix=prefix)
    return await _rejecting(
        source.name,
        service.accept(
            source,
            leads,
            idempotency_key=key,
            request_hash=_fingerprint(request, body),
        ),
    )


def _parse(
    service: IntakeService, raw: list[Any], source: Source, *, prefix: str
) -> list[LeadIn]:
    try:
        return service.parse(raw, source, prefix=prefix)
    except RedialError as error:
        _reject(source.name, error)


def _batch_response(results: list[LeadAccepted]) -> BatchAccepted:
    duplicates = sum(1 for result in results if result.status == "duplicate")
    return BatchAccepted(
        results=results, accepted=len(results) - duplicates, duplicates=duplicates
    )


def _accepted(body: Any) -> Response:
    return JsonResponse(body, status_code=status.HTTP_202_ACCEPTED)


def _fingerprint(request: Request, body: bytes) -> bytes:
    """What an Idempotency-Key is bound to: the route and the exact body."""
    return hashlib.sha256(request.url.path.encode() + b"\n" + body).digest()


def _reject(source: str, error: RedialError) -> NoReturn:
    LEADS_REJECTED.labels(source, error.code).inc()
    raise error


async def _rejecting(source: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except RedialError as error:
        _reject(source, error)
