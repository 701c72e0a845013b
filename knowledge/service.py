"""The knowledge base's service: uploads, bulk jobs and their counters, deletion, re-indexing,
catalog sync requests.

The gateway (a file in a DM), the web chat and `parley ingest` all submit uploads through
:func:`submit_upload`: it records the document and stages `document.uploaded` in the caller's
unit of work, so the message exists if and only if the document does. Re-uploading the same
content is a no-op that answers with the existing document; a new version of a file (same
source and name, new content) is a new document that replaces the old one when it is indexed,
unless it comes from someone other than the old one's uploader who may not replace it. Uploads,
refusals, deletions and restores (:func:`restore_document`) are recorded in the audit log
(`knowledge.audit`) in the same unit of work.

The dashboard adds three changes: :func:`request_deletion` (a deletion whose vectors the document
worker removes, `document.deleted`), :func:`retry_with_password` (a password-protected PDF again,
its password sealed in the message) and a new version of a given document (``version_of``).
:func:`job_breakdown` is a job's outcome for a person, success first and failures grouped with
their files; :func:`job_report` is the same on one line.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge import audit, retry, usage
from knowledge.audit import SYSTEM, Actor
from knowledge.models import Chunk, Document, DocumentStatus, Job, JobItem, JobItemStatus, JobStatus, KnowledgeAction
from knowledge.repository import DocumentRepository, JobRepository
from parley.blobs import StoredBlob
from parley.bus import Envelope, Failure, context, stage
from parley.bus.contracts import stage_event
from parley.bus.contracts import (
    CATALOG_SYNC_JOB_KIND,
    CATALOG_SYNC_REQUESTED,
    DOCUMENT_DELETED,
    DOCUMENT_UPLOADED,
    QUEUE_CATALOG,
    QUEUE_DOCUMENTS,
    DocumentDeleted,
    DocumentUploaded,
    SyncRequested,
)
from parley.db import utcnow
from parley.errors import AlreadyExists, Forbidden, InvalidInput
from tenants.models import Tenant
from tenants.quotas import PlanDefaults


@dataclass(frozen=True)
class Submitted:
    document: Document
    created: bool  # False: the same content (or idempotency key) was already submitted
    #: Why it was not taken (a new version of someone else's document, from a sender who may not
    #: replace it): nothing was stored, ``document`` is the version that stays.
    refused: str | None = None


async def create_job(session: AsyncSession, *, tenant_id: str, kind: str, description: str, total: int,
                     notify: dict[str, Any] | None = None) -> Job:
    job = JobRepository(session, tenant_id).add(Job(kind=kind, description=description, total=total, notify=notify))
    await session.flush()
    return job


async def submit_upload(
    session: AsyncSession,
    *,
    tenant_id: str,
    source: str,
    filename: str,
    declared_mime: str | None,
    blob: StoredBlob,
    idempotency_key: str | None = None,
    notify: dict[str, Any] | None = None,
    job_id: str | None = None,
    correlation_id: str | None = None,
    actor: Actor = SYSTEM,
    sealed_password: str | None = None,
    version_of: str | None = None,
    plan: PlanDefaults | None = None,
    counts_as_upload: bool = True,
) -> Submitted:
    """Record an uploaded file and queue it for indexing (published after the caller commits).

    The document, its bytes and (``counts_as_upload``: not for the files of a ZIP) one upload are
    charged to the tenant's plan in the same unit of work (`knowledge.usage.charge_upload`; ``plan``:
    the process's defaults); past a limit it raises `QuotaExceeded` and nothing is recorded.

    ``sealed_password`` (a protected PDF's password, already encrypted with the platform's
    `SecretBox`) travels in the message to the worker and is stored nowhere else. ``version_of``
    names the document this file is a new version of (the dashboard's "upload a new version"):
    it replaces that one once indexed even when that one failed (a failed document is otherwise
    no version in use).

    ``actor`` is who sent it. A new version of a document (same source and name) uploaded by
    someone else is refused unless the actor may replace (the tenant's uploader policy decides):
    nothing is recorded but the refusal, and the caller discards the file. Every upload and
    refusal goes into the audit log (`knowledge.audit`) in the same transaction.

    The correlation id defaults to the one bound in the logging context (the request or message
    that brought the file), so the document row, the worker's log lines and its notice share it."""
    correlation_id = correlation_id or context.correlation_id()
    repo = DocumentRepository(session, tenant_id)
    key = idempotency_key or f"sha256:{blob.sha256}"
    existing = await repo.by_idempotency_key(key) or await repo.by_sha(blob.sha256)
    if existing is not None and existing.status not in (DocumentStatus.failed, DocumentStatus.deleted):
        if job_id:
            await _add_job_item(session, tenant_id, job_id, existing, already_done=existing.status == DocumentStatus.indexed)
        return Submitted(existing, created=False)
    previous = await repo.current_version(source, filename, exclude_id=existing.id if existing is not None else None)
    if previous is None and version_of and (existing is None or existing.id != version_of):
        failed = await repo.find(version_of)
        previous = failed if failed is not None and failed.status == DocumentStatus.failed else None
    if previous is not None and not actor.may_replace and not actor.is_uploader_of(previous):
        why = "the version in use was added by someone else, and only they or an admin may replace it"
        audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.refused, actor=actor, filename=filename,
                     document_id=previous.id, detail=why)
        if job_id:
            await _shrink_job(session, tenant_id, job_id)
        return Submitted(previous, created=False, refused=why)
    was_counted = existing is not None and usage.counts(existing)
    if existing is not None:
        # Same content again after a failure or a deletion: try it again, as the same row.
        document = existing
        _queue_again(document, job_id=job_id)
        document.filename = filename
        document.notify = notify
        document.uploader = actor.to_json()
    else:
        document = repo.add(
            Document(
                source=source,
                filename=filename,
                mime_type=declared_mime,
                size_bytes=blob.size,
                sha256=blob.sha256,
                blob_key=blob.key,
                status=DocumentStatus.queued,
                idempotency_key=key,
                notify=notify,
                job_id=job_id,
                correlation_id=correlation_id,
                uploader=actor.to_json(),
            )
        )
        await session.flush()
    await usage.charge_upload(session, document=document, was_counted=was_counted, replacing=previous, defaults=plan,
                              upload=counts_as_upload)
    document.replaces_id = previous.id if previous is not None else None
    audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.uploaded, actor=actor, filename=filename,
                 document_id=document.id, replaced_document_id=document.replaces_id)
    if job_id:
        await _add_job_item(session, tenant_id, job_id, document, already_done=False)
    stage(
        session,
        Envelope.new(
            DOCUMENT_UPLOADED,
            tenant_id=tenant_id,
            payload=uploaded_payload(document.id, sealed_password),
            correlation_id=correlation_id,
        ),
        QUEUE_DOCUMENTS,
    )
    return Submitted(document, created=existing is None)


