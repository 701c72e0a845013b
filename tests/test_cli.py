"""The admin CLI, run as a person runs it: the `parley` console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import free_port


def parley(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    base.update({"PARLEY_DATA_DIR": str(tmp_path / "var"), "COLUMNS": "200"}, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=base, cwd=tmp_path, timeout=120
    )


def test_help_explains_every_command(tmp_path: Path) -> None:
    top = parley(tmp_path, "--help")
    assert top.returncode == 0
    for command in ("migrate", "tenants", "keys", "up"):
        assert command in top.stdout
        sub = parley(tmp_path, command, "--help")
        assert sub.returncode == 0 and "Usage:" in sub.stdout


def test_tenant_lifecycle_on_embedded_default(tmp_path: Path) -> None:
    # Given a fresh data directory, commands before `migrate` say what to do
    early = parley(tmp_path, "tenants", "list")
    assert early.returncode == 1 and "parley migrate" in early.stderr
    # When the admin migrates and creates a tenant
    assert parley(tmp_path, "migrate").returncode == 0
    created = parley(tmp_path, "tenants", "create", "acme")
    assert created.returncode == 0, created.stderr
    # Then it is listed, as a table and as JSON
    listed = parley(tmp_path, "tenants", "list")
    assert "acme" in listed.stdout
    rows = json.loads(parley(tmp_path, "--json", "tenants", "list").stdout)
    assert [r["name"] for r in rows] == ["acme"]
    # And a duplicate or a bad name is a clear error that writes nothing
    dup = parley(tmp_path, "tenants", "create", "acme")
    assert dup.returncode == 1 and "already exists" in dup.stderr and "Traceback" not in dup.stderr
    bad = parley(tmp_path, "tenants", "create", "Bad Name")
    assert bad.returncode == 1 and "invalid tenant name" in bad.stderr
    assert len(json.loads(parley(tmp_path, "--json", "tenants", "list").stdout)) == 1
    assert (tmp_path / "var" / "parley.db").exists()


def test_api_key_is_shown_once_and_stored_hashed(tmp_path: Path) -> None:
    parley(tmp_path, "migrate")
    parley(tmp_path, "tenants", "create", "acme")
    made = json.loads(parley(tmp_path, "--json", "keys", "create", "--tenant", "acme", "--name", "ops").stdout)
    assert made["key"].startswith("pk_")
    listed = parley(tmp_path, "--json", "keys", "list", "--tenant", "acme")
    assert made["key"] not in listed.stdout
    assert json.loads(listed.stdout)[0]["name"] == "ops"
    shown = parley(tmp_path, "tenants", "show", "acme")
    assert shown.returncode == 0 and made["key"] not in shown.stdout
    unknown = parley(tmp_path, "keys", "create", "--tenant", "nobody")
    assert unknown.returncode == 1 and "no such tenant" in unknown.stderr


@pytest.mark.postgres
def test_cli_against_postgres(tmp_path: Path) -> None:
    import asyncio

    from tests.support import services

    name = asyncio.run(services.create_pg_database())
    try:
        env = {"PARLEY_DATABASE_URL": services.pg_url(name)}
        assert parley(tmp_path, "migrate", env=env).returncode == 0
        assert parley(tmp_path, "tenants", "create", "acme", env=env).returncode == 0
        assert "acme" in parley(tmp_path, "tenants", "list", env=env).stdout
    finally:
        asyncio.run(services.drop_pg_database(name))


def test_config_shows_no_credential(tmp_path: Path) -> None:
    # Given credentials in every form a setting holds them: URLs with passwords, tokens, secrets
    secrets = {"db": "pg-pass-5up3r", "amqp": "rabbit-pass-h0p", "verify": "meta-verify-t0ken",
               "service": "svc-token-0123456789abcdef", "slack": "slack-signing-s3cret", "openai": "sk-live-key-42"}
    env = {"PARLEY_DATABASE_URL": f"postgresql+asyncpg://parley:{secrets['db']}@db.internal:5432/parley",
           "PARLEY_AMQP_URL": f"amqp://parley:{secrets['amqp']}@rabbitmq:5672/",
           "PARLEY_INSTAGRAM_VERIFY_TOKEN": secrets["verify"], "PARLEY_SERVICE_TOKEN": secrets["service"],
           "PARLEY_SLACK_SIGNING_SECRET": secrets["slack"], "OPENAI_API_KEY": secrets["openai"]}
    # When the operator prints the configuration, as JSON and as a table
    as_json = parley(tmp_path, "--json", "config", env=env)
    as_table = parley(tmp_path, "config", env=env)
    # Then no secret is in either, and what is set still says so
    assert as_json.returncode == 0 and as_table.returncode == 0, as_json.stderr + as_table.stderr
    for secret in secrets.values():
        assert secret not in as_json.stdout and secret not in as_table.stdout, secret
    values = {row["variable"]: row["value"] for row in json.loads(as_json.stdout)}
    assert values["PARLEY_DATABASE_URL"] == "postgresql+asyncpg://parley:***@db.internal:5432/parley"
    assert values["PARLEY_AMQP_URL"] == "amqp://parley:***@rabbitmq:5672/"
    assert values["PARLEY_INSTAGRAM_VERIFY_TOKEN"] == values["PARLEY_SERVICE_TOKEN"] == "(set)"
    assert values["PARLEY_SLACK_SIGNING_SECRET"] == values["PARLEY_OPENAI_API_KEY / OPENAI_API_KEY"] == "(set)"
    assert values["PARLEY_RETRIEVAL_CONTEXT_TOKEN_BUDGET"] == "1200"  # a "token" setting that is no credential
    assert values["PARLEY_SHOPIFY_CLIENT_SECRET"] == ""  # unset stays empty



def test_migrate_creates_a_private_data_directory(tmp_path: Path) -> None:
    # Given no data directory yet, and the usual umask (022)
    previous = os.umask(0o022)
    try:
        # When the admin migrates (the first command of the quickstart)
        migrated = parley(tmp_path, "migrate")
    finally:
        os.umask(previous)
    # Then the directory and the database holding every DM are this user's only
    assert migrated.returncode == 0, migrated.stderr
    data = tmp_path / "var"
    assert (oct(data.stat().st_mode & 0o777), oct((data / "parley.db").stat().st_mode & 0o777)) == ("0o700", "0o600")


async def test_ask_presents_the_service_token_to_a_running_retrieval_service(tmp_path: Path) -> None:
    import asyncio

    from aiohttp.test_utils import TestServer

    from parley.embeddings.local import model_installed
    from parley.settings import Settings
    from retrieval.app import create_app

    if not model_installed("all-MiniLM-L6-v2"):
        pytest.skip("the local embedding model is not installed (scripts/bootstrap.sh)")
    # Given a tenant, and the retrieval service running on the same data directory (its generated token)
    for args in (("migrate",), ("tenants", "create", "acme")):
        assert (await asyncio.to_thread(parley, tmp_path, *args)).returncode == 0
    server = TestServer(create_app(Settings(data_dir=tmp_path / "var", log_json=False)))
    await server.start_server()
    try:
        # When the admin asks through it
        url = str(server.make_url("")).rstrip("/")
        asked = await asyncio.to_thread(parley, tmp_path, "--json", "ask", "Do you ship abroad?", "--tenant", "acme",
                                        env={"PARLEY_RETRIEVAL_URL": url})
        # And with retrieval replicas whose first is down, the next one answers (as the gateway would ask it)
        dead = f"http://127.0.0.1:{free_port()}"
        replicas = await asyncio.to_thread(parley, tmp_path, "--json", "ask", "Do you ship abroad?", "--tenant", "acme",
                                           env={"PARLEY_RETRIEVAL_URLS": f"{dead},{url}"})
        # And with none running it says which it tried, and answers in-process
        alone = await asyncio.to_thread(parley, tmp_path, "--json", "ask", "Do you ship abroad?", "--tenant", "acme",
                                        env={"PARLEY_RETRIEVAL_URLS": f"{dead},http://127.0.0.1:{free_port()}"})
    finally:
        await server.close()
    # Then the running service answered (it refuses requests without the token), not an in-process fallback
    assert asked.returncode == 0, asked.stderr
    assert "answering in-process" not in asked.stderr
    assert "answer" in json.loads(asked.stdout)
    assert replicas.returncode == 0 and "answering in-process" not in replicas.stderr, replicas.stderr
    assert json.loads(replicas.stdout)["answer"] == json.loads(asked.stdout)["answer"]
    assert alone.returncode == 0 and f"not reachable at {dead}, http://127.0.0.1:" in alone.stderr
    assert "answer" in json.loads(alone.stdout)
