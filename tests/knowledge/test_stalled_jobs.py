"""Stalled jobs are named, not left "in progress" (issue 19.4): deadline, reason, event, resume."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from knowledge.models import Job, JobStatus
from knowledge.service import create_job, finish_job_item, submit_upload
from knowledge.stalls import StallPolicy, mark_stalled, resume
from parley.blobs import BlobStore
from parley.bus.broker import QueueStats
from parley.bus.models import OutboxMessage
from parley.db import bind_admin, utcnow
from tenants.models import Tenant

POLICY = StallPolicy(base_seconds=60, item_floor_seconds=1, item_cap_seconds=10)


async def _job_of_three(session, tmp_path: Path) -> tuple[str, str, list[str]]:
    tenant = Tenant(name="stall-co")
    session.add(tenant)
    await session.flush()
    job = await create_job(session, tenant_id=tenant.id, kind="documents", description="3 files", total=3)
    blobs = BlobStore(tmp_path / "blobs")
    docs = []
    for n in range(3):
        blob = await blobs.put_bytes(tenant.id, f"# Doc {n}\n\nText {n}.\n".encode(), max_bytes=1 << 20)
        submitted = await submit_upload(session, tenant_id=tenant.id, source="cli", filename=f"d{n}.md",
                                        declared_mime="text/markdown", blob=blob, job_id=job.id)
        docs.append(submitted.document.id)
    return tenant.id, job.id, docs


async def _outbox_uploads(session, document_id: str) -> int:
    rows = (await session.execute(select(OutboxMessage.body).where(OutboxMessage.message_type == "document.uploaded"))).scalars()
    return sum(document_id in body for body in rows)


async def test_a_job_without_progress_is_stalled_with_a_reason_then_resumed_once(db, tmp_path: Path) -> None:
    async with db.sessions() as session:
        bind_admin(session)
        # Given a job of three documents, one of which finished
        tenant_id, job_id, docs = await _job_of_three(session, tmp_path)
        await finish_job_item(session, tenant_id=tenant_id, job_id=job_id, item_key=docs[0], ok=True)
        job = await session.get(Job, job_id)
        # When the sweep runs before its deadline (60 s + 2 pending x 10 s from the last progress)
        assert await mark_stalled(session, policy=POLICY, queues={"documents": QueueStats(0, 1)}, now=utcnow()) == []
        # and again past it, with a worker on an empty documents queue
        later = utcnow() + dt.timedelta(seconds=81)
        [stalled] = await mark_stalled(session, policy=POLICY, queues={"documents": QueueStats(0, 1)}, now=later)
        # Then the job is stalled, naming why and the two pending items, and job.stalled is staged once
        await session.refresh(job)
        assert job.status == JobStatus.stalled and job.stall_reason == "queue_empty"
        assert "2 items are still pending" in (job.stall_detail or "")
        assert [p["label"] for p in stalled.pending] == ["d1.md", "d2.md"]
        events = (await session.execute(select(OutboxMessage).where(OutboxMessage.message_type == "tenant.event"))).scalars().all()
        stalled_events = [e for e in events if '"job.stalled"' in e.body]
        assert len(stalled_events) == 1
        assert await mark_stalled(session, policy=POLICY, queues=None, now=later + dt.timedelta(hours=1)) == []
        # When an item finishes meanwhile and the job is resumed twice
        await finish_job_item(session, tenant_id=tenant_id, job_id=job_id, item_key=docs[1], ok=True)
        await session.refresh(job)
        assert job.status == JobStatus.running and job.stall_reason is None  # progress leaves `stalled`
        [again] = await mark_stalled(session, policy=POLICY, queues={"documents": QueueStats(3, 0)},
                                     now=utcnow() + dt.timedelta(seconds=200))
        assert again.reason == "no_worker"
        before = [await _outbox_uploads(session, d) for d in docs]
        first = await resume(session, tenant_id=tenant_id, job_id=job_id)
        second = await resume(session, tenant_id=tenant_id, job_id=job_id)
        # Then only the still-pending item was queued, once, through the outbox
        after = [await _outbox_uploads(session, d) for d in docs]
        assert first.requeued == ["d2.md"] and second.requeued == [] and second.already_running
        assert [a - b for a, b in zip(after, before)] == [0, 0, 1]
        await session.refresh(job)
        assert job.status == JobStatus.running


async def test_the_reason_names_an_unreachable_broker(db, tmp_path: Path) -> None:
    async with db.sessions() as session:
        bind_admin(session)
        # Given a job with nothing finished for longer than its deadline
        _, job_id, _ = await _job_of_three(session, tmp_path)
        # When the sweep cannot reach the broker
        [stalled] = await mark_stalled(session, policy=POLICY, queues=None, now=utcnow() + dt.timedelta(hours=2))
        # Then the reason says so
        assert stalled.job_id == job_id and stalled.reason == "broker_unreachable"
        assert stalled.detail == "the message broker is unreachable"