def uploaded_payload(document_id: str, sealed_password: str | None = None) -> dict[str, Any]:
    """`document.uploaded`'s payload; the sealed password only when there is one."""
    return DocumentUploaded(document_id=document_id, sealed_password=sealed_password).model_dump(
        mode="json", exclude_none=True)


async def _add_job_item(session: AsyncSession, tenant_id: str, job_id: str, document: Document, *, already_done: bool) -> None:
    found = await session.execute(select(JobItem.id).where(
        JobItem.tenant_id == tenant_id, JobItem.job_id == job_id, JobItem.item_key == document.id))
    if found.first() is not None:
        # The same content twice in one upload (a copied file, twins in a ZIP): one document, counted
        # once; the job's total drops by the copy, or it would wait for an item that never comes.
        await _shrink_job(session, tenant_id, job_id)
        return
    item = JobItem(
        tenant_id=tenant_id, job_id=job_id, item_key=document.id, label=document.filename,
        status=JobItemStatus.done if already_done else JobItemStatus.pending,
    )
    session.add(item)
    await session.flush()
    if already_done:
        await session.execute(
            update(Job).where(Job.tenant_id == tenant_id, Job.id == job_id).values(done=Job.done + 1)
            .execution_options(synchronize_session=False)
        )
        await _close_if_complete(session, tenant_id, job_id)


