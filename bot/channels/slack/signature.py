"""Slack's v0 request signature, checked on the raw bytes, total on whatever a stranger sends.

    basestring = "v0:" + X-Slack-Request-Timestamp + ":" + raw body
    X-Slack-Signature = "v0=" + hex(HMAC-SHA256(signing secret, basestring))

refused when the timestamp is more than 5 minutes from the gateway's clock. This is the check of
``slack_sdk.signature.SignatureVerifier`` made total: that one calls ``int()`` on the timestamp
(``"²"`` passes ``str.isdigit()`` and fails ``int()``), decodes the body as UTF-8 and compares str
digests (``hmac.compare_digest`` raises on non-ASCII), so a hostile header was a 500 and a
traceback. Here every input gives ``True`` or ``False``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.crypto import constant_time_equals

#: Slack's replay window, in seconds.
MAX_SKEW = 300
#: Unix seconds have 10 digits until the year 2286; a longer "timestamp" is not one.
_MAX_TIMESTAMP_DIGITS = 12


@dataclass(frozen=True)
class RequestSignature:
    secret: str = field(repr=False)
    clock: Callable[[], float]

    def valid(self, body: bytes, timestamp: str | None, signature: str | None) -> bool:
        if not self.secret or not timestamp or not signature:
            return False
        # ASCII digits only: str.isdigit() alone accepts "²" and other digits int() refuses
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _MAX_TIMESTAMP_DIGITS):
            return False
        if abs(self.clock() - int(timestamp)) > MAX_SKEW:
            return False
        basestring = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac.new(self.secret.encode(), basestring, hashlib.sha256).hexdigest()
        return constant_time_equals(expected, signature)
