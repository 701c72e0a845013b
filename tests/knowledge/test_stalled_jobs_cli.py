"""A stalled upload as the operator meets it: the worker's sweep names it, `parley status` shows it,
`parley jobs resume` re-queues its pending files once. Real database, real RabbitMQ, the real CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from knowledge.stalls import sweep_once
from parley import runtime
from parley.db import create_engine, create_sessionmaker
from parley.settings import Settings
from tests.support import services
from tests.test_cli import parley
from tests.test_ops import delete_topology

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def test_status_shows_a_stalled_job_and_resume_requeues_its_pending_files_once(db_url: str, tmp_path: Path) -> None:
    prefix = f"stall{uuid.uuid4().hex[:8]}."
    env = {"PARLEY_DATABASE_URL": db_url, "PARLEY_AMQP_PREFIX": prefix, "PARLEY_JOB_STALL_BASE_SECONDS": "0.001",
           "PARLEY_JOB_STALL_ITEM_FLOOR_SECONDS": "0.001", "PARLEY_JOB_STALL_ITEM_CAP_SECONDS": "0.001"}
    (tmp_path / "docs").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "docs" / name).write_text(f"{name}: orders ship within two days.\n")
    settings = Settings(data_dir=tmp_path / "var", database_url=db_url, amqp_url=services.AMQP_URL, amqp_prefix=prefix,
                        job_stall_base_seconds=0.001, job_stall_item_floor_seconds=0.001,
                        job_stall_item_cap_seconds=0.001)
    engine = create_engine(settings, "stall-test")
    try:
        # Given a tenant whose two uploads are queued while no document worker runs
        assert (await asyncio.to_thread(parley, tmp_path, "tenants", "create", "acme", env=env)).returncode == 0
        queued = await asyncio.to_thread(parley, tmp_path, "ingest", str(tmp_path / "docs"), "--tenant", "acme",
                                         "--no-wait", env=env)
        assert queued.returncode == 0, queued.stderr
        # When the stall sweep runs past the job's deadline
        [stalled] = await sweep_once(create_sessionmaker(engine), settings, runtime.topology(settings))
        # Then it names the reason: nobody consumes the documents queue
        assert stalled.reason == "no_worker"
        # and `parley status` shows the job stalled, with the reason and the pending count
        status = json.loads((await asyncio.to_thread(parley, tmp_path, "--json", "status", env=env)).stdout)
        [job] = status["jobs"]
        assert (job["status"], job["pending"], job["stall_reason"]) == ("stalled", 2, "no_worker")
        table = await asyncio.to_thread(parley, tmp_path, "status", env=env)
        assert "stalled" in table.stdout and "no worker is consuming" in table.stdout
        # When the operator resumes it twice
        first = await asyncio.to_thread(parley, tmp_path, "jobs", "resume", job["id"][:8], "--tenant", "acme", env=env)
        second = await asyncio.to_thread(parley, tmp_path, "--json", "jobs", "resume", job["id"][:8], "--tenant", "acme",
                                         env=env)
        # Then the two pending files were queued again once, and the second resume queued nothing
        assert first.returncode == 0, first.stderr
        assert "re-queued 2 pending item(s)" in first.stdout and "a.txt" in first.stdout
        assert json.loads(second.stdout) == {"job_id": job["id"], "requeued": [], "already_running": True}
        again = json.loads((await asyncio.to_thread(parley, tmp_path, "--json", "status", env=env)).stdout)
        assert [j["status"] for j in again["jobs"]] == ["running"]
        assert {q["queue"]: q["ready"] for q in again["queues"]}["documents"] == 4  # 2 first messages + 2 resumed
    finally:
        await engine.dispose()
        await delete_topology(prefix)
