"""docs/capacity.md stays true to bench/RESULTS.md.

The capacity model is arithmetic over the table of measured figures at its top. Each row of that
table must point at something real:
- each number in its value is recorded in the RESULTS.md section the row cites, or the value says
  "computed from" and names other rows of the table;
- the cited section is a heading of RESULTS.md;
- the command names a script that exists in bench/, and every flag the command passes appears in
  that script's argparse text.

Rows still waiting for the lead's figures say TODO(lead) and are only counted. Running each bench's
`--help` would take seconds per script, so the flags are checked against the source instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = ROOT / "docs" / "capacity.md"
RESULTS = ROOT / "bench" / "RESULTS.md"
TABLE_HEADING = "## Measured per-unit figures"
#: A number standing alone (not the 50 of "p50", not part of a word): 1,606 / 12.0 / 45.
NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\w])")
ROW_ID = re.compile(r"\bM\d+\b")


@dataclass(frozen=True)
class Row:
    id: str
    figure: str
    value: str
    command: str
    section: str


def measured_rows(text: str) -> list[Row]:
    """The rows of the measured table: the `| M<n> | ... |` lines under its heading."""
    start = text.index(TABLE_HEADING)
    end = text.find("\n## ", start + len(TABLE_HEADING))
    rows = []
    for line in text[start : end if end != -1 else None].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and ROW_ID.fullmatch(cells[0]):
            rows.append(Row(*cells))
    return rows


def sections(results: str) -> dict[str, str]:
    """Each RESULTS.md heading's text, up to the next heading of the same or a higher level
    (so a `##` section includes its `###` reruns)."""
    headings = [(m.start(), len(m.group(1)), m.group(2)) for m in re.finditer(r"^(#{2,4}) (.+)$", results, re.M)]
    out = {}
    for i, (pos, level, title) in enumerate(headings):
        end = next((p for p, lvl, _ in headings[i + 1 :] if lvl <= level), len(results))
        out[title] = results[pos:end]
    return out


def section_text(results: str, cited: str) -> str | None:
    found = [body for title, body in sections(results).items() if cited in title]
    return "\n".join(found) if found else None


def problems(capacity: str, results: str, bench_dir: Path) -> list[str]:
    """What is wrong with capacity.md's measured table against RESULTS.md and bench/ (empty: all good)."""
    rows = measured_rows(capacity)
    ids = {r.id for r in rows}
    wrong: list[str] = []
    if not rows:
        return [f"no measured table under {TABLE_HEADING!r}"]
    for row in rows:
        if "TODO(lead)" in row.value:
            continue
        if "computed from" in row.value:
            named = set(ROW_ID.findall(row.value.split("computed from", 1)[1]))
            if not named or not named <= ids:
                wrong.append(f"{row.id}: 'computed from' must name rows of the table, got {sorted(named) or 'none'}")
        else:
            body = section_text(results, row.section)
            if body is None:
                wrong.append(f"{row.id}: RESULTS.md has no section {row.section!r}")
            else:
                missing = [n for n in NUMBER.findall(row.value) if not re.search(rf"(?<![\d,.]){re.escape(n)}(?![\d])", body)]
                if missing:
                    wrong.append(f"{row.id}: {', '.join(missing)} not in RESULTS.md section {row.section!r}")
        if row.command.strip() in ("—", "-", ""):
            if "computed from" not in row.value:
                wrong.append(f"{row.id}: a measured figure needs its bench command")
            continue
        script = re.search(r"bench/([\w.-]+\.py)", row.command)
        if script is None:
            wrong.append(f"{row.id}: the command names no bench/ script: {row.command}")
            continue
        path = bench_dir / script.group(1)
        if not path.exists():
            wrong.append(f"{row.id}: bench/{script.group(1)} does not exist")
            continue
        source = path.read_text()
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", row.command):
            if f'"{flag}"' not in source:
                wrong.append(f"{row.id}: bench/{script.group(1)} has no {flag} option")
    return wrong


def test_every_measured_figure_is_recorded_in_results_and_every_command_exists() -> None:
    # Given the capacity model and the recorded benchmark results
    capacity, results = CAPACITY.read_text(), RESULTS.read_text()
    # When each row of the measured table is checked
    # Then nothing is wrong, and the lead's open slots are the only rows without a figure
    assert problems(capacity, results, ROOT / "bench") == []
    todo = [r.id for r in measured_rows(capacity) if "TODO(lead)" in r.value]
    assert len(measured_rows(capacity)) - len(todo) >= 15


@pytest.mark.parametrize(("value", "results", "expected"), [
    ("12.0", "## Ingestion x\n\n| 1 | 12.0 chunks/s |\n", []),
    ("12.5", "## Ingestion x\n\n| 1 | 12.0 chunks/s |\n", ["M1: 12.5 not in RESULTS.md section 'Ingestion'"]),
    ("12.0", "## Ingestion x\n\nnothing\n## Other\n12.0\n", ["M1: 12.0 not in RESULTS.md section 'Ingestion'"]),
    ("1.6, computed from M9", "## Ingestion x\n", ["M1: 'computed from' must name rows of the table, got ['M9']"]),
])
def test_the_checker_catches_a_figure_that_is_not_recorded(value: str, results: str, expected: list[str]) -> None:
    # Given a one-row table citing the Ingestion section with a real command
    command = "—" if "computed" in value else "`.venv/bin/python bench/ingest.py --docs 1000 --workers 1 2`"
    capacity = f"{TABLE_HEADING}\n\n| id | figure | value | command | section |\n|---|---|---|---|---|\n" \
               f"| M1 | chunks/s | {value} | {command} | Ingestion |\n\n## Next\n"
    # Then a figure missing from its section, or a computation from unknown rows, is reported
    assert problems(capacity, results, ROOT / "bench") == expected


def test_the_checker_catches_a_missing_script_or_flag() -> None:
    results = "## Ingestion\n12.0\n"
    row = "| M1 | chunks/s | 12.0 | `{}` | Ingestion |"
    table = f"{TABLE_HEADING}\n\n" + "\n".join([
        row.format(".venv/bin/python bench/no_such_bench.py"),
        row.format(".venv/bin/python bench/ingest.py --no-such-flag 3").replace("M1", "M2"),
    ]) + "\n"
    assert problems(table, results, ROOT / "bench") == [
        "M1: bench/no_such_bench.py does not exist", "M2: bench/ingest.py has no --no-such-flag option"]
