"""The README's quickstart, run as written: its commands in a second "terminal" against `parley up`
on a fresh data directory, each output line it promises found in what they print, and the two
addresses it tells the reader to open answering."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.test_up import Up, delete_topology, free_ports, http_ok, needs_model

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> tuple[list[str], list[str], list[str]]:
    """(commands, expected output lines, URLs to open) from the README's Quickstart section."""
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = section.split("```sh\n", 1)[1].split("```", 1)[0].strip().splitlines()
    expected = section.split("```text\n", 1)[1].split("```", 1)[0].strip().splitlines()
    urls = re.findall(r"<(http://[^>]+)>", section)
    return commands, expected, urls


def as_pattern(line: str) -> re.Pattern[str]:
    """An expected line with its run-specific parts (ids, the key, a pid) as wildcards."""
    pattern = re.escape(line)
    pattern = re.sub(r"[0-9a-f]{32}", "[0-9a-f]{32}", pattern)
    pattern = re.sub(r"pk_\S+", r"pk_\\S+", pattern)
    pattern = re.sub(r"pid\\? \d+", r"pid \\d+", pattern)
    return re.compile(pattern)


def test_the_readme_has_a_quickstart_to_run() -> None:
    commands, expected, urls = quickstart()
    assert any(" ingest " in c for c in commands) and any(" ask " in c for c in commands)
    assert any("keys create" in c for c in commands) and any("tenants create" in c for c in commands)
    assert urls == ["http://127.0.0.1:8080/admin", "http://127.0.0.1:8080/chat"]
    assert all(as_pattern(line).pattern for line in expected)


@pytest.mark.rabbitmq
@needs_model
async def test_quickstart_commands_give_the_promised_output(tmp_path: Path) -> None:
    commands, expected, urls = quickstart()
    # Given `parley up` (what scripts/run.sh ends in) on a fresh data directory, on free ports
    gateway, retrieval = free_ports(2)
    metrics = free_ports(2, consecutive=True)
    prefix = f"qs{uuid.uuid4().hex[:8]}."
    env = {"PARLEY_GATEWAY_PORT": str(gateway), "PARLEY_RETRIEVAL_PORT": str(retrieval),
           "PARLEY_WORKER_METRICS_PORT": str(metrics[0]), "PARLEY_AMQP_PREFIX": prefix}
    up = Up(tmp_path, env)  # the plain command: checks, migrates, starts every process
    try:
        await up.wait_for(lambda: http_ok(f"http://127.0.0.1:{gateway}/healthz")
                          and http_ok(f"http://127.0.0.1:{retrieval}/healthz"), "the platform answering", timeout=180)
        # When the reader runs the quickstart's commands, one after the other, in a second terminal
        parley = f"{shlex.quote(sys.executable)} -m cli"
        printed = []
        for command in commands:
            result = await asyncio.to_thread(
                subprocess.run, ["bash", "-c", command.replace(".venv/bin/parley", parley)], cwd=tmp_path,
                env={**up.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}\n{up.log()[-3000:]}"
            assert "Traceback" not in result.stderr, result.stderr
            printed += result.stdout.splitlines()
        # Then every line the README promises is printed, in that order
        remaining = iter(printed)
        for line in expected:
            pattern = as_pattern(line)
            assert any(pattern.fullmatch(got.rstrip()) for got in remaining), (line, printed)
        # And the dashboard and the web chat it tells the reader to open answer
        for url in urls:
            with urllib.request.urlopen(url.replace(":8080", f":{gateway}"), timeout=30) as response:
                assert response.status == 200, url
    finally:
        up.close()
        await delete_topology(prefix)
