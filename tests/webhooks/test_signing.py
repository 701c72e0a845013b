"""Standard Webhooks signatures: the published vector, an independent computation, several secrets,
and what a receiver's `verify` refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from parley.webhook_signing import (
    WebhookVerificationError,
    headers_for,
    new_secret,
    sign,
    sign_all,
    verify,
)

# The Standard Webhooks reference libraries' test vector (svix's `testSignFunctionWorks`, and the spec).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_vector_is_reproduced() -> None:
    # Given the spec's secret, id, timestamp and body / When signed / Then the published signature
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_a_signature_is_hmac_sha256_of_id_timestamp_body_keyed_by_the_decoded_secret() -> None:
    # Given a fresh secret and a body
    secret = new_secret()
    body = b'{"type":"document.indexed","data":{"document_id":"d1"}}'
    # When signed here and, independently, from the spec's definition
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, b"msg_1.1700000000." + body, hashlib.sha256).digest()).decode()
    # Then they are the same
    assert sign(secret, "msg_1", 1700000000, body) == f"v1,{expected}"
    assert secret.startswith("whsec_") and len(key) == 24


def test_several_secrets_give_space_separated_signatures_and_either_verifies() -> None:
    # Given two secrets (a rotation's overlap)
    new, old = new_secret(), new_secret()
    body = b"{}"
    headers = headers_for([new, old], "msg_2", body, timestamp=1700000000)
    # Then the header carries both signatures, the current one first
    assert headers["webhook-signature"] == sign_all([new, old], "msg_2", 1700000000, body)
    assert headers["webhook-signature"].split(" ") == [sign(new, "msg_2", 1700000000, body), sign(old, "msg_2", 1700000000, body)]
    # And a receiver knowing either secret accepts it; one knowing neither does not
    verify(new, headers, body, now=1700000000)
    verify([old], headers, body, now=1700000010)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(new_secret(), headers, body, now=1700000000)


def test_verify_refuses_a_tampered_body_a_stale_timestamp_and_missing_headers() -> None:
    secret = new_secret()
    headers = headers_for([secret], "msg_3", b'{"a":1}', timestamp=1700000000)
    verify(secret, headers, b'{"a":1}', now=1700000100)
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify(secret, headers, b'{"a":2}', now=1700000000)
    with pytest.raises(WebhookVerificationError, match="more than 300 s"):
        verify(secret, headers, b'{"a":1}', now=1700000000 + 301)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(secret, {"webhook-id": "msg_3"}, b'{"a":1}', now=1700000000)
    with pytest.raises(WebhookVerificationError, match="whole number"):
        verify(secret, {**headers, "webhook-timestamp": "soon"}, b'{"a":1}', now=1700000000)
    # Headers are matched case-insensitively, as HTTP headers are
    verify(secret, {k.upper(): v for k, v in headers.items()}, b'{"a":1}', now=1700000000)
    # The vector verifies with the receiver's function too
    verify(VECTOR_SECRET, {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS),
                           "webhook-signature": f"v1,bm9wZQ== {VECTOR_SIGNATURE}"}, VECTOR_BODY, now=VECTOR_TS)


def test_stage_event_refuses_unknown_types_and_content_bearing_results() -> None:
    from parley.bus.contracts import stage_event

    # An unknown type, and process.completed (its body is document content: never stored), are refused
    # before anything is staged (no session is even touched)
    with pytest.raises(ValueError, match="unknown event type 'document.deleted'"):
        stage_event(None, tenant_id="t", event_type="document.deleted", data={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must never be stored"):
        stage_event(None, tenant_id="t", event_type="process.completed", data={})  # type: ignore[arg-type]
