"""Stalled jobs are named, not left "in progress" (issue 19.4).

A running job's deadline is ``base + pending items x per-item allowance``, counted from its last
progress (an item finishing), its start or its resume: a stall is no progress, not slow progress.
The allowance is learnt: the median gap between consecutive item finishes of the same job over the
last hour, platform-wide, between a floor and a cap. Past the deadline `mark_stalled` moves the job
to ``stalled`` with a reason computed from what it can see of the broker (the job's work queue
empty while items are pending, no worker consuming it, the broker unreachable, or nothing
finishing although messages wait), lists the pending items, and emits ``job.stalled`` once per
stall. An item finishing moves the job back to ``running`` (`knowledge.service.finish_job_items`);
`resume` re-queues exactly its pending items through the outbox.

The sweep is a conditional UPDATE (``WHERE status = 'running'``): two processes running it mark a
job once and emit once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import statistics
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.models import Document, DocumentStatus, Job, JobItem, JobItemStatus, JobStatus
from parley.bus import Envelope, stage
from parley.bus.contracts import DOCUMENT_UPLOADED, QUEUE_DOCUMENTS, stage_event
from parley.db import utcnow
from parley.errors import InvalidInput, NotFound

log = logging.getLogger(__name__)

#: The work queue each job kind's items travel on.
QUEUE_OF_KIND = {"documents": "documents", "reindex": "documents", "catalog_sync": "catalog"}

REASONS = {
    "queue_empty": "the {queue} queue is empty but {pending} items are still pending: their messages were lost",
    "no_worker": "no worker is consuming the {queue} queue",
    "broker_unreachable": "the message broker is unreachable",
    "no_progress": "{ready} messages wait in the {queue} queue but no item finished",
}


@dataclass(frozen=True)
class StallPolicy:
    base_seconds: float = 600.0
    item_floor_seconds: float = 5.0
    item_cap_seconds: float = 120.0

    @classmethod
    def from_settings(cls, settings: Any) -> StallPolicy:
        return cls(settings.job_stall_base_seconds, settings.job_stall_item_floor_seconds,
                   settings.job_stall_item_cap_seconds)


@dataclass
class Stalled:
    job_id: str
    tenant_id: str
    reason: str
    detail: str
    pending: list[dict[str, str]] = field(default_factory=list)


async def learnt_item_seconds(session: AsyncSession, policy: StallPolicy, *, now: dt.datetime | None = None) -> float:
    """The per-item allowance: the median gap between consecutive finishes within a job over the
    last hour (all tenants; an admin session), clamped to [floor, cap]; the cap with no data."""
    now = now or utcnow()
    rows = (await session.execute(
        select(JobItem.job_id, JobItem.finished_at)
        .where(JobItem.finished_at.is_not(None), JobItem.finished_at >= now - dt.timedelta(hours=1))
        .order_by(JobItem.job_id, JobItem.finished_at).limit(20_000)
    )).all()
    gaps: list[float] = []
    for (job, at), (next_job, next_at) in zip(rows, rows[1:]):
        if job == next_job:
            gaps.append((next_at - at).total_seconds())
    if not gaps:
        return policy.item_cap_seconds
    return min(policy.item_cap_seconds, max(policy.item_floor_seconds, statistics.median(gaps)))


def deadline(job: Job, pending: int, item_seconds: float, policy: StallPolicy) -> dt.datetime:
    start = max(t for t in (job.created_at, job.last_progress_at) if t is not None)
    return start + dt.timedelta(seconds=policy.base_seconds + pending * item_seconds)


def diagnose(kind: str, pending: int, queues: dict[str, Any] | None) -> tuple[str, str]:
    """``(reason code, sentence)`` from the broker's view: ``queues`` maps a logical queue name to its
    stats (``messages``, ``consumers``), or is None when the broker could not be asked."""
    queue = QUEUE_OF_KIND.get(kind, "documents")
    if queues is None:
        code = "broker_unreachable"
        stats = None
    else:
        stats = queues.get(queue)
        if stats is None:
            code = "broker_unreachable"
        elif stats.consumers == 0:
            code = "no_worker"
        elif stats.messages == 0:
            code = "queue_empty"
        else:
            code = "no_progress"
    ready = stats.messages if stats is not None else 0
    return code, REASONS[code].format(queue=queue, pending=pending, ready=ready)


async def pending_items(session: AsyncSession, job: Job) -> list[JobItem]:
    return list((await session.execute(
        select(JobItem).where(JobItem.tenant_id == job.tenant_id, JobItem.job_id == job.id,
                              JobItem.status == JobItemStatus.pending).order_by(JobItem.id)
    )).scalars())


async def mark_stalled(session: AsyncSession, *, policy: StallPolicy, queues: dict[str, Any] | None,
                       now: dt.datetime | None = None, limit: int = 200) -> list[Stalled]:
    """Mark every running job past its deadline stalled (an admin session; the caller commits)."""
    now = now or utcnow()
    item_seconds = await learnt_item_seconds(session, policy, now=now)
    jobs = list((await session.execute(
        select(Job).where(Job.status == JobStatus.running).order_by(Job.created_at).limit(limit)
        .execution_options(populate_existing=True))).scalars())
    out: list[Stalled] = []
    for job in jobs:
        items = await pending_items(session, job)
        if not items or deadline(job, len(items), item_seconds, policy) > now:
            continue
        code, detail = diagnose(job.kind, len(items), queues)
        moved = await session.execute(
            update(Job).where(Job.tenant_id == job.tenant_id, Job.id == job.id, Job.status == JobStatus.running,
                              Job.done + Job.failed == job.done + job.failed)
            .values(status=JobStatus.stalled, stalled_at=now, stall_reason=code, stall_detail=detail)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:
            continue  # another sweep took it, or an item finished meanwhile
        pending = [{"key": i.item_key, "label": i.label or i.item_key} for i in items]
        stage_event(session, tenant_id=job.tenant_id, event_type="job.stalled",
                    idempotency_key=f"job-stalled:{job.id}:{now.isoformat()}",
                    data={"job_id": job.id, "kind": job.kind, "total": job.total, "done": job.done,
                          "failed": job.failed, "pending": len(items), "pending_items": pending[:100],
                          "reason": code, "detail": detail, "stalled_at": now.isoformat()})
        out.append(Stalled(job.id, job.tenant_id, code, detail, pending))
    return out


@dataclass
class Resumed:
    job_id: str
    requeued: list[str]
    already_running: bool = False


async def resume(session: AsyncSession, *, tenant_id: str, job_id: str) -> Resumed:
    """Re-queue exactly the pending items of a stalled job, through the outbox (the caller commits).

    Idempotent: the move stalled -> running is a conditional UPDATE, so a second resume (or a
    concurrent one) finds the job running and queues nothing; an item that finished meanwhile is
    not pending and not re-queued. Consumers are idempotent, so an item whose first message does
    turn up is counted once (`finish_job_items`)."""
    job = (await session.execute(select(Job).where(Job.tenant_id == tenant_id, Job.id == job_id)
                                 .execution_options(populate_existing=True))).scalar_one_or_none()
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job.status == JobStatus.running:
        return Resumed(job.id, [], already_running=True)
    if job.status != JobStatus.stalled:
        raise InvalidInput(f"job {job.id} is {job.status.value}; only a stalled job can be resumed")
    if QUEUE_OF_KIND.get(job.kind) != QUEUE_DOCUMENTS:
        raise InvalidInput(f"a {job.kind} job is resumed by running it again (`parley shopify sync`)")
    moved = await session.execute(
        update(Job).where(Job.tenant_id == tenant_id, Job.id == job.id, Job.status == JobStatus.stalled)
        .values(status=JobStatus.running, stalled_at=None, stall_reason=None, stall_detail=None,
                last_progress_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:
        return Resumed(job.id, [], already_running=True)
    requeued = []
    for item in await pending_items(session, job):
        document = (await session.execute(select(Document).where(
            Document.tenant_id == tenant_id, Document.id == item.item_key))).scalar_one_or_none()
        if document is None or document.status not in (DocumentStatus.queued, DocumentStatus.processing):
            continue
        stage(session, Envelope.new(DOCUMENT_UPLOADED, tenant_id=tenant_id, payload={"document_id": document.id}),
              QUEUE_DOCUMENTS)
        requeued.append(item.label or item.item_key)
    return Resumed(job.id, requeued)


async def broker_view(settings: Any, topology: Any) -> dict[str, Any] | None:
    """Each work queue's stats by logical name (``documents``...), or None when the broker cannot be asked."""
    from parley.bus.stats import broker_queue_stats, work_stats

    try:
        stats = await broker_queue_stats(settings.amqp_url, topology)
    except Exception:  # noqa: BLE001 - an unreachable broker is one of the reasons
        return None
    return {kind: work_stats(topology, stats, kind) for kind in topology.queues}


async def sweep_once(sessions: Any, settings: Any, topology: Any) -> list[Stalled]:
    from parley.db import unit_of_work

    queues = await broker_view(settings, topology)
    async with unit_of_work(sessions, admin=True) as session:
        stalled = await mark_stalled(session, policy=StallPolicy.from_settings(settings), queues=queues)
    for s in stalled:
        log.warning("job %s of tenant %s stalled: %s (%d pending); `parley jobs resume %s` re-queues them",
                    s.job_id, s.tenant_id, s.detail, len(s.pending), s.job_id)
    return stalled


async def run_sweeper(settings: Any, stop: asyncio.Event, *, interval: float = 60.0) -> None:
    """The document worker's stall sweep (harmless when several workers run it: see the module doc)."""
    from parley import runtime
    from parley.db import create_engine, create_sessionmaker

    engine = create_engine(settings, "stall-sweep")
    sessions = create_sessionmaker(engine)
    topology = runtime.topology(settings)
    try:
        while not stop.is_set():
            try:
                await sweep_once(sessions, settings, topology)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("stall sweep failed; trying again in %.0fs", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        await engine.dispose()