def _queue_again(document: Document, *, job_id: str | None) -> None:
    """Put ``document`` back in the queue as if new: no error, attempts from zero, in ``job_id``
    (the caller stages its message). One place, for an upload of the same content, a retry with
    a password, a restore and a reindex."""
    document.status = DocumentStatus.queued
    document.error = document.error_code = None
    document.attempts = 0
    document.job_id = job_id


async def _shrink_job(session: AsyncSession, tenant_id: str, job_id: str) -> None:
    """One expected item of the job will never come (a copy, a refused file): the total drops by one."""
    await session.execute(
        update(Job).where(Job.tenant_id == tenant_id, Job.id == job_id).values(total=Job.total - 1)
        .execution_options(synchronize_session=False)
    )
    await _close_if_complete(session, tenant_id, job_id)


async def finish_job_item(
    session: AsyncSession, *, tenant_id: str, job_id: str, item_key: str, ok: bool,
    error_code: str | None = None, error: str | None = None,
) -> Job | None:
    """Count one item of a job exactly once; see :func:`finish_job_items`."""
    return await finish_job_items(session, tenant_id=tenant_id, job_id=job_id, keys=[item_key], ok=ok,
                                  error_code=error_code, error=error)


async def finish_job_items(
    session: AsyncSession, *, tenant_id: str, job_id: str, keys: Sequence[str], ok: bool,
    error_code: str | None = None, error: str | None = None,
) -> Job | None:
    """Count items of a job exactly once (pending -> done/failed) and close the job after the last.

    Returns the job when this call closed it (so the caller can send the final report), else None.
    The conditional UPDATE is the atomic step: a redelivered message finds its items no longer
    pending and changes nothing; the job's counters grow by exactly what moved. A whole batch costs
    three statements, not three per item (a catalog batch: ~20% of its time on PostgreSQL,
    bench/shopify_sync.py).
    """
    if not keys:
        return None
    moved = await session.execute(
        update(JobItem)
        .where(JobItem.tenant_id == tenant_id, JobItem.job_id == job_id, JobItem.item_key.in_(list(keys)),
               JobItem.status == JobItemStatus.pending)
        .values(status=JobItemStatus.done if ok else JobItemStatus.failed, error_code=error_code, error=error,
                finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    count = moved.rowcount or 0
    if count == 0:
        return None  # a redelivery: every item was already counted
    counter = Job.done if ok else Job.failed
    await session.execute(
        update(Job).where(Job.tenant_id == tenant_id, Job.id == job_id).values({counter: counter + count,
                                                                              Job.last_progress_at: utcnow()})
        .execution_options(synchronize_session=False)
    )
    # Progress again: a stalled job is running (its stall was no progress, not slow progress).
    await session.execute(
        update(Job).where(Job.tenant_id == tenant_id, Job.id == job_id, Job.status == JobStatus.stalled)
        .values(status=JobStatus.running, stalled_at=None, stall_reason=None, stall_detail=None)
        .execution_options(synchronize_session=False)
    )
    return await _close_if_complete(session, tenant_id, job_id)


async def _close_if_complete(session: AsyncSession, tenant_id: str, job_id: str) -> Job | None:
    """Close the job when every item is counted; returns it only to the one call that closed it."""
    closed = await session.execute(
        update(Job)
        .where(Job.tenant_id == tenant_id, Job.id == job_id, Job.status == JobStatus.running,
               Job.done + Job.failed >= Job.total)
        .values(status=JobStatus.done, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if closed.rowcount != 1:
        return None
    job = await JobRepository(session, tenant_id).get(job_id)
    await session.refresh(job)
    stage_event(session, tenant_id=tenant_id, event_type="job.completed", idempotency_key=f"job-completed:{job.id}",
                data={"job_id": job.id, "kind": job.kind, "total": job.total, "done": job.done, "failed": job.failed,
                      "finished_at": job.finished_at.isoformat() if job.finished_at else None})
    return job


async def job_report(session: AsyncSession, job: Job) -> str:
    """'115 of 127 indexed; 12 failed: PDF is password-protected (9), document has no text (3)'."""
    return report_text(await job_breakdown(session, job))


#: Job kinds whose items are documents (the item key is the document id).
DOCUMENT_JOB_KINDS = frozenset({"documents", "reindex"})


async def job_breakdown(session: AsyncSession, job: Job) -> dict[str, Any]:
    """A job's outcome for a person, success first: ``headline`` ('18 of 26 indexed'), the counts,
    and the failures grouped by reason, most frequent first, each with its items (``document_id``
    set when the item is a document, for a link to it). `report_text` makes the one-line report."""
    failed = await JobRepository(session, job.tenant_id).failed_items(job.id) if job.failed else []
    groups: dict[str, dict[str, Any]] = {}
    for item in failed:
        reason = item.error or "unknown error"
        group = groups.setdefault(reason, {"reason": reason, "code": item.error_code, "count": 0, "items": []})
        group["count"] += 1
        group["items"].append({"key": item.item_key, "label": item.label or item.item_key,
                               "document_id": item.item_key if job.kind in DOCUMENT_JOB_KINDS else None})
    ordered = sorted(groups.values(), key=lambda g: -g["count"])  # stable: first seen first among equals
    return {"headline": f"{job.done:,} of {job.total:,} indexed", "done": job.done, "failed": job.failed,
            "total": job.total, "pending": max(0, job.total - job.done - job.failed), "groups": ordered}


def report_text(breakdown: dict[str, Any], *, groups: int = 5) -> str:
    """The one-line report of a `job_breakdown`: the headline, then the first ``groups`` reasons."""
    text = breakdown["headline"]
    if not breakdown["failed"]:
        return text
    reasons = breakdown["groups"]
    grouped = ", ".join(f"{g['reason']} ({g['count']})" for g in reasons[:groups])
    if len(reasons) > groups:
        grouped += ", …"
    return f"{text}; {breakdown['failed']:,} failed: {grouped}"


async def delete_document(session: AsyncSession, index: Any, *, tenant_id: str, document_id: str,
                          actor: Actor = SYSTEM) -> Document:
    """Remove a document everywhere: its vectors, its chunk metadata, its status (kept as `deleted`
    so a later re-upload of the same content is indexed again, and so it can be restored). Bumps
    the tenant's index version, so no cached answer built from it survives. Recorded in the audit
    log as done by ``actor``."""
    repo = DocumentRepository(session, tenant_id)
    document = await repo.get(document_id)
    await index.delete_document(tenant_id, document.id)
    return await _mark_deleted(session, document, actor=actor)


async def request_deletion(session: AsyncSession, *, tenant_id: str, document_id: str, actor: Actor) -> Document:
    """`delete_document` for a process without the vector index (the dashboard): the document is
    `deleted` at once (chunk metadata gone, index version bumped, recorded), and `document.deleted`
    is staged for the document worker, which removes its vectors (unless it was restored meanwhile)."""
    document = await DocumentRepository(session, tenant_id).get(document_id)
    if document.status == DocumentStatus.deleted:
        raise AlreadyExists(f"{document.filename} is already deleted")
    if document.status == DocumentStatus.processing:  # the worker would write it back as indexed
        raise AlreadyExists(f"{document.filename} is being indexed right now; delete it once that is done")
    await _mark_deleted(session, document, actor=actor)
    stage(session, Envelope.new(DOCUMENT_DELETED, tenant_id=tenant_id, payload=DocumentDeleted(document_id=document.id),
                                correlation_id=context.correlation_id()), QUEUE_DOCUMENTS)
    return document


async def retry_with_password(session: AsyncSession, *, tenant_id: str, document_id: str, actor: Actor,
                              sealed_password: str) -> Document:
    """Index a PDF that failed as password-protected again, with its password (sealed with the
    platform's `SecretBox`; it travels in the message only). Recorded as a new upload of the same
    version, by ``actor``. Only a failed, password-protected document can be retried this way."""
    document = await DocumentRepository(session, tenant_id).get(document_id)
    if not needs_password(document):
        raise InvalidInput(f"{document.filename} is {document.status.value}"
                           f"{' (' + document.error + ')' if document.error else ''}: only a PDF that failed as "
                           "password-protected can be retried with a password")
    if document.uploader is not None and not actor.may_replace and not actor.is_uploader_of(document):
        raise Forbidden("only its uploader or an admin may retry this document")
    _queue_again(document, job_id=None)
    audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.uploaded, actor=actor, filename=document.filename,
                 document_id=document.id, replaced_document_id=document.replaces_id, detail="retried with a password")
    stage(session, Envelope.new(DOCUMENT_UPLOADED, tenant_id=tenant_id,
                                payload=uploaded_payload(document.id, sealed_password),
                                correlation_id=context.correlation_id()), QUEUE_DOCUMENTS)
    return document


#: Failure codes of a PDF that needs its password (again): password-protected (`ingestion.documents
#: .extract_pdf`), or its sealed password could not be opened or was too old (the document worker).
PASSWORD_CODES = frozenset({"pdf_encrypted", "password_unreadable", "password_expired"})


def needs_password(document: Document) -> bool:
    return document.status == DocumentStatus.failed and document.error_code in PASSWORD_CODES


async def _mark_deleted(session: AsyncSession, document: Document, *, actor: Actor) -> Document:
    tenant_id = document.tenant_id
    await usage.release_document(session, document)  # before its state changes: what it held is given back
    await session.execute(delete(Chunk).where(Chunk.tenant_id == tenant_id, Chunk.document_id == document.id))
    if document.status != DocumentStatus.deleted:
        audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.deleted, actor=actor,
                     filename=document.filename, document_id=document.id)
    document.status = DocumentStatus.deleted
    document.chunk_count = 0
    await session.execute(
        update(Tenant).where(Tenant.id == tenant_id).values(index_version=Tenant.index_version + 1)
        .execution_options(synchronize_session=False)
    )
    return document


async def restore_document(session: AsyncSession, *, tenant_id: str, document_id: str, actor: Actor,
                           notify: dict[str, Any] | None = None, plan: PlanDefaults | None = None) -> Document:
    """Bring back a replaced or deleted document: it is queued for indexing again (published after
    the caller commits) and, once indexed, takes the place of the version that is current now
    (which becomes `deleted`, and can itself be restored). Its uploader stays who it was; the
    restore is recorded as done by ``actor``."""
    repo = DocumentRepository(session, tenant_id)
    document = await repo.get(document_id)
    if document.status != DocumentStatus.deleted:
        raise AlreadyExists(f"{document.filename} is {document.status.value}: only a replaced or deleted document "
                            "can be restored")
    if document.original_deleted_at is not None:
        raise InvalidInput(f"{document.filename} cannot be restored: its original file was not kept (the tenant's "
                           "retention policy deletes files once indexed); upload the file again instead",
                           code="original_not_kept")
    current = await repo.current_version(document.source, document.filename, exclude_id=document.id)
    # back among what is stored (checked by its net change: it takes the current version's place)
    await usage.charge_upload(session, document=document, was_counted=False, replacing=current, defaults=plan,
                              upload=False)
    _queue_again(document, job_id=None)
    document.notify = notify
    document.indexed_at = None
    document.replaces_id = current.id if current is not None else None
    audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.restored, actor=actor, filename=document.filename,
                 document_id=document.id, replaced_document_id=document.replaces_id)
    stage(session, Envelope.new(DOCUMENT_UPLOADED, tenant_id=tenant_id, payload=DocumentUploaded(document_id=document.id),
                                correlation_id=context.correlation_id()), QUEUE_DOCUMENTS)
    return document


def refuse_upload(session: AsyncSession, *, tenant_id: str, actor: Actor, filenames: Sequence[str], why: str) -> None:
    """Record that ``actor`` was not allowed to add these files (nothing else is stored)."""
    for name in filenames:
        audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.refused, actor=actor, filename=name, detail=why)


