from __future__ import annotations

from pathlib import Path

import pytest

from parley.settings import Settings, describe_settings


def test_embedded_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("PARLEY_") or key.startswith("OPENAI_"):
            monkeypatch.delenv(key)
    s = Settings()
    checkout = Path(__file__).resolve().parents[2]  # the data directory is the checkout's var/, whatever the cwd
    assert s.effective_database_url == f"sqlite+aiosqlite:///{checkout}/var/parley.db"
    assert s.is_sqlite
    assert s.effective_blob_dir == checkout / "var" / "blobs"
    assert s.vector_backend == "embedded" and s.embedding_provider == "local"
    assert s.openai_api_key is None


def test_environment_switches_to_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_DATABASE_URL", "postgresql://u@db/parley")
    s = Settings()
    # a bare postgresql:// would pick psycopg in SQLAlchemy 2.1; we ship asyncpg
    assert s.effective_database_url == "postgresql+asyncpg://u@db/parley"
    assert not s.is_sqlite


def test_openai_key_from_its_usual_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s = Settings()
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(s)


def test_every_setting_is_documented() -> None:
    rows = describe_settings()
    assert {r[0] for r in rows} >= {"PARLEY_DATABASE_URL", "PARLEY_AMQP_URL", "PARLEY_OPENAI_API_KEY / OPENAI_API_KEY"}
    assert all(r[2] for r in rows), [r[0] for r in rows if not r[2]]


def test_shown_values_never_hold_a_credential() -> None:
    from pydantic import SecretStr

    from parley.settings import mask_url, shown_value

    # URLs keep where they point and lose their passwords, however they are written
    assert mask_url("postgresql+asyncpg://parley:s3cret@db:5432/parley") == "postgresql+asyncpg://parley:***@db:5432/parley"
    assert mask_url("amqp://u:p@ss@[::1]:5672/vh") == "amqp://u:***@[::1]:5672/vh"
    assert mask_url("postgresql://u@db/p?sslmode=require&password=s3cret") == "postgresql://u@db/p?sslmode=require&password=***"
    assert mask_url("http://weaviate:8080") == "http://weaviate:8080" and mask_url("var") == "var"
    # Credentials by type or by name are only said to be set; everything else is shown as it is
    assert shown_value("service_token", SecretStr("abc")) == shown_value("instagram_verify_token", "abc") == "(set)"
    assert shown_value("instagram_app_secrets", "a,b") == "(set)" and shown_value("slack_signing_secret", None) == ""
    assert shown_value("retrieval_context_token_budget", 1200) == "1200"
    # And the settings' own repr hides the service token
    assert "abc-token" not in repr(Settings(service_token="abc-token"))
