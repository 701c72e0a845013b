"""Privacy in the knowledge base: erasing the documents one person uploaded, and the files a
tenant does not keep after indexing.

- :func:`erase_documents` removes documents everywhere, for the erasure of the person who uploaded
  them (`bot.privacy.erasure`): their vectors (directly through the index given, or through the
  document worker's ``document.deleted``), chunks, uploaded file and the row itself. The knowledge
  history keeps that a document was deleted, and when, but not what or by whom: its file name
  becomes ``[erased]`` in the history and in job reports, and :func:`scrub_actor` replaces the
  person's id in every history row they made with ``[erased]`` (the channel stays, so the history
  still reads "a Slack user added a document; it was erased").
- :func:`discard_original` deletes an indexed document's uploaded file under a retention policy of
  ``delete`` (`tenants.retention`): the row and its chunks stay, ``original_deleted_at`` says the
  original was not kept, and re-indexing it explains that instead of failing on a missing file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, event, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.audit import Actor
from knowledge.models import Chunk, Document, DocumentStatus, JobItem, KnowledgeEvent
from knowledge.repository import DocumentRepository
from knowledge.service import _mark_deleted
from parley.blobs import BlobStore
from parley.bus import Envelope, stage
from parley.bus.contracts import DOCUMENT_DELETED, QUEUE_DOCUMENTS, DocumentDeleted
from parley.db import utcnow
from parley.errors import NotFound

#: What an erased name or id reads as wherever a record of the change stays.
ERASED = "[erased]"
#: The actor of an erasure in the knowledge history.
ERASURE = Actor("system", "erasure", may_replace=True)


def original_not_kept(document: Document) -> str:
    """Why a document cannot be indexed again from its own file, for a person."""
    when = document.original_deleted_at.date().isoformat() if document.original_deleted_at else "after indexing"
    return (f"the original of {document.filename} was not kept (the tenant's retention policy deletes uploaded "
            f"files once indexed; deleted {when}): upload the file again to re-index it")


def original_missing(document: Document) -> bool:
    return document.original_deleted_at is not None


async def uploaded_by(session: AsyncSession, *, tenant_id: str, channel: str, user_id: str) -> list[Document]:
    """Every document (any status) this person uploaded, as recorded in its ``uploader``."""
    repo = DocumentRepository(session, tenant_id)
    rows = (await session.execute(repo.select().where(Document.uploader.is_not(None)))).scalars()
    return [d for d in rows if isinstance(d.uploader, dict)
            and (str(d.uploader.get("channel")), str(d.uploader.get("id"))) == (channel, user_id)]


async def erase_documents(session: AsyncSession, *, tenant_id: str, documents: Sequence[Document], index: Any | None,
                          blobs: BlobStore) -> dict[str, int]:
    """Remove these documents everywhere (see the module). ``index`` None (the gateway has no vector
    index): ``document.deleted`` is staged for the document worker, which removes the vectors after
    the caller commits. Returns counts: documents, chunks, vectors (removed now; None-index: queued),
    files."""
    counts = {"documents": 0, "chunks": 0, "vectors": 0, "vectors_queued": 0, "files": 0}
    for document in documents:
        counts["chunks"] += len(list((await session.execute(
            select(Chunk.id).where(Chunk.tenant_id == tenant_id, Chunk.document_id == document.id))).scalars()))
        in_flight = document.status in (DocumentStatus.queued, DocumentStatus.processing)
        if index is not None:
            counts["vectors"] += await _delete_vectors(session, index, tenant_id, document.id)
        if index is None or in_flight:  # a worker indexing it right now would write its vectors back
            stage(session, Envelope.new(DOCUMENT_DELETED, tenant_id=tenant_id,
                                        payload=DocumentDeleted(document_id=document.id)), QUEUE_DOCUMENTS)
            counts["vectors_queued"] += 1
        if document.status != DocumentStatus.deleted:
            await _mark_deleted(session, document, actor=ERASURE)
        if document.original_deleted_at is None and await _delete_blob(blobs, tenant_id, document.blob_key):
            counts["files"] += 1
        await session.execute(
            update(KnowledgeEvent)
            .where(KnowledgeEvent.tenant_id == tenant_id,
                   (KnowledgeEvent.document_id == document.id) | (KnowledgeEvent.replaced_document_id == document.id))
            .values(filename=ERASED).execution_options(synchronize_session=False))
        await session.execute(
            update(JobItem).where(JobItem.tenant_id == tenant_id, JobItem.item_key == document.id)
            .values(label=ERASED).execution_options(synchronize_session=False))
        await session.execute(
            update(Document).where(Document.tenant_id == tenant_id, Document.replaces_id == document.id)
            .values(replaces_id=None).execution_options(synchronize_session=False))
        await session.execute(delete(Chunk).where(Chunk.tenant_id == tenant_id, Chunk.document_id == document.id))
        await session.execute(delete(Document).where(Document.tenant_id == tenant_id, Document.id == document.id)
                              .execution_options(synchronize_session=False))
        session.expunge(document)
        counts["documents"] += 1
    return counts


async def _delete_vectors(session: AsyncSession, index: Any, tenant_id: str, document_id: str) -> int:
    """The embedded index writes in the caller's transaction (SQLite has one writer at a time: a
    second connection would wait for this one); Weaviate through its own client."""
    store = getattr(index, "store", None)
    if store is not None:
        return int(await store(session, tenant_id).delete_document(document_id) or 0)
    return int(await index.delete_document(tenant_id, document_id) or 0)


async def _delete_blob(blobs: BlobStore, tenant_id: str, key: str) -> bool:
    try:
        path = blobs.path_of(tenant_id, key)
    except NotFound:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        return True
    return False


async def scrub_actor(session: AsyncSession, *, tenant_id: str, channel: str, user_id: str) -> int:
    """Replace this person's id with ``[erased]`` in every knowledge history row they made."""
    result = await session.execute(
        update(KnowledgeEvent)
        .where(KnowledgeEvent.tenant_id == tenant_id, KnowledgeEvent.actor_channel == channel,
               KnowledgeEvent.actor_id == user_id)
        .values(actor_id=ERASED, detail=None).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)


def discard_original(session: AsyncSession, blobs: BlobStore, document: Document) -> bool:
    """Mark an indexed document's uploaded file as not kept and delete it once the caller commits
    (deleting before would leave a document that failed to commit without its file). False when
    there was nothing to do."""
    if document.status != DocumentStatus.indexed or document.original_deleted_at is not None:
        return False
    document.original_deleted_at = utcnow()
    try:
        path = blobs.path_of(document.tenant_id, document.blob_key)
    except NotFound:
        return True  # already gone: marking it is all there is to do

    def unlink(_session: Any) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    event.listen(session.sync_session, "after_commit", unlink, once=True)
    return True


async def discard_kept_originals(session: AsyncSession, blobs: BlobStore, *, tenant_id: str) -> int:
    """The retention sweep's part for a tenant whose policy is ``delete``: every indexed document
    whose file is still kept (indexed before the policy changed, or a worker missed it)."""
    repo = DocumentRepository(session, tenant_id)
    rows = list((await session.execute(repo.select().where(
        Document.status == DocumentStatus.indexed, Document.original_deleted_at.is_(None)))).scalars())
    return sum(1 for document in rows if discard_original(session, blobs, document))
