"""`parley retention …` and `parley erase`, as a person runs them (the real command, in-process
through click's runner, on a migrated SQLite database in the embedded defaults' layout)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from parley.blobs import BlobStore
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from parley.vectors import EmbeddedVectorIndex
from tenants import service as tenants
from tests.bot.privacy_seed import files_containing, rows_containing, seed_customer

MARK = "quokkalamp5150"


@pytest.fixture
def var(tmp_path: Path, sqlite_template: Path) -> Path:
    data = tmp_path / "var"
    data.mkdir()
    shutil.copy(sqlite_template, data / "parley.db")
    return data


def _run(var: Path, *args: str) -> tuple[int, str]:
    """Exit code, and stdout (with --json: the JSON alone) or, on an error, what was printed."""
    result = CliRunner().invoke(main, list(args), env={"PARLEY_DATA_DIR": str(var), "PARLEY_ENV_FILE": "none",
                                                       "PARLEY_DATABASE_URL": "", "COLUMNS": "200"})
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


async def _seed(var: Path) -> str:
    settings = Settings(data_dir=var, _env_file=None)
    engine = create_engine(settings, "tests")
    sessions = create_sessionmaker(engine)
    try:
        async with unit_of_work(sessions, admin=True) as session:
            tenant_id = (await tenants.create_tenant(session, name="acme")).id
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            await seed_customer(session, BlobStore(settings.effective_blob_dir), tenant_id=tenant_id, user="UCLI000001",
                                marker=MARK)
        return tenant_id
    finally:
        await engine.dispose()


async def _left(var: Path) -> dict[str, int]:
    engine = create_engine(Settings(data_dir=var, _env_file=None), "tests")
    try:
        async with unit_of_work(create_sessionmaker(engine), admin=True) as session:
            return await rows_containing(session, MARK)
    finally:
        await engine.dispose()


def test_retention_is_set_shown_and_run_from_the_command_line(var: Path) -> None:
    asyncio.run(_seed(var))
    # When the operator sets two of the tenant's settings
    code, out = _run(var, "retention", "set", "--tenant", "acme", "--transcript-days", "90", "--raw-files", "delete")
    assert code == 0, out
    # Then show says each value and where it comes from
    code, out = _run(var, "--json", "retention", "show", "--tenant", "acme")
    shown = json.loads(out)
    assert (shown["raw_files"], shown["transcript_days"], shown["dead_letter_days"]) == ("delete", 90, 30)
    assert shown["source"] == {"raw_files": "tenant", "transcript_days": "tenant", "dead_letter_days": "default"}
    # And a bad value is one line naming the setting, and changes nothing
    code, out = _run(var, "retention", "set", "--tenant", "acme", "--dead-letter-days", "0")
    assert code == 1 and "dead-letter retention must be between 1" in out
    code, out = _run(var, "retention", "set", "--tenant", "acme")
    assert code == 1 and "give at least one of" in out
    # When the sweep runs now, Then it says what it removed: the indexed file the tenant no longer keeps
    code, out = _run(var, "--json", "retention", "run", "--tenant", "acme")
    assert code == 0 and json.loads(out)["totals"]["files"] == 1
    code, out = _run(var, "retention", "run")
    assert code == 0 and "nothing to remove" in out


async def _snapshot(var: Path, tenant_id: str) -> None:
    """The vector snapshot files the retrieval service writes (they hold the chunks' text)."""
    engine = create_engine(Settings(data_dir=var, _env_file=None), "tests")
    reader = EmbeddedVectorIndex(create_sessionmaker(engine), role="reader", data_dir=var / "vectors")
    try:
        await reader.warm([tenant_id])
        await reader.snapshot()
    finally:
        await reader.aclose()
        await engine.dispose()


def test_erase_previews_then_removes_and_reports_by_kind(var: Path) -> None:
    asyncio.run(_snapshot(var, asyncio.run(_seed(var))))
    assert files_containing(var / "vectors", MARK)
    # A customer named without their channel is refused with the form to use
    code, out = _run(var, "erase", "--tenant", "acme", "--customer", "UCLI000001")
    assert code == 1 and "<channel>:<id>" in out
    # When the operator previews the erasure
    code, out = _run(var, "erase", "--tenant", "acme", "--customer", "slack:UCLI000001", "--dry-run")
    assert code == 0 and "would remove" in out and "messages" in out
    assert "inbound_message" in asyncio.run(_left(var))
    # When they erase
    code, out = _run(var, "--json", "erase", "--tenant", "acme", "--customer", "slack:UCLI000001")
    assert code == 0, out
    report = json.loads(out)
    assert report["counts"]["messages"] == 1 and report["counts"]["documents"] == 1 and report["counts"]["vectors"] == 1
    # Then nothing of the customer is in any table or file
    assert asyncio.run(_left(var)) == {}
    assert files_containing(var / "blobs", MARK) == [] and files_containing(var / "vectors", MARK) == []
