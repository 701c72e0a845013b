"""Indexing one document: sandboxed extraction -> chunking -> batched embedding -> vector index ->
chunk metadata -> status, job counters, notice, index version.

Order matters on the embedded (SQLite) default: the handler's session only *reads* until the
vector index has written in its own transaction, then writes the metadata, so two write
transactions never wait on each other. A worker killed anywhere in between leaves the message
unacked; the redelivery replaces the same deterministic chunk ids, so nothing is duplicated.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingestion.documents.chunking import Chunk as TextChunk
from ingestion.documents.chunking import chunk_document
from ingestion.documents.errors import ExtractionError
from ingestion.documents import archive
from ingestion.documents.sandbox import extract_document
from parley.blobs import BlobStore
from parley.bus import Envelope, Failure, Permanent, Retryable, stage
from parley.bus.contracts import NOTICE_REQUESTED, QUEUE_NOTIFICATIONS, NoticeRequested, stage_event
from parley.db import unit_of_work, utcnow
from parley.english import plural
from knowledge import audit, privacy, usage
from knowledge.audit import SYSTEM, Actor
from knowledge.models import KnowledgeAction
from knowledge.repository import DocumentRepository
from knowledge.service import finish_job_item, job_report
from parley.embeddings import Embedder
from parley.crypto import Expired, SecretBox
from parley.errors import NotFound, ParleyError
from knowledge.models import Chunk, Document, DocumentStatus
from parley.vectors import IndexItem, VectorIndex
from tenants import quotas
from tenants.quotas import PlanDefaults, QuotaExceeded
from tenants.repository import TenantDirectory
from tenants.retention import raw_files_mode

log = logging.getLogger(__name__)

CHUNK_NAMESPACE = uuid.UUID("6f1c7a52-3a8e-4d55-9a51-2a4f1d0c9b11")


@dataclass
class IndexingDeps:
    sessions: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    embedder: Embedder
    index: VectorIndex
    parse_time_limit_s: float = 60.0
    parse_memory_limit_mb: int = 768
    #: Python files the parser sandbox loads first (extra formats; `extract.register_format`).
    parser_plugins: tuple[str, ...] = ()
    #: Largest member of an uploaded ZIP archive that is queued as a document.
    max_member_bytes: int = 25 * 1024 * 1024
    #: Most bytes one archive may unpack to, every member together (PARLEY_ARCHIVE_MAX_UNPACKED_BYTES).
    max_archive_bytes: int = 100 * 1024 * 1024
    #: Opens the passwords that messages carry sealed (the platform's key, as the gateway's).
    box: SecretBox | None = None
    #: The plan limits of tenants without their own (PARLEY_PLAN_MAX_*): chunks, and an archive's files.
    plan: PlanDefaults | None = None
    #: What becomes of an uploaded file once indexed for tenants without their own retention
    #: setting (PARLEY_RETENTION_RAW_FILES): keep, or delete (`tenants.retention`).
    raw_files_default: str = "keep"


def chunk_id(tenant_id: str, document_id: str, ordinal: int) -> str:
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{tenant_id}/{document_id}/{ordinal}"))


#: How long a sealed password opens (a replay of an old dead letter must not reuse it forever; the
#: outbox forgets published messages after the same week).
PASSWORD_MAX_AGE_S = 7 * 24 * 3600


def open_password(deps: IndexingDeps, sealed: str | None) -> str | None:
    """The password a message carries sealed (`DocumentUploaded.sealed_password`), in the clear
    for the parser only; never logged. A password this worker cannot open, or one sealed more than
    `PASSWORD_MAX_AGE_S` ago, fails for good."""
    if not sealed:
        return None
    if deps.box is None:
        raise Permanent("the PDF's password cannot be read here (no secret key)", code="password_unreadable")
    try:
        return deps.box.decrypt(sealed, max_age=PASSWORD_MAX_AGE_S)
    except Expired as exc:
        raise Permanent("the PDF's password was given more than a week ago and is no longer kept; give it again "
                        "(retry with its password on the document's page)", code="password_expired") from exc
    except ParleyError as exc:
        raise Permanent("the PDF's password cannot be read (was PARLEY_SECRET_KEY changed?); give it again",
                        code="password_unreadable") from exc


async def remove_vectors(deps: IndexingDeps, session: AsyncSession, *, tenant_id: str, document_id: str) -> bool:
    """`document.deleted` (the dashboard deleted it): its vectors go, unless it was restored since."""
    document = await DocumentRepository(session, tenant_id).find(document_id)
    if document is not None and document.status != DocumentStatus.deleted:
        return False  # restored (queued again) meanwhile: its new indexing replaces the vectors
    await deps.index.delete_document(tenant_id, document_id)
    log.info("removed the vectors of a deleted document", extra={"document_id": document_id})
    return True


async def index_document(deps: IndexingDeps, session: AsyncSession, *, tenant_id: str, document_id: str,
                         password: str | None = None) -> int | None:
    """Index the document; returns its chunk count, or None when there was nothing to do.
    ``password`` opens a password-protected PDF."""
    repo = DocumentRepository(session, tenant_id)
    document = await repo.find(document_id)
    if document is None:
        raise Permanent(f"document {document_id} does not exist (deleted before it was indexed?)", code="not_found")
    if document.status in (DocumentStatus.indexed, DocumentStatus.deleted):
        return None  # a duplicate delivery, or deleted while queued

    # Compare-and-set, not read-then-write: a redelivered copy of this message (the broker requeues
    # unacked deliveries the moment a connection drops) can run while the first copy commits; setting
    # "processing" unconditionally would overwrite its "indexed", and the copy's own result is then
    # rolled back as a duplicate, leaving the document stuck (seen in tests/faults/test_broker_drop.py).
    async with unit_of_work(deps.sessions, tenant_id=tenant_id) as progress:
        claimed = await progress.execute(
            update(Document)
            .where(Document.tenant_id == tenant_id, Document.id == document_id,
                   Document.status.not_in([DocumentStatus.indexed, DocumentStatus.deleted]))
            .values(status=DocumentStatus.processing, attempts=Document.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    if claimed.rowcount == 0:
        return None  # indexed or deleted meanwhile, by another copy of this message

    started = time.perf_counter()
    try:
        data = await deps.blobs.read(tenant_id, document.blob_key)
    except NotFound as exc:
        if privacy.original_missing(document):
            raise Permanent(privacy.original_not_kept(document), code="original_not_kept") from exc
        raise Permanent(f"the uploaded file is missing from storage ({exc.message})", code="blob_missing") from exc
    if archive.is_archive(data):
        return await _expand(deps, session, document, data)
    try:
        extracted = await extract_document(
            data, filename=document.filename, declared_mime=document.mime_type,
            time_limit_s=deps.parse_time_limit_s, memory_limit_mb=deps.parse_memory_limit_mb, plugins=deps.parser_plugins,
            password=password,
        )
    except ExtractionError as exc:
        cls = Retryable if exc.retryable else Permanent
        raise cls(exc.message, code=exc.code) from exc
    chunks = chunk_document(extracted)
    if not chunks:
        raise Permanent("document has no text", code="no_text")
    try:  # past the plan's chunks: fail for good before embedding, with nothing indexed
        await usage.check_indexing(session, document=document, chunks=len(chunks), defaults=deps.plan)
    except QuotaExceeded:
        if not document.chunk_count:  # vectors of an earlier attempt that lost the race below
            await deps.index.delete_document(tenant_id, document.id)
        raise
    parsed = time.perf_counter()

    vectors = await deps.embedder.embed_documents([c.embedding_text() for c in chunks])
    embedded = time.perf_counter()
    title = extracted.title or document.filename
    items = [_item(tenant_id, document, c, vectors[i], title) for i, c in enumerate(chunks)]
    await deps.index.ensure_tenant(tenant_id)
    await deps.index.replace_document(tenant_id, document.id, items)
    if document.replaces_id:
        await deps.index.delete_document(tenant_id, document.replaces_id)

    # --- metadata, in the consumer's unit of work (committed before the ack) -------------
    try:  # the chunks charged to the plan, locked: the check above may have raced another document
        await usage.charge_indexing(session, document=document, chunks=len(chunks), defaults=deps.plan)
    except QuotaExceeded as exc:
        # Lost the race: try again, when the early check refuses (and removes these vectors)
        # without the lock held here, which the vector index's writes would wait for on SQLite.
        raise Retryable(f"{exc.message} (checked again)", code="quota_recheck") from exc
    await session.execute(delete(Chunk).where(Chunk.tenant_id == tenant_id, Chunk.document_id == document.id))
    session.add_all(
        Chunk(
            id=item.id, tenant_id=tenant_id, document_id=document.id, ordinal=c.ordinal,
            heading_path=list(c.heading_path), text=c.text, token_count=c.token_estimate, content_hash=c.content_hash,
        )
        for item, c in zip(items, chunks, strict=True)
    )
    if document.replaces_id:
        old = await repo.find(document.replaces_id)
        if old is not None and old.status != DocumentStatus.deleted:
            await session.execute(delete(Chunk).where(Chunk.tenant_id == tenant_id, Chunk.document_id == old.id))
            old.status = DocumentStatus.deleted
            old.chunk_count = 0
            # In the audit log with the change: whoever queued this version (its uploader, or who
            # restored it) replaced the old one.
            by = (await audit.KnowledgeEventRepository(session, tenant_id).queued_by(document.id)
                  or Actor.from_json(document.uploader) or SYSTEM)
            audit.record(session, tenant_id=tenant_id, action=KnowledgeAction.replaced, actor=by,
                         filename=document.filename, document_id=document.id, replaced_document_id=old.id)
    document.status = DocumentStatus.indexed
    document.chunk_count = len(chunks)
    document.error = document.error_code = None
    document.mime_type = extracted.mime_type
    document.indexed_at = utcnow()
    directory = TenantDirectory(session)
    await directory.bump_index_version(tenant_id)
    tenant = await directory.by_id(tenant_id)
    if tenant is not None and (tenant.embedding_model, tenant.embedding_dimension) != (deps.embedder.model_id, deps.embedder.dimension):
        # The model the tenant's index is built with; `parley reindex` rebuilds after a change.
        tenant.embedding_model = deps.embedder.model_id
        tenant.embedding_dimension = deps.embedder.dimension
    await _notify(session, document, ok=True, text=f"indexed {document.filename} ({plural(len(chunks), 'section')})")
    await _apply_retention(deps, session, document)
    log.info(
        "indexed document",
        extra={"document_id": document.id, "chunks": len(chunks), "parse_ms": round((parsed - started) * 1000),
               "embed_ms": round((embedded - parsed) * 1000), "bytes": len(data)},
    )
    return len(chunks)


async def _expand(deps: IndexingDeps, session: AsyncSession, document: Document, data: bytes) -> int:
    """An uploaded ZIP: its members become documents of one job; the archive itself ends indexed."""
    limits = archive.ArchiveLimits(max_member_bytes=deps.max_member_bytes, max_total_bytes=deps.max_archive_bytes,
                                   time_limit_s=deps.parse_time_limit_s)
    queued, skipped = await archive.expand_archive(session, deps.blobs, document, data, limits=limits, plan=deps.plan)
    document.status = DocumentStatus.indexed
    document.chunk_count = 0
    document.error = document.error_code = None
    document.mime_type = archive.ZIP_MIME
    document.indexed_at = utcnow()
    await _apply_retention(deps, session, document)
    text = f"unpacked {document.filename}: {plural(queued, 'file')} queued for indexing"
    if skipped:
        text += f"; skipped {len(skipped):,}: " + "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
    if document.notify:  # the job (its own, or the upload's it joined) reports the members
        stage(session, Envelope.new(NOTICE_REQUESTED, tenant_id=document.tenant_id, payload=NoticeRequested(
            text=text, target=document.notify, document_id=document.id, kind="unpacked")), QUEUE_NOTIFICATIONS)
    log.info("unpacked archive", extra={"document_id": document.id, "members": queued, "skipped": len(skipped)})
    return 0


async def _apply_retention(deps: IndexingDeps, session: AsyncSession, document: Document) -> None:
    """The tenant keeps only chunks: the uploaded file goes once this indexing commits."""
    if await raw_files_mode(session, tenant_id=document.tenant_id, default=deps.raw_files_default) == "delete":
        privacy.discard_original(session, deps.blobs, document)


async def mark_failed(session: AsyncSession, envelope: Envelope, failure: Failure) -> None:
    """Dead-letter hook: the document ends `failed` with a reason a person understands."""
    tenant_id = envelope.tenant_id or ""
    document_id = str(envelope.payload.get("document_id", ""))
    document = await DocumentRepository(session, tenant_id).find(document_id)
    if document is None or document.status in (DocumentStatus.indexed, DocumentStatus.deleted):
        return
    reason = failure.human_reason()
    document.status = DocumentStatus.failed
    document.error_code = failure.code
    document.error = reason
    if failure.code == QuotaExceeded.code:  # announced once an hour (the refused unit of work was rolled back)
        await quotas.note_refusal_in(session, tenant_id=tenant_id, resource=quotas.resource_in(reason),
                                     data={"document_id": document.id, "detail": reason})
    # Two copies of one message can fail at the same time (a duplicate delivery): both run this hook.
    # The notice's idempotency key is the message's, so the person is told once.
    await _notify(session, document, ok=False, text=f"could not index {document.filename}: {reason}",
                  error_code=failure.code, error=reason, idempotency_key=f"document-failed:{envelope.id}")


async def _notify(session: AsyncSession, document: Document, *, ok: bool, text: str,
                  error_code: str | None = None, error: str | None = None, idempotency_key: str | None = None) -> None:
    tenant_id = document.tenant_id
    # the tenant's webhooks: ids and metadata only, never the document's text
    data = {"document_id": document.id, "filename": document.filename, "job_id": document.job_id}
    if ok:
        stage_event(session, tenant_id=tenant_id, event_type="document.indexed",
                    idempotency_key=f"document-indexed:{document.id}",
                    data={**data, "chunks": document.chunk_count, "mime_type": document.mime_type})
    else:
        stage_event(session, tenant_id=tenant_id, event_type="document.failed",
                    idempotency_key=f"document-failed:{document.id}:{idempotency_key or ''}",
                    data={**data, "error_code": error_code, "error": error})
    if document.job_id:
        job = await finish_job_item(session, tenant_id=tenant_id, job_id=document.job_id, item_key=document.id,
                                    ok=ok, error_code=error_code, error=error)
        if job is not None and job.notify:
            report = await job_report(session, job)
            stage(session, Envelope.new(NOTICE_REQUESTED, tenant_id=tenant_id, payload=NoticeRequested(
                text=report, target=job.notify, job_id=job.id, kind="job_done")), QUEUE_NOTIFICATIONS)
    # Items of a bulk job carry no notify of their own: they speak through the job's report.
    if document.notify:
        stage(session, Envelope.new(NOTICE_REQUESTED, tenant_id=tenant_id, payload=NoticeRequested(
            text=text, target=document.notify, document_id=document.id, kind="indexed" if ok else "failed"),
            idempotency_key=idempotency_key), QUEUE_NOTIFICATIONS)


def _item(tenant_id: str, document: Document, chunk: TextChunk, vector, title: str) -> IndexItem:  # type: ignore[no-untyped-def]
    return IndexItem(
        id=chunk_id(tenant_id, document.id, chunk.ordinal),
        document_id=document.id,
        text=chunk.text,
        vector=vector,
        kind="document",
        title=title,
        heading_path=list(chunk.heading_path),
        metadata={"filename": document.filename, "ordinal": chunk.ordinal},
    )
