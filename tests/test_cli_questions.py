"""`parley ask` with a message that cannot be a question: one polite line, exit 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.schemas import EMPTY_QUESTION, NO_WORDS
from tests.test_cli import parley


@pytest.mark.parametrize(("question", "reply"), [("", EMPTY_QUESTION), ("   ", EMPTY_QUESTION), ("🙂🙂", NO_WORDS),
                                                 ("?" * 100_000, "100,000 characters long")])
def test_ask_with_a_bad_question_prints_one_polite_line(tmp_path: Path, question: str, reply: str) -> None:
    # When an admin asks the agent nothing, only emoji, or a 100 KB paste
    asked = parley(tmp_path, "ask", question, "--tenant", "acme")
    # Then one line says what is wrong, and nothing else happens
    assert asked.returncode == 1 and "Traceback" not in asked.stderr
    lines = [line for line in asked.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error:" in lines[0]
    assert reply[:60] in " ".join(asked.stderr.split())
