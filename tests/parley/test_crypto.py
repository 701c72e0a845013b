from __future__ import annotations

import stat

import pytest
from cryptography.fernet import Fernet

from parley.crypto import SecretBox, constant_time_equals, generate_api_key, hash_api_key, load_secret_box
from parley.errors import ConfigurationError
from parley.settings import Settings


def test_generated_key_is_private_and_stable(settings: Settings) -> None:
    box = load_secret_box(settings)
    token = box.encrypt("xoxb-secret")
    key_file = settings.data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # a second process loading the key reads the same one
    assert load_secret_box(settings).decrypt(token) == "xoxb-secret"
    assert "xoxb-secret" not in token
    assert "key" in repr(box) and key_file.read_text().strip() not in repr(box)


def test_wrong_key_is_a_clear_error() -> None:
    token = SecretBox(Fernet.generate_key()).encrypt("shpat_123")
    with pytest.raises(ConfigurationError, match="cannot be decrypted"):
        SecretBox(Fernet.generate_key()).decrypt(token)


def test_invalid_key_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="not a valid Fernet key"):
        load_secret_box(Settings(data_dir=settings.data_dir, secret_key="short"))


def test_api_keys_are_random_and_hashed() -> None:
    a, b = generate_api_key(), generate_api_key()
    assert a != b and a.startswith("pk_") and len(a) > 40
    assert hash_api_key(a) != a and len(hash_api_key(a)) == 64
    assert constant_time_equals(hash_api_key(a), hash_api_key(a))
    assert not constant_time_equals(hash_api_key(a), hash_api_key(b))
