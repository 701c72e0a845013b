"""Logs in a terminal read as lines, logs in a pipe stay JSON: the formatter chosen for a TTY-like
stream and for a pipe, PARLEY_LOG_JSON=true/false overriding the guess, and `parley up` passing its
one decision to every child."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from cli.supervisor import log_env, platform_processes
from parley.logging import JsonFormatter, TextFormatter, bound, make_formatter, wants_json
from parley.settings import Settings


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def emit(stream: io.StringIO, *, json_lines: bool | None) -> str:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter("gateway", json_lines=json_lines, stream=stream))
    logger = logging.getLogger("parley.test.tty")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    with bound(tenant_id="t-1", correlation_id="c-9"):
        logger.info("answered %s", "q-7", extra={"latency_ms": 12})
        logger.error("could not reach %s", "retrieval")
    return stream.getvalue()


@pytest.fixture(autouse=True)
def colours_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


def test_a_terminal_gets_one_coloured_readable_line_per_event() -> None:
    text = emit(Terminal(), json_lines=None)
    lines = text.splitlines()
    assert len(lines) == 2
    assert not text.lstrip().startswith("{")
    assert "\x1b[" in text  # ANSI colours
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in lines]
    assert "INFO" in plain[0] and "gateway" in plain[0] and "answered q-7" in plain[0]
    assert "tenant_id=t-1" in plain[0] and "correlation_id=c-9" in plain[0] and "latency_ms=12" in plain[0]
    assert "ERROR" in plain[1] and "could not reach retrieval" in plain[1]


def test_a_pipe_gets_json_lines() -> None:
    text = emit(io.StringIO(), json_lines=None)
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["msg"] for r in records] == ["answered q-7", "could not reach retrieval"]
    assert records[0]["tenant_id"] == "t-1" and records[0]["latency_ms"] == 12 and records[0]["process"] == "gateway"


def test_parley_log_json_overrides_the_guess() -> None:
    # true on a terminal: JSON anyway; false in a pipe: readable lines, without colours
    assert isinstance(make_formatter("x", json_lines=True, stream=Terminal()), JsonFormatter)
    as_text = emit(io.StringIO(), json_lines=False)
    assert "\x1b[" not in as_text and not as_text.startswith("{") and "answered q-7" in as_text
    # and the setting parses true / false / auto (unset)
    assert Settings(log_json="true").log_json is True and Settings(log_json="false").log_json is False
    assert Settings(log_json="auto").log_json is None and Settings().log_json is None
    assert wants_json(None, Terminal()) is False and wants_json(None, io.StringIO()) is True


def test_no_color_keeps_a_terminal_readable_but_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    formatter = make_formatter("x", json_lines=None, stream=Terminal())
    assert isinstance(formatter, TextFormatter) and not formatter.colour


def test_up_decides_once_and_every_child_inherits_it() -> None:
    # `parley up` in a terminal: every child is told readable lines (they write to the same terminal)
    assert log_env(Settings(), Terminal()) == {"PARLEY_LOG_JSON": "false"}
    # in a pipe or a file: JSON; and an explicit choice is passed on as it is
    assert log_env(Settings(), io.StringIO()) == {"PARLEY_LOG_JSON": "true"}
    assert log_env(Settings(log_json=True), Terminal()) == {"PARLEY_LOG_JSON": "true"}
    specs = platform_processes(Settings(log_json=False))
    assert {spec.name for spec in specs} == {"retrieval", "gateway", "documents-worker", "catalog-worker", "webhooks-worker"}
    assert all(spec.env["PARLEY_LOG_JSON"] == "false" for spec in specs)


def test_a_process_whose_stderr_is_a_pipe_logs_json() -> None:
    # Given a real process with PARLEY_LOG_JSON unset and stderr a pipe
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    code = ("import logging; from parley.logging import configure_logging; from parley.settings import Settings; "
            "configure_logging(process_name='p', json_lines=Settings().log_json); logging.getLogger('x').warning('hi')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    # Then its line is JSON
    assert json.loads(result.stderr.strip().splitlines()[-1])["msg"] == "hi"
