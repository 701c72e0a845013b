"""Signing outbound webhooks the Standard Webhooks way (https://www.standardwebhooks.com).

Every delivery carries three headers:

* ``webhook-id``: the message id (``msg_...``), the same on every retry of one delivery: the
  receiver's idempotency key;
* ``webhook-timestamp``: seconds since the epoch when this attempt was signed (fresh per attempt);
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``f"{id}.{timestamp}."`` + the raw body,
  keyed with the base64-decoded part of the endpoint's secret after ``whsec_``. While a rotated
  secret's overlap lasts, one signature per secret, space-separated; a receiver accepts the
  delivery when any of them matches a secret it knows.

:func:`verify` is what a receiver does (our tests use it, the README shows the same steps).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping

from parley.crypto import constant_time_equals
from parley.errors import InvalidInput

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
#: Seconds a delivery's timestamp may differ from the receiver's clock (replay protection).
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(InvalidInput):
    """A delivery whose headers are missing, stale or whose signature matches none of the secrets."""

    code = "webhook_verification_failed"


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("a webhook secret is 'whsec_' followed by base64") from exc


def _digest(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{int(timestamp)}.".encode() + body
    mac = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one secret: ``v1,<base64 HMAC-SHA256>``."""
    return f"{SIGNATURE_VERSION},{_digest(secret, msg_id, timestamp, body)}"


def sign_all(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret, space-separated (the current secret first)."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def headers_for(secrets: Iterable[str], msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt of a delivery."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_SIGNATURE: sign_all(secrets, msg_id, ts, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify(secrets: str | Iterable[str], headers: Mapping[str, str], body: bytes, *,
           tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> None:
    """Check a delivery as a receiver would; raises :class:`WebhookVerificationError` when the
    headers are missing, the timestamp is further than ``tolerance`` seconds from ``now``, or no
    ``v1`` signature matches any of ``secrets``."""
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    msg_id = _header(headers, HEADER_ID)
    stamp = _header(headers, HEADER_TIMESTAMP)
    signature = _header(headers, HEADER_SIGNATURE)
    if not msg_id or not stamp or not signature:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a whole number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance} s from now")
    given = [part.split(",", 1) for part in signature.split()]
    candidates = [value for version, *rest in given if version == SIGNATURE_VERSION for value in rest]
    for secret in secret_list:
        expected = _digest(secret, msg_id, timestamp, body)
        if any(constant_time_equals(expected, value) for value in candidates):
            return
    raise WebhookVerificationError("no webhook-signature matches the secret")
