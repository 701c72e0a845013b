"""One data directory and one .env file, whatever the current directory: where the default data
lives, which .env is read and what wins over it, and errors that say where the CLI looked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parley.settings import Settings, SettingsError, default_data_dir, env_file
from tests.test_cli import parley

ROOT = Path(__file__).resolve().parents[1]


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without any PARLEY_ variable (so the defaults show), plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}, "COLUMNS": "200", **extra}


def config(cwd: Path, env: dict[str, str]) -> dict[str, dict[str, str]]:
    result = subprocess.run([sys.executable, "-m", "cli", "--json", "config"], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return {row["variable"]: row for row in json.loads(result.stdout)}


# --- the default data directory ---------------------------------------------------------------


def test_default_data_dir_is_the_checkouts_var_from_any_directory(tmp_path: Path) -> None:
    # Given no PARLEY_DATA_DIR, a command run from an unrelated directory
    (tmp_path / "elsewhere").mkdir()
    rows = config(tmp_path / "elsewhere", bare_env())
    # Then its data directory is the checkout's var/, not ./var of where it runs
    assert rows["PARLEY_DATA_DIR"]["value"] == str(ROOT / "var")
    assert rows["PARLEY_DATA_DIR"]["from"] == "default"
    assert not (tmp_path / "elsewhere" / "var").exists()


def test_installed_copy_keeps_its_data_per_user() -> None:
    assert default_data_dir({"XDG_DATA_HOME": "/srv/xdg", "HOME": "/home/ann"}, root=None) == Path("/srv/xdg/parley")
    assert default_data_dir({"HOME": "/home/ann"}, root=None) == Path("/home/ann/.local/share/parley")
    assert default_data_dir({"XDG_DATA_HOME": "/srv/xdg"}, root=Path("/src/parley")) == Path("/src/parley/var")


# --- the .env file ------------------------------------------------------------------------------


def test_env_file_rules(tmp_path: Path) -> None:
    checkout, cwd = tmp_path / "checkout", tmp_path / "cwd"
    checkout.mkdir(), cwd.mkdir()
    (checkout / ".env").write_text("PARLEY_LOG_LEVEL=DEBUG\n")
    (cwd / ".env").write_text("PARLEY_LOG_LEVEL=ERROR\n")
    named = tmp_path / "prod.env"
    named.write_text("PARLEY_LOG_LEVEL=WARNING\n")
    # From a checkout its .env, wherever the command runs; an installed copy reads the current directory's
    assert env_file({}, root=checkout, cwd=cwd) == checkout / ".env"
    assert env_file({}, root=None, cwd=cwd) == cwd / ".env"
    # PARLEY_ENV_FILE names another, or none at all
    assert env_file({"PARLEY_ENV_FILE": str(named)}, root=checkout) == named
    assert env_file({"PARLEY_ENV_FILE": "none"}, root=checkout) is None
    assert env_file({"PARLEY_ENV_FILE": ""}, root=checkout) is None
    # A test run never reads the developer's file (pytest exports PYTEST_VERSION to what it starts)
    assert env_file({"PYTEST_VERSION": "9"}, root=checkout) is None
    assert env_file({"PYTEST_VERSION": "9", "PARLEY_ENV_FILE": str(named)}, root=checkout) == named
    # No file there: none
    assert env_file({}, root=tmp_path / "empty") is None
    # A named file that is not there is an error that says how to read none
    with pytest.raises(SettingsError, match="PARLEY_ENV_FILE=none"):
        env_file({"PARLEY_ENV_FILE": str(tmp_path / "missing.env")})


def test_real_environment_wins_over_the_env_file_which_wins_over_defaults(tmp_path: Path) -> None:
    # Given a .env with three settings, one of which the real environment also sets
    dotenv = tmp_path / "parley.env"
    dotenv.write_text("PARLEY_GATEWAY_PORT=9999\nPARLEY_LOG_LEVEL=DEBUG\nOPENAI_API_KEY=sk-from-dotenv\nUNRELATED=1\n")
    env = bare_env(PARLEY_ENV_FILE=str(dotenv), PARLEY_LOG_LEVEL="ERROR")
    # When settings are read, in this process and by the CLI
    settings = Settings(_env_file=dotenv)
    rows = config(tmp_path, env)
    # Then each value comes from the first source that has it, and `parley config` says which
    assert (settings.gateway_port, settings.retrieval_port) == (9999, 8081)
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == "sk-from-dotenv"
    assert (rows["PARLEY_GATEWAY_PORT"]["value"], rows["PARLEY_GATEWAY_PORT"]["from"]) == ("9999", ".env")
    assert (rows["PARLEY_LOG_LEVEL"]["value"], rows["PARLEY_LOG_LEVEL"]["from"]) == ("ERROR", "environment")
    assert (rows["PARLEY_RETRIEVAL_PORT"]["value"], rows["PARLEY_RETRIEVAL_PORT"]["from"]) == ("8081", "default")
    assert rows["PARLEY_OPENAI_API_KEY / OPENAI_API_KEY"] | {"meaning": ""} == {
        "variable": "PARLEY_OPENAI_API_KEY / OPENAI_API_KEY", "value": "(set)", "from": ".env", "meaning": ""}
    table = subprocess.run([sys.executable, "-m", "cli", "config"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=60)
    # (PARLEY_LOG_LEVEL is in both: it counts where its value came from)
    assert f"1 from the environment, 2 from {dotenv}" in table.stdout, table.stdout[-600:]


def test_bad_setting_or_missing_env_file_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    bad = parley(tmp_path, "config", env={"PARLEY_GATEWAY_PORT": "eighty"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "setting PARLEY_GATEWAY_PORT" in bad.stderr and "'eighty'" in bad.stderr
    missing = parley(tmp_path, "config", env={"PARLEY_ENV_FILE": str(tmp_path / "nope.env")})
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "PARLEY_ENV_FILE names" in missing.stderr


# --- errors that say where the CLI looked -------------------------------------------------------


def test_no_schema_and_no_tenant_errors_say_which_data_directory_and_database(tmp_path: Path) -> None:
    data = tmp_path / "var"
    # Given a data directory with no database yet
    early = parley(tmp_path, "tenants", "list")
    # Then the error names the data directory and the database, and creates neither
    assert early.returncode == 1 and "parley migrate" in early.stderr
    flat = " ".join(early.stderr.split())
    assert f"data directory {data}" in flat and f"sqlite+aiosqlite:///{data}/parley.db" in flat
    assert not (data / "parley.db").exists()
    # Given a migrated one, an unknown tenant says where it was looked for
    assert parley(tmp_path, "migrate").returncode == 0
    unknown = parley(tmp_path, "keys", "create", "--tenant", "nobody")
    flat = " ".join(unknown.stderr.split())
    assert unknown.returncode == 1 and "no such tenant" in flat and f"data directory {data}" in flat


@pytest.mark.postgres
def test_database_url_in_errors_has_no_password(tmp_path: Path) -> None:
    import asyncio

    from tests.support import services

    # Given an empty PostgreSQL database, named by a URL with a password (trust auth ignores it)
    name = asyncio.run(services.create_pg_database())
    try:
        url = f"postgresql+asyncpg://{services.PG_USER}:hunter2-secret@{services.PG_HOST}:{services.PG_PORT}/{name}"
        result = parley(tmp_path, "tenants", "list", env={"PARLEY_DATABASE_URL": url})
    finally:
        asyncio.run(services.drop_pg_database(name))
    # Then the "no schema" error names the database without its password
    flat = " ".join(result.stderr.split())
    assert result.returncode == 1 and "no schema yet" in flat and "Traceback" not in flat
    assert "hunter2-secret" not in flat and f"{services.PG_USER}:***@{services.PG_HOST}" in flat
