"""`parley analytics`, run as a person runs it, on a data directory seeded with a known month."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
from pathlib import Path

import pytest

from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bot.analytics.schemas import RESOLUTION_DEFINITION
from bot.analytics.service import CSV_COLUMNS
from parley.db import create_sessionmaker, utcnow
from tests.bot.analytics_seed import EXPECTED, seed
from tests.test_cli import parley


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    """A data directory (migrated: a copy of the session's template database) with the known month.
    The command only reads it, so the module's tests share it."""
    home = tmp_path_factory.mktemp("analytics-cli")
    (home / "var").mkdir()
    shutil.copy(sqlite_template, home / "var" / "parley.db")

    async def run() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{home / 'var' / 'parley.db'}", poolclass=NullPool)
        await seed(create_sessionmaker(engine), now=utcnow())
        await engine.dispose()

    asyncio.run(run())
    return home


def test_analytics_prints_the_figures_as_json_text_and_csv(seeded: Path) -> None:
    # Given a data directory with acme's known month and another tenant's traffic
    tmp_path = seeded
    # When the owner asks for the JSON report of the default window (30 days)
    shown = parley(tmp_path, "analytics", "--tenant", "acme", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    # Then it holds exactly the seeded figures, the definitions with them
    for key, value in EXPECTED.items():
        got = report[key] if not isinstance(value, dict) else {k: report[key][k] for k in value}
        assert got == value, key
    assert report["resolution"]["definition"] == RESOLUTION_DEFINITION and "reply_latency" in report["definitions"]
    assert [g["count"] for g in report["todo"]] == [3, 1, 1] and "questions" not in report["todo"][0]

    # When they ask for the text report and the CSV
    out_file = tmp_path / "todo.csv"  # (written beside the data directory)
    text = parley(tmp_path, "analytics", "--tenant", "acme", "--csv", str(out_file))
    assert text.returncode == 0, text.stderr
    flat = " ".join(text.stdout.split())
    # Then the text names the figures, the resolution-rate definition and the to-do list, biggest first
    assert "resolution rate" in flat and "37.5 % (3 of 8 conversations with a question)" in flat
    assert " ".join(RESOLUTION_DEFINITION.split()) in flat
    assert "median 1.25 s, p95 4.00 s over 8 replies" in flat
    assert "1. where's my order? ×3 (3 not found;" in flat and "also: order status please | where is my order" in flat
    assert flat.index("where's my order? ×3") < flat.index("How long does shipping take? ×1")
    assert "wrote " + str(out_file) + ": 5 to-do questions, one a row" in flat
    # And the CSV has one row per to-do question in the documented columns
    with out_file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 5
    assert {r["why"] for r in rows} == {"refused", "thumbs_down"}


def test_analytics_explains_a_bad_window_an_unknown_tenant_and_an_empty_one(seeded: Path) -> None:
    tmp_path = seeded
    # When --since is neither a duration nor a date, or the tenant does not exist
    bad = parley(tmp_path, "analytics", "--tenant", "acme", "--since", "last tuesday")
    unknown = parley(tmp_path, "analytics", "--tenant", "nobody")
    # Then each is one line saying what is wrong, exit 1
    assert bad.returncode == 1 and "neither a duration nor a date" in bad.stderr and "7d" in bad.stderr
    assert unknown.returncode == 1 and "no such tenant" in unknown.stderr
    assert "Traceback" not in bad.stderr + unknown.stderr
    # And a window without traffic says so instead of printing zeros
    quiet = parley(tmp_path, "analytics", "--tenant", "acme", "--since", "30m")
    assert quiet.returncode == 0 and "No traffic in this window yet" in quiet.stdout