@dataclass(frozen=True)
class Requeued:
    """What `requeue_all` did: the job (None when nothing was queued) and the failed documents it
    left alone: ``for_good`` (their last failure was for good: reason by document) and
    ``superseded`` (a newer version of the file exists; that one is re-indexed in their place)."""

    job: Job | None
    for_good: dict[str, str]
    superseded: list[Document]
    #: Indexed documents whose uploaded file was not kept (the tenant's retention policy): there is
    #: nothing to index again; their chunks stay as they are.
    not_kept: list[Document] = dataclasses.field(default_factory=list)

    def skipped_summary(self) -> str:
        """'skipped 8 that failed for good: no text (3), password-protected (3), … and 1 replaced by a newer
        version' ('' when none was skipped)."""
        parts = []
        if self.for_good:
            counts = collections.Counter(self.for_good.values())
            grouped = ", ".join(f"{why} ({n})" for why, n in counts.most_common(5)) + (", …" if len(counts) > 5 else "")
            parts.append(f"{len(self.for_good):,} that failed for good ({grouped}; upload new versions to retry them)")
        if self.superseded:
            parts.append(f"{len(self.superseded):,} failed old version(s) of files uploaded again since")
        if self.not_kept:
            parts.append(f"{len(self.not_kept):,} whose original file was not kept (the retention policy deletes "
                         "files once indexed; upload them again to re-index them)")
        return ("skipped " + " and ".join(parts)) if parts else ""


