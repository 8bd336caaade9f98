"""API keys and webhook signatures."""

from __future__ import annotations

import re

import pytest

from services.intake.auth import (
    SIGNATURE_HEADER,
    bearer_token,
    hash_api_key,
    new_api_key,
    new_webhook_secret,
    sign,
    verify_signature,
)
from shared.errors import Unauthorized

SECRET = "whsec_Lr4mQ0bM2u6Yq7vJ9xT1cE3nP5sK8dW0aZ2fH4gU6iO"
OTHER_SECRET = "whsec_9Xb2Vn4Mq6Lk8Jh0Gf2Ds4Aa6Pp8Oo0Ii2Uu4Yy6Tt8"
SIGNED_AT = 1_767_625_200  # 2026-01-05 15:00 UTC
BODY = b'{"phone":"+13055550123","first_name":"Ada"}'
TOLERANCE = 300


def verify(
    header: str | None,
    *,
    body: bytes = BODY,
    secret: str = SECRET,
    now: float = SIGNED_AT + 5,
) -> None:
    verify_signature(header, secret=secret, body=body, now=now, tolerance=TOLERANCE)


def digest_of(header: str) -> str:
    return header.rpartition("v1=")[2]


# -- signatures -------------------------------------------------------------


def test_signature_header_names_time_and_hex_digest() -> None:
    header = sign(SECRET, SIGNED_AT, BODY)

    assert re.fullmatch(rf"t={SIGNED_AT},v1=[0-9a-f]{{64}}", header)
    assert SIGNATURE_HEADER == "Redial-Signature"


def test_signed_body_is_verified() -> None:
    verify(sign(SECRET, SIGNED_AT, BODY))


def test_signature_is_deterministic() -> None:
    assert sign(SECRET, SIGNED_AT, BODY) == sign(SECRET, SIGNED_AT, BODY)


def test_tampered_body_is_refused() -> None:
    header = sign(SECRET, SIGNED_AT, BODY)
    tampered = BODY.replace(b"Ada", b"Eve")

    with pytest.raises(Unauthorized, match="signature does not match the body"):
        verify(header, body=tampered)


def test_signature_made_with_another_secret_is_refused() -> None:
    with pytest.raises(Unauthorized, match="signature does not match the body"):
        verify(sign(OTHER_SECRET, SIGNED_AT, BODY))


def test_digest_moved_to_a_newer_timestamp_is_refused() -> None:
    """The timestamp is signed too, so a replay cannot be made to look fresh."""
    digest = digest_of(sign(SECRET, SIGNED_AT, BODY))
    later = SIGNED_AT + 3_600

    with pytest.raises(Unauthorized, match="does not match"):
        verify(f"t={later},v1={digest}", now=later)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_signature_header_is_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized, match="missing Redial-Signature header"):
        verify(header)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "sha256=" + "0" * 64,
        f"t={SIGNED_AT}",
        "v1=" + "0" * 64,
        "t=yesterday,v1=" + "0" * 64,
        "t=-5,v1=" + "0" * 64,
    ],
    ids=["garbage", "other scheme", "no v1", "no t", "t not a number", "negative t"],
)
def test_malformed_signature_header_is_refused(header: str) -> None:
    with pytest.raises(Unauthorized, match=r"must look like t=<unix>,v1=<hex>"):
        verify(header)


@pytest.mark.parametrize(
    "now",
    [SIGNED_AT + TOLERANCE + 1, SIGNED_AT - TOLERANCE - 1],
    ids=["too old", "too far in the future"],
)
def test_signature_outside_the_tolerance_is_refused(now: float) -> None:
    header = sign(SECRET, SIGNED_AT, BODY)

    with pytest.raises(Unauthorized, match=r"outside the 300s window \(replay"):
        verify(header, now=now)


@pytest.mark.parametrize("now", [SIGNED_AT + TOLERANCE, SIGNED_AT - TOLERANCE])
def test_signature_at_the_edge_of_the_tolerance_is_accepted(now: float) -> None:
    verify(sign(SECRET, SIGNED_AT, BODY), now=now)


