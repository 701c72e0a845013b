"""Queries on the knowledge base. Tenant-scoped repositories (the scoping lives in
:class:`parley.repository.TenantRepository`'s base statement) and two admin read-outs that read
every tenant on purpose (``parley status``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.models import Chunk, Document, DocumentStatus, Job, JobItem, JobItemStatus, JobStatus
from parley.repository import TenantRepository


class DocumentRepository(TenantRepository[Document]):
    model = Document
    noun = "document"
    label = "filename"

    async def by_sha(self, sha256: str) -> Document | None:
        return (await self.session.execute(self.select().where(Document.sha256 == sha256))).scalar_one_or_none()

    async def by_idempotency_key(self, key: str) -> Document | None:
        return (await self.session.execute(self.select().where(Document.idempotency_key == key))).scalar_one_or_none()

    async def current_version(self, source: str, filename: str, *, exclude_id: str | None = None) -> Document | None:
        stmt = self.select().where(
            Document.source == source,
            Document.filename == filename,
            Document.status.in_([DocumentStatus.indexed, DocumentStatus.queued, DocumentStatus.processing]),
        )
        if exclude_id:
            stmt = stmt.where(Document.id != exclude_id)
        return (await self.session.execute(stmt.order_by(Document.created_at.desc()).limit(1))).scalars().first()

    async def list(self, *, status: DocumentStatus | None = None, limit: int = 100) -> list[Document]:
        stmt = self.select().order_by(Document.created_at.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(Document.status == status)
        return list((await self.session.execute(stmt)).scalars())

    async def search(self, *, name: str = "", status: DocumentStatus | None = None, include_deleted: bool = False,
                     limit: int = 50, offset: int = 0) -> tuple[list[Document], int]:
        """A page of documents, newest first, whose name contains ``name`` (any case), and how many
        match in all. Deleted documents (replaced versions included) only when asked for, by
        ``include_deleted`` or ``status``."""
        where: list[Any] = []
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(Document.filename.ilike(f"%{escaped}%", escape="\\"))
        if status is not None:
            where.append(Document.status == status)
        elif not include_deleted:
            where.append(Document.status != DocumentStatus.deleted)
        total = (await self.session.execute(self.select(func.count()).select_from(Document).where(*where))).scalar_one()
        stmt = self.select().where(*where).order_by(Document.created_at.desc(), Document.id).limit(limit).offset(offset)
        return list((await self.session.execute(stmt)).scalars()), int(total)

    async def versions(self, document: Document, *, limit: int = 20) -> list[Document]:
        """Every version of the document, newest first: the ones it replaced (``replaces_id``, back
        in time) and the ones that replaced it."""
        newer: list[Document] = []
        current = document
        for _ in range(limit):
            stmt = self.select().where(Document.replaces_id == current.id).order_by(Document.created_at.desc()).limit(1)
            successor = (await self.session.execute(stmt)).scalars().first()
            if successor is None or successor in newer or successor is document:
                break
            newer.append(successor)
            current = successor
        older: list[Document] = []
        current = document
        for _ in range(limit):
            if not current.replaces_id:
                break
            predecessor = await self.find(current.replaces_id)
            if predecessor is None or predecessor in older or predecessor is document:
                break
            older.append(predecessor)
            current = predecessor
        return [*reversed(newer), document, *older]

    async def chunks(self, document_id: str, *, limit: int = 20) -> list[Chunk]:
        stmt = (select(Chunk).where(Chunk.tenant_id == self.tenant_id, Chunk.document_id == document_id)
                .order_by(Chunk.ordinal).limit(limit))
        return list((await self.session.execute(stmt)).scalars())

    async def blob_keys_in_use(self, keys: list[str]) -> set[str]:
        """Which of these blobs a document of the tenant points at (blobs are content-addressed:
        a file being discarded may be the same bytes as a document that must keep its blob)."""
        if not keys:
            return set()
        stmt = self.select(Document.blob_key).where(Document.blob_key.in_(keys))
        return set((await self.session.execute(stmt)).scalars())

    async def counts_by_status(self) -> dict[str, int]:
        stmt = self.select(Document.status, func.count()).group_by(Document.status)
        return {status.value: n for status, n in (await self.session.execute(stmt)).all()}


class JobRepository(TenantRepository[Job]):
    model = Job
    noun = "job"
    label = "description"

    async def list(self, *, limit: int = 50) -> list[Job]:
        return list((await self.session.execute(self.select().order_by(Job.created_at.desc()).limit(limit))).scalars())

    async def failed_items(self, job_id: str) -> list[JobItem]:
        stmt = (
            select(JobItem)
            .where(JobItem.tenant_id == self.tenant_id, JobItem.job_id == job_id, JobItem.status == JobItemStatus.failed)
            .order_by(JobItem.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def items_of(self, item_key: str, *, limit: int = 50) -> list[tuple[Job, JobItem]]:
        """The jobs an item (a document id) was part of, newest first, with its item in each."""
        stmt = (
            select(Job, JobItem)
            .join(JobItem, (JobItem.job_id == Job.id) & (JobItem.tenant_id == Job.tenant_id))
            .where(Job.tenant_id == self.tenant_id, JobItem.item_key == item_key)
            .order_by(Job.created_at.desc()).limit(limit)
        )
        return [(job, item) for job, item in (await self.session.execute(stmt)).all()]


async def documents_by_status(session: AsyncSession) -> dict[str, dict[str, int]]:
    """tenant id -> status -> count (an admin session: this reads every tenant on purpose)."""
    rows = (await session.execute(
        select(Document.tenant_id, Document.status, func.count()).group_by(Document.tenant_id, Document.status)
    )).all()
    out: dict[str, dict[str, int]] = {}
    for tenant_id, status, count in rows:
        out.setdefault(tenant_id, {})[getattr(status, "value", str(status))] = count
    return out


async def running_jobs(session: AsyncSession, limit: int = 50) -> list[dict[str, Any]]:
    """Jobs in progress, running or stalled (stalled first: `knowledge.stalls`), with the stall's reason."""
    jobs = (await session.execute(
        select(Job).where(Job.status.in_([JobStatus.running, JobStatus.stalled]))
        .order_by(Job.status.desc(), Job.created_at).limit(limit)
    )).scalars()
    return [{"id": j.id, "tenant_id": j.tenant_id, "kind": j.kind, "status": j.status.value, "done": j.done,
             "failed": j.failed, "total": j.total, "pending": max(0, j.total - j.done - j.failed),
             "reason": j.stall_detail, "stall_reason": j.stall_reason,
             "description": j.description, "started": j.created_at.isoformat(timespec="seconds") if j.created_at else None}
            for j in jobs]
