from __future__ import annotations

from pathlib import Path

import pytest

from parley.settings import Settings, describe_settings


def test_embedded_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("PARLEY_") or key.startswith("OPENAI_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.effective_database_url == "sqlite+aiosqlite:///var/parley.db"
    assert s.is_sqlite
    assert s.effective_blob_dir == Path("var/blobs")
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