def test_timestamp_is_checked_before_the_digest() -> None:
    """A stale request is told it is stale, whatever its digest."""
    with pytest.raises(Unauthorized, match="outside"):
        verify(f"t={SIGNED_AT},v1=" + "0" * 64, now=SIGNED_AT + 86_400)


@pytest.mark.parametrize("secret", [SECRET, OTHER_SECRET], ids=["old", "new"])
def test_either_secret_verifies_while_it_is_rotated(secret: str) -> None:
    old = digest_of(sign(SECRET, SIGNED_AT, BODY))
    new = digest_of(sign(OTHER_SECRET, SIGNED_AT, BODY))

    verify(f"t={SIGNED_AT},v1={old},v1={new}", secret=secret)


def test_rotation_header_without_a_matching_entry_is_refused() -> None:
    stale = digest_of(sign("whsec_retired", SIGNED_AT, BODY))
    new = digest_of(sign(OTHER_SECRET, SIGNED_AT, BODY))

    with pytest.raises(Unauthorized, match="does not match"):
        verify(f"t={SIGNED_AT}, v1={stale}, v1={new}", secret=SECRET)


def test_non_ascii_digest_is_refused_as_unauthorized() -> None:
    """Regression: compare_digest raised TypeError on non-ASCII text (a 500)."""
    with pytest.raises(Unauthorized):
        verify(f"t={SIGNED_AT},v1=caf\u00e9")


def test_unauthorized_is_a_401() -> None:
    with pytest.raises(Unauthorized) as caught:
        verify(None)

    assert caught.value.status == 401
    assert caught.value.problem()["code"] == "unauthorized"


# -- API keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    ["Bearer rdl_web_abc123", "bearer rdl_web_abc123", "Bearer  rdl_web_abc123 "],
)
def test_bearer_token_is_read_from_the_header(authorization: str) -> None:
    assert bearer_token(authorization) == "rdl_web_abc123"


@pytest.mark.parametrize("authorization", [None, ""])
def test_missing_authorization_header_is_refused(authorization: str | None) -> None:
    with pytest.raises(Unauthorized, match="missing Authorization header"):
        bearer_token(authorization)


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWRhOnNlY3JldA==", "Token rdl_web_abc123", "rdl_web_abc123"],
)
def test_other_authorization_scheme_is_refused(authorization: str) -> None:
    with pytest.raises(Unauthorized, match="must be: Bearer <API key>"):
        bearer_token(authorization)


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Bearer    "])
def test_bearer_without_a_token_is_refused(authorization: str) -> None:
    with pytest.raises(Unauthorized, match="must be: Bearer <API key>"):
        bearer_token(authorization)


def test_api_key_hash_is_a_stable_sha256_digest() -> None:
    api_key = "rdl_web_abc123"

    assert hash_api_key(api_key) == hash_api_key(api_key)
    assert len(hash_api_key(api_key)) == 32
    assert hash_api_key(api_key) != hash_api_key("rdl_web_abc124")


def test_new_api_keys_name_their_source_and_differ() -> None:
    keys = {new_api_key("web") for _ in range(20)}

    assert len(keys) == 20
    assert all(key.startswith("rdl_web_") for key in keys)
    assert all(len(key) > len("rdl_web_") + 40 for key in keys)


def test_new_webhook_secrets_differ() -> None:
    secrets = {new_webhook_secret() for _ in range(20)}

    assert len(secrets) == 20
    assert all(secret.startswith("whsec_") for secret in secrets)


@pytest.mark.parametrize("timestamp", ["\u00b2", "1" * 5000])
def test_timestamp_that_int_refuses_is_unauthorized(timestamp: str) -> None:
    """Regression: "²" passes isdigit() but not int(), and a 5 000-digit
    number exceeds int()'s limit: both were a 500 on an unauthenticated route."""
    with pytest.raises(Unauthorized):
        verify(f"t={timestamp},v1=abc")
