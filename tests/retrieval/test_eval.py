"""`parley eval` end to end: the console command in a subprocess, over a tenant whose documents were
chunked, embedded and indexed for real, answering in process (`--local`) through the real service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.retrieval.support import add_document, create_tenant

TERMS = (
    "Kettle Shop terms of sale. Orders placed before noon leave our Leeds warehouse the same day. We accept Visa, "
    "Mastercard and PayPal. Gift cards never expire. Returns accepted within 30 days.\n"
)
WARRANTY = "# Warranty\n\nEvery electric kettle carries a two-year warranty against manufacturing defects.\n"
QUESTIONS = [
    {"question": "What is the return window?", "facts": ["30 days"], "source": "terms.md", "kind": "synonym"},
    {"question": "How long is the kettle warranty?", "facts": "two-year", "source": "warranty.md"},
    {"question": "Which payment cards do you accept?", "facts": ["Visa", "Mastercard"]},
    {"question": "Do you ship to Mars?", "refuse": True},
]


def parley_eval(rsettings, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update({"PARLEY_DATA_DIR": str(rsettings.data_dir), "PARLEY_DATABASE_URL": rsettings.effective_database_url,
                "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "cli", "eval", *args], capture_output=True, text=True, env=env,
                          cwd=rsettings.data_dir.parent, timeout=180)


@pytest.mark.parametrize("db_backend", ["sqlite"])  # a subprocess per run; the service tests cover both backends
async def test_eval_reports_a_tenants_own_questions(rsettings, sessions, writer, emb, tmp_path: Path) -> None:
    # Given a tenant with two documents, and its owner's questions (one the documents do not cover)
    shop = await create_tenant(sessions, "kettle-shop", "Kettle Shop")
    await add_document(sessions, writer, emb, shop, "terms.md", TERMS)
    await add_document(sessions, writer, emb, shop, "warranty.md", WARRANTY)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in QUESTIONS) + "\n")
    # When the owner runs `parley eval`, as a table and as JSON
    table = parley_eval(rsettings, "--tenant", "kettle-shop", str(questions), "--local")
    as_json = parley_eval(rsettings, "--tenant", "kettle-shop", str(questions), "--local", "--json")
    # Then every figure is there and every question was answered or refused as it should be
    assert table.returncode == 0, table.stderr
    for measure in ("fact in the answer", "right source cited first", "refusal precision", "false refusals",
                    "answer length, median"):
        assert measure in table.stdout
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    figures = report["figures"]
    assert (figures["cases"], figures["answerable"], figures["not_in_documents"]) == (4, 3, 1)
    assert figures["facts"] == 1.0 and figures["right_source"] == 1.0, report["cases"]
    assert figures["refusal_recall"] == 1.0 and figures["false_refusals"] == 0.0
    assert figures["median_chars"] <= 600
    assert [c["line"] for c in report["cases"]] == [1, 2, 3, 4] and report["cases"][0]["kind"] == "synonym"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_eval_names_the_malformed_line(rsettings, sessions, tmp_path: Path) -> None:
    # Given a question file whose second line is cut off
    await create_tenant(sessions, "kettle-shop", "Kettle Shop")
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "What is the return window?", "facts": ["30 days"]}\n{"question": "Broken\n')
    # When it is evaluated, Then nothing is asked: one line names the problem and its line, exit code 1
    bad = parley_eval(rsettings, "--tenant", "kettle-shop", str(questions))
    assert bad.returncode == 1 and "line 2: not valid JSON" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize(("body", "line", "why"), [
    ('{"question": "Where do you ship?"}', 1, 'give "facts" or "source"'),
    ('{"question": "Mars?", "refuse": true, "facts": ["x"]}', 1, 'no "facts" or "source"'),
    ('\n# a comment\n["a list"]', 3, "expected a JSON object"),
    ('{"question": "  "}', 1, '"question" must be a non-empty string'),
    ('{"question": "Colours?", "facts": [3]}', 1, '"facts" must be a string or a list'),
    ('{"question": "Mars?", "refuse": "yes"}', 1, '"refuse" must be true or false'),
])
def test_each_malformed_case_is_named_by_its_line(body: str, line: int, why: str) -> None:
    from parley.errors import InvalidInput
    from retrieval.evaluation import parse_cases

    with pytest.raises(InvalidInput) as caught:
        parse_cases(body.split("\n"), name="q.jsonl")
    assert caught.value.message.startswith(f"q.jsonl, line {line}: ") and why in caught.value.message


def test_an_empty_file_is_refused() -> None:
    from parley.errors import InvalidInput
    from retrieval.evaluation import parse_cases

    with pytest.raises(InvalidInput, match="holds no questions"):
        parse_cases(["", "# only a comment"], name="q.jsonl")
