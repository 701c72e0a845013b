"""Secrets at rest and API keys.

Channel secrets (Slack bot tokens, Shopify tokens, Instagram page tokens) are stored encrypted with
Fernet (AES-128-CBC + HMAC-SHA256) under the key from settings. API keys are stored only as a hash
and shown once. Every comparison of a secret is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from parley.errors import ConfigurationError
from parley.files import create_private_file
from parley.settings import Settings

API_KEY_PREFIX = "pk_"


class Expired(ConfigurationError):
    """A secret sealed with a limited life (`SecretBox.decrypt`'s ``max_age``) that is past it."""


class SecretBox:
    """Encrypts and decrypts small secrets. `repr` never shows the key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "PARLEY_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes); "
                "make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from exc

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def encrypt_bytes(self, plaintext: bytes) -> bytes:
        """Seal bytes (a pass-through upload waiting for its worker: `passthrough.store`)."""
        return self._fernet.encrypt(plaintext)

    def decrypt_bytes(self, token: bytes, *, max_age: int | None = None) -> bytes:
        """The sealed bytes; `Expired` past ``max_age`` seconds, `ConfigurationError` when not ours."""
        try:
            return self._fernet.decrypt(token, ttl=max_age) if max_age is not None else self._fernet.decrypt(token)
        except InvalidToken:
            if max_age is not None:
                self.decrypt_bytes(token)  # not ours at all: that error; else it is only too old
                raise Expired(f"the data was sealed more than {max_age} s ago") from None
            raise ConfigurationError("sealed data cannot be opened with the configured PARLEY_SECRET_KEY "
                                     "(was the key changed?)") from None

    def decrypt(self, token: str, *, max_age: int | None = None) -> str:
        """The secret; with ``max_age`` (seconds), only if it was encrypted at most that long ago
        (`Expired` otherwise: a short-lived secret, such as a PDF's password in a job message)."""
        if max_age is not None:
            try:
                return self._fernet.decrypt(token.encode(), ttl=max_age).decode()
            except InvalidToken:
                self.decrypt(token)  # not ours at all: that error; else it is only too old
                raise Expired(f"the secret was sealed more than {max_age} s ago") from None
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ConfigurationError(
                "a stored secret cannot be decrypted with the configured PARLEY_SECRET_KEY (was the key changed?)"
            ) from exc


def load_secret_box(settings: Settings) -> SecretBox:
    """The configured key, or for the embedded default one generated once under data_dir (mode 0600)."""
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key.get_secret_value().encode())
    path = Path(settings.data_dir) / "secret.key"
    # Written whole, then linked: two processes starting at once never write two keys or read half of one.
    create_private_file(path, Fernet.generate_key())
    return SecretBox(path.read_bytes().strip())


SERVICE_TOKEN_FILE = "service.token"


def load_service_token(settings: Settings) -> str:
    """The credential between the gateway and the retrieval service: ``PARLEY_SERVICE_TOKEN``, or for
    the embedded default one generated once into <data_dir>/service.token (mode 0600), which every
    process sharing the data directory reads (`parley up`)."""
    if settings.service_token is not None:
        token = settings.service_token.get_secret_value().strip()
        if not token:
            raise ConfigurationError("PARLEY_SERVICE_TOKEN is empty; set it to a long random string or unset it")
        return token
    path = Path(settings.data_dir) / SERVICE_TOKEN_FILE
    create_private_file(path, secrets.token_urlsafe(32).encode())
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigurationError(f"{path} is empty; delete it (a new one is generated) or set PARLEY_SERVICE_TOKEN")
    return token


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # API keys carry 256 bits of entropy, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def text_bytes(value: str | bytes) -> bytes:
    """The bytes of any text a request carried, never raising: a lone surrogate (what aiohttp makes
    of an invalid UTF-8 byte in a header) is kept as-is instead of failing ``str.encode``."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def constant_time_equals(expected: str | bytes, given: str | bytes | None) -> bool:
    """Constant-time equality of a secret or MAC and a received one, total on any str or bytes
    (``hmac.compare_digest`` raises TypeError on non-ASCII str); a missing value is unequal."""
    if given is None:
        return False
    return hmac.compare_digest(text_bytes(expected), text_bytes(given))