async def requeue_all(session: AsyncSession, *, tenant_id: str, reason: str) -> Requeued:
    """Re-index every live document of a tenant as one job (after an embedding model change).

    Each document goes back to `queued` and gets a fresh `document.uploaded`; the worker replaces
    its chunks in place (same deterministic ids), so the tenant stays searchable throughout. A
    failed document is retried only when that may help (`knowledge.retry`): not when its last
    failure was for good (a password-protected PDF, a file with no text: it would fail the same
    way and add a dead letter), nor when a newer version of the file was uploaded since.
    """
    repo = DocumentRepository(session, tenant_id)
    candidates = list((await session.execute(
        repo.select().where(Document.status.in_([DocumentStatus.indexed, DocumentStatus.failed]))
    )).scalars())
    not_kept = [d for d in candidates if d.original_deleted_at is not None]
    candidates = [d for d in candidates if d.original_deleted_at is None]
    superseded = [d for d in candidates if d.status == DocumentStatus.failed
                  and await retry.newest_version(session, d) is not None]
    for_good = await retry.failed_for_good_documents(session, tenant_id, [d for d in candidates if d not in superseded])
    left_out = set(for_good) | {d.id for d in superseded}
    documents = [d for d in candidates if d.id not in left_out]
    skipped = Requeued(None, {i: Failure(row.error_code, row.reason, False).human_reason() for i, row in for_good.items()},
                       superseded, not_kept)
    if not documents:
        return skipped
    job = await create_job(session, tenant_id=tenant_id, kind="reindex", description=reason, total=len(documents))
    for document in documents:
        _queue_again(document, job_id=job.id)
        document.notify = None
        await _add_job_item(session, tenant_id, job.id, document, already_done=False)
        stage(session, Envelope.new(DOCUMENT_UPLOADED, tenant_id=tenant_id,
                                    payload=DocumentUploaded(document_id=document.id)), QUEUE_DOCUMENTS)
    return Requeued(job, skipped.for_good, skipped.superseded, not_kept)


async def request_sync(session: AsyncSession, *, tenant_id: str, shop: str, reason: str = "manual",
                       notify: dict[str, Any] | None = None, correlation_id: str | None = None) -> Job:
    """Create a Shopify catalog sync's job (visible at once, total filled in by the worker) and stage
    ``catalog.sync_requested`` in the caller's unit of work (published after its commit)."""
    job = await create_job(session, tenant_id=tenant_id, kind=CATALOG_SYNC_JOB_KIND,
                           description=f"Shopify catalog sync of {shop} ({reason})", total=0, notify=notify)
    stage(session, Envelope.new(CATALOG_SYNC_REQUESTED, tenant_id=tenant_id,
                                payload=SyncRequested(shop=shop, job_id=job.id, reason=reason),
                                correlation_id=correlation_id), QUEUE_CATALOG)
    return job
