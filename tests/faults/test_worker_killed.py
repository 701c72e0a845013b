"""A document worker killed with SIGKILL at random points of a 200-document batch, and restarted each
time: every document ends indexed or failed with a reason, nothing is indexed twice, the job's
counters are exact and it is reported once."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from sqlalchemy import func, select

from knowledge.models import Job
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from tests.faults.conftest import FaultStack
from tests.faults.support import (
    audit, broker_ids, check_job, check_nothing_lost, eventually, expected_report, queue_depths, text_documents,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

TOTAL = 200
KILLS = 5


def _batch() -> list[tuple[str, bytes]]:
    """190 small text documents, 9 images the worker cannot read and one empty file."""
    files = text_documents(TOTAL - 10)
    files += [(f"photo-{i}.png", b"\x89PNG\r\n\x1a\n" + os.urandom(64)) for i in range(9)]
    files.append(("empty.txt", b""))
    return files


async def _finished(stack: FaultStack, job_id: str) -> int:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job.done + job.failed


async def test_sigkill_at_random_points_loses_and_doubles_nothing(stack: FaultStack) -> None:
    seed = int(os.environ.get("PARLEY_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    # Given a running worker and a 200-document upload whose report goes back to the uploader
    worker = stack.worker()
    worker.start()
    batch = await stack.submit(_batch(), notify={"channel": "web", "conversation_id": "c1"})
    assert batch.job_id is not None
    # When the worker is killed at random moments while it works through the batch, and restarted each time
    marks = sorted(rng.sample(range(5, TOTAL - 20), KILLS))
    killed_at = []
    for mark in marks:
        await eventually(lambda: _reached(stack, batch.job_id, mark), timeout=120, what=f"{mark} documents done",
                         log=worker.log)
        await asyncio.sleep(rng.uniform(0, 0.25))  # anywhere in a document: parsing, embedding, committing, acking
        worker.kill()
        killed_at.append(await _finished(stack, batch.job_id))
        worker.start()
    # Then the batch completes
    await eventually(lambda: _reached(stack, batch.job_id, TOTAL), timeout=180, what="the whole batch", log=worker.log)
    context = f"seed={seed} (PARLEY_FAULT_SEED reproduces the kill marks), killed at {killed_at}"
    assert killed_at[-1] < TOTAL, f"the batch finished before the last kill; nothing was tested ({context})"
    await eventually(lambda: _settled(stack), timeout=60, interval=0.5, what="queues drained", log=worker.log)
    # And every document is indexed or failed with a reason; chunks and vectors exist once, under their ids
    result = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=list(batch.documents.values()),
                         job_id=batch.job_id)
    problems = check_nothing_lost(result, tenant_id=stack.tenant_id, expected=TOTAL) + check_job(result, total=TOTAL)
    assert not problems, f"{context}\n" + "\n".join(problems)
    assert (len(result.indexed), len(result.failed)) == (TOTAL - 10, 10), context
    # And the one final report says exactly that, and reached the notifications queue
    [final] = [n for n in result.notices if n.payload.get("kind") == "job_done"]
    assert result.job is not None
    assert final.payload["text"] == await expected_report(stack.sessions, result.job)
    assert final.payload["text"].startswith(f"{TOTAL - 10} of {TOTAL} indexed; 10 failed:")
    published = await broker_ids(stack.broker, stack.broker.topology.queue("notifications"))
    assert set(published) == {n.id for n in result.notices}, context
    # And the dead-letter queue holds the failed documents' messages (a copy or two: at-least-once)
    dead = await broker_ids(stack.broker, stack.broker.topology.dlq("documents"))
    assert set(dead) == {row.message_id for row in result.dead}, context
    assert worker.kills == KILLS


async def _reached(stack: FaultStack, job_id: str, mark: int) -> bool:
    return await _finished(stack, job_id) >= mark


async def _settled(stack: FaultStack) -> bool:
    """No document message left anywhere, nothing unacked, every staged notice published."""
    async with unit_of_work(stack.sessions, admin=True) as session:
        unpublished = await session.scalar(select(func.count()).select_from(OutboxMessage)
                                           .where(OutboxMessage.published_at.is_(None)))
    if unpublished:
        return False
    depths = queue_depths(stack.prefix)  # rabbitmqctl (~0.5 s of CPU): only when the database says so
    return depths.get("documents") == (0, 0) and not any(unacked for _, unacked in depths.values())
