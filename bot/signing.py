"""Short signed tokens: the Slack install link (which tenant) and the OAuth ``state`` (tenant + nonce).

``<base64url(json)>.<base64url(HMAC-SHA256(key, purpose + "." + payload))>``, URL-safe without
padding. The key is derived from the platform's secret key (``PARLEY_SECRET_KEY`` or the generated
``<data_dir>/secret.key``) with a domain label, so it is never the Fernet key itself. Each token
names its purpose, so an install link can never be replayed as an OAuth state or vice versa.

Every check here is total: whatever text a stranger puts in a header, cookie or query (non-ASCII,
aiohttp's stand-ins for invalid UTF-8, empty, huge) it answers "no" (`Forbidden`, ``False``) and
never raises anything else, so a hostile request is a 4xx and one log line, not a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parley.crypto import load_secret_box
from parley.crypto import constant_time_equals
from parley.errors import Forbidden
from parley.settings import Settings

#: Longer than any token we sign; anything longer is refused before any work is done on it.
MAX_TOKEN_CHARS = 4096


def signing_key(settings: Settings) -> bytes:
    """The gateway's HMAC key, derived from the same secret that encrypts channel secrets."""
    load_secret_box(settings)  # validates the configured key, or creates <data_dir>/secret.key once
    if settings.secret_key is not None:
        material = settings.secret_key.get_secret_value().encode()
    else:
        material = (Path(settings.data_dir) / "secret.key").read_bytes().strip()
    return hmac.new(material, b"parley/gateway-signing/v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def __repr__(self) -> str:
        return "Signer(<key hidden>)"

    def _mac(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}.{payload}".encode(), hashlib.sha256).digest())

    def sign(self, purpose: str, data: dict[str, Any], *, ttl: float) -> str:
        payload = _b64(json.dumps({**data, "exp": int(self._clock() + ttl)}, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(purpose, payload)}"

    def verify(self, purpose: str, token: str | None) -> dict[str, Any]:
        """The signed data, or `Forbidden` for a missing, forged, malformed or expired token."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not token.isascii() \
                or token.count(".") != 1:
            raise Forbidden("missing or malformed signed token")
        payload, mac = token.split(".")
        if not constant_time_equals(self._mac(purpose, payload), mac):
            raise Forbidden("invalid signature")
        try:
            data = json.loads(_unb64(payload))
            expires = int(data.get("exp", 0)) if isinstance(data, dict) else 0
        except (ValueError, TypeError) as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise Forbidden("malformed signed token") from exc
        if expires < self._clock():
            raise Forbidden("this link has expired; ask for a new one")
        return data
