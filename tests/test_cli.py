"""The admin CLI, run as a person runs it: the `parley` console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


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
