"""The README stays true: its test command is what CI runs, and its settings table is generated."""

from __future__ import annotations

from pathlib import Path

from cli.ops import settings_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/run.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec bash scripts/test.sh" in ci


def test_settings_table_matches_the_settings_class() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- settings:begin -->", 1)[1].split("<!-- settings:end -->", 1)[0].strip()
    assert block == settings_markdown(), "README settings table is stale: regenerate it with `parley config --markdown`"
