"""Credentials: API keys for the REST endpoints, HMAC signatures for webhooks.

API keys are random 256-bit tokens shown once and stored as SHA-256 digests.
Webhook bodies are signed as ``HMAC-SHA256(secret, f"{t}." + body)`` and sent
in ``Redial-Signature: t=<unix seconds>,v1=<hex digest>``; a signature whose
``t`` is outside the tolerance is refused, so a captured request cannot be
replayed later. Several ``v1=`` entries may be sent while a secret is rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from shared.errors import Unauthorized

SIGNATURE_HEADER = "Redial-Signature"


def new_api_key(source: str) -> str:
    return f"rdl_{source}_{secrets.token_urlsafe(32)}"


def new_webhook_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def hash_api_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header, or 401."""
    if not authorization:
        raise Unauthorized("missing Authorization header (expected: Bearer <API key>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be: Bearer <API key>")
    return token.strip()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value a sender puts on ``body`` (also used by tests, docs)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    header: str | None, *, secret: str, body: bytes, now: float, tolerance: int
) -> str:
    """Raise 401 unless ``header`` signs ``body`` with ``secret`` recently enough.

    Returns the verified ``t.digest``: the same signed request sent again is
    recognised by it (intake answers a replay as an idempotent retry).
    """
    if not header:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise Unauthorized(f"{SIGNATURE_HEADER} must look like t=<unix>,v1=<hex>")
    if abs(now - timestamp) > tolerance:
        raise Unauthorized(
            f"signature timestamp is outside the {tolerance}s window (replay refused)"
        )
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    # compare_digest refuses non-ASCII text; such a candidate cannot match anyway.
    if not any(
        candidate.isascii() and hmac.compare_digest(expected, candidate)
        for candidate in candidates
    ):
        raise Unauthorized("signature does not match the body")
    return f"{timestamp}.{expected}"
