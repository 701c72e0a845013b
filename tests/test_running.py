"""Which platform runs on a data directory (the marker `parley up` writes), and where a command's
staged work goes: the single-process platform's outbox, RabbitMQ, or a refusal that says what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import running
from parley.bus import RabbitBroker, Topology
from parley.errors import ParleyError
from parley.settings import Settings
from tests.support import services

DOWN = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path / "var", log_json=False, **overrides)


def write_marker_for(settings: Settings, mode: str, pid: int) -> Path:
    path = running.marker_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mode": mode, "pid": pid, "gateway_url": "http://127.0.0.1:1"}))
    return path


@pytest.fixture
def fake_up() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line is that of `parley up` (as the marker check sees it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "up"])
    yield proc
    proc.kill()
    proc.wait()


def test_marker_is_written_read_and_removed_by_its_owner(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    # Given no platform: none is running
    assert running.running_platform(settings) is None
    # When this process records itself as a single-process platform
    written = running.write_marker(settings, "single-process")
    # Then the file says so, in a private directory, and is removed by its owner
    data = json.loads(running.marker_path(settings).read_text())
    assert data["mode"] == "single-process" and data["pid"] == written.pid == os.getpid()
    assert oct(running.marker_path(settings).parent.stat().st_mode & 0o777) == "0o700"
    running.remove_marker(settings)
    assert not running.marker_path(settings).exists()


def test_stale_marker_is_detected_by_pid_and_removed(tmp_path: Path, fake_up: subprocess.Popen[bytes]) -> None:
    settings = settings_for(tmp_path)
    # Given a marker whose `parley up` was killed (its pid is gone)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = write_marker_for(settings, "single-process", dead.pid)
    # Then it is stale: not running, and the marker is removed
    assert running.running_platform(settings) is None and not path.exists()
    # And a pid since given to a process that is not `parley up` (this test run) is stale too
    write_marker_for(settings, "processes", os.getpid())
    assert running.running_platform(settings) is None
    # Given a live `parley up`, it is found, and another process's remove_marker leaves it alone
    write_marker_for(settings, "processes", fake_up.pid)
    running.remove_marker(settings)
    found = running.running_platform(settings)
    assert found is not None and (found.mode, found.pid) == ("processes", fake_up.pid)


async def test_single_process_platform_takes_work_from_the_outbox(tmp_path: Path, fake_up: subprocess.Popen[bytes]) -> None:
    # Given a live single-process platform on this data directory, and RabbitMQ reachable
    settings = settings_for(tmp_path, amqp_url=services.AMQP_URL, amqp_prefix=f"rt{uuid.uuid4().hex[:8]}.")
    write_marker_for(settings, "single-process", fake_up.pid)
    # Then work is left in the outbox (that platform reads no RabbitMQ), even for a command that waits
    chosen = await running.route(settings, "documents", waiting=True)
    assert chosen.how == "outbox" and str(fake_up.pid) in chosen.note


async def test_multi_process_platform_gets_rabbitmq(tmp_path: Path, fake_up: subprocess.Popen[bytes]) -> None:
    settings = settings_for(tmp_path, amqp_url=DOWN)
    write_marker_for(settings, "processes", fake_up.pid)
    assert (await running.route(settings, "documents", waiting=True)).how == "rabbitmq"


async def test_nothing_running_and_broker_down_queues_in_the_outbox_or_refuses(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, amqp_url=DOWN)
    # A command that does not wait: the outbox, for the next platform to deliver
    later = await running.route(settings, "documents", waiting=False)
    assert later.how == "outbox" and "parley up" in later.note
    # A command that waits: refused with what to do, naming the data directory
    with pytest.raises(ParleyError) as refused:
        await running.route(settings, "documents", waiting=True)
    assert refused.value.code == "not_running"
    assert "parley up" in refused.value.message and str(tmp_path / "var") in refused.value.message
    assert "--no-wait" in refused.value.message


@pytest.mark.rabbitmq
async def test_nothing_running_publishes_to_rabbitmq_and_warns_until_a_worker_reads_it(tmp_path: Path) -> None:
    prefix = f"rt{uuid.uuid4().hex[:8]}."
    settings = settings_for(tmp_path, amqp_url=services.AMQP_URL, amqp_prefix=prefix)
    broker = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix), connection_name=f"{prefix}test")
    await broker.start()
    try:
        # Given the queue exists and no worker reads it yet (workers may be starting): published, with a
        # warning that says what to start
        early = await running.route(settings, "documents", waiting=True)
        assert (early.how, early.warn) == ("rabbitmq", True)
        assert "no worker reads the documents queue yet" in early.note and "parley up" in early.note

        # When a worker (started by hand, or by docker compose: no marker) consumes it
        async def hold(_message: object) -> None:
            return None

        subscription = await broker.consume("documents", prefetch=1, callback=hold)
        # Then the work is published to RabbitMQ with no warning
        chosen = await running.route(settings, "documents", waiting=True)
        assert (chosen.how, chosen.warn) == ("rabbitmq", False) and "1 worker" in chosen.note
        await subscription.cancel()
    finally:
        await broker.delete_topology()
        await broker.close()
