"""What the knowledge base stores, counted against the tenant's plan (`tenants.quotas`).

A document counts while it is not deleted (queued, processing, indexed or failed: its file is
stored either way) with its ``size_bytes``; its chunks count while their rows exist
(``chunk_count``); a product counts while it is not deleted. Each change of those is charged
here, in the unit of work that makes it, from the row's state in that transaction (never a blind
increment), so a redelivered message that changes nothing counts nothing:

* `charge_upload`: a new document, or one back from ``deleted`` (a re-upload, a restore); a new
  version is checked by its net change (the version it replaces stops counting once replaced);
* `charge_indexing`: a document's chunks written (and the version it replaces released);
* `release_document`: a document deleted or replaced;
* products: ``ingestion.catalog.service`` charges them through `tenants.quotas` directly.

:func:`stored` recomputes all four from the tables, :func:`recount` writes them into the counters
(`parley usage recount`), and the property test proves no drift arises.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.models import Chunk, Document, DocumentStatus, Product
from tenants import quotas
from tenants.quotas import PlanDefaults, QuotaExceeded


@dataclass(frozen=True)
class Stored:
    documents: int
    stored_bytes: int
    chunks: int
    products: int

    def as_dict(self) -> dict[str, int]:
        return {"documents": self.documents, "stored_bytes": self.stored_bytes, "chunks": self.chunks,
                "products": self.products}


def counts(document: Document) -> bool:
    return document.status != DocumentStatus.deleted


async def charge_upload(session: AsyncSession, *, document: Document, was_counted: bool, replacing: Document | None,
                        defaults: PlanDefaults | None, upload: bool) -> None:
    """Count a submitted document: +1 and its bytes unless it was counted already (a failed one
    queued again), one upload this hour when ``upload`` (the files of a ZIP ride on its upload).
    ``replacing``: the version it will replace, credited for the check."""
    credit = {}
    if replacing is not None and counts(replacing):
        credit = {"documents": 1, "stored_bytes": int(replacing.size_bytes)}
    await quotas.consume(session, tenant_id=document.tenant_id, defaults=defaults or PlanDefaults(),
                         what=document.filename, credit=credit,
                         documents=0 if was_counted else 1, stored_bytes=0 if was_counted else int(document.size_bytes),
                         uploads=1 if upload else 0)


async def release_document(session: AsyncSession, document: Document) -> None:
    """The document is about to become ``deleted``: give back what it held (call before changing it)."""
    if counts(document):
        await quotas.release(session, tenant_id=document.tenant_id, documents=1,
                             stored_bytes=int(document.size_bytes), chunks=int(document.chunk_count or 0))


async def check_indexing(session: AsyncSession, *, document: Document, chunks: int,
                         defaults: PlanDefaults | None) -> None:
    """Before embedding: would ``chunks`` sections for this document fit? (read only; see
    `charge_indexing`, which decides, locked)."""
    replaced = await _replaced(session, document)
    held = int(document.chunk_count or 0) + (int(replaced.chunk_count or 0) if replaced is not None else 0)
    await quotas.check(session, tenant_id=document.tenant_id, defaults=defaults or PlanDefaults(),
                       what=document.filename, chunks=chunks - held)


async def charge_indexing(session: AsyncSession, *, document: Document, chunks: int,
                          defaults: PlanDefaults | None) -> None:
    """The document's chunks are written now: lock the tenant's usage, read the document (and the
    version it replaces) as they are under the lock (a second copy of the message sees the first's
    work), and charge the net change; the replaced version's document and bytes are given back.
    `QuotaExceeded` when the chunks would pass the plan."""
    usage = await quotas.lock_usage(session, document.tenant_id)
    del usage  # held: everything below reads under it
    await session.refresh(document, attribute_names=["chunk_count", "status"])
    replaced = await _replaced(session, document)
    if replaced is not None:
        await session.refresh(replaced, attribute_names=["chunk_count", "status"])
    change: dict[str, int] = {"chunks": chunks - int(document.chunk_count or 0)}
    if replaced is not None and counts(replaced):
        change["chunks"] -= int(replaced.chunk_count or 0)
        change["documents"] = -1
        change["stored_bytes"] = -int(replaced.size_bytes)
    await quotas.consume(session, tenant_id=document.tenant_id, defaults=defaults or PlanDefaults(),
                         what=document.filename, **change)


async def _replaced(session: AsyncSession, document: Document) -> Document | None:
    if not document.replaces_id:
        return None
    stmt = select(Document).where(Document.tenant_id == document.tenant_id, Document.id == document.replaces_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def batch_refusal(session: AsyncSession, exc: QuotaExceeded, *, files: list[tuple[str, int]],
                        defaults: PlanDefaults | None) -> QuotaExceeded:
    """A refusal met part-way through an upload of several files, restated for the whole upload
    with the use as it is after the rollback ("...; 0 are stored, and these 3 files would add 3.")."""
    report = await quotas.usage_report(session, tenant_id=_tenant_of(session), defaults=defaults or PlanDefaults())
    used = next((r["used"] for r in report["resources"] if r["resource"] == exc.resource), exc.used)
    requested = {"documents": len(files), "uploads_per_hour": len(files),
                 "stored_bytes": sum(size for _, size in files)}.get(exc.resource, exc.requested)
    what = files[0][0] if len(files) == 1 else f"these {len(files)} files"
    return quotas.refusal(quotas.RESOURCES[exc.resource], limit=exc.limit, used=used, requested=requested, what=what)


def _tenant_of(session: AsyncSession) -> str:
    from parley.db import session_tenant

    tenant_id = session_tenant(session)
    if tenant_id is None:
        raise ValueError("batch_refusal needs a tenant-bound session")
    return tenant_id


async def stored(session: AsyncSession, tenant_id: str) -> Stored:
    """What the tenant stores, counted from the tables."""
    live = (Document.tenant_id == tenant_id, Document.status != DocumentStatus.deleted)
    documents, size = (await session.execute(
        select(func.count(), func.coalesce(func.sum(Document.size_bytes), 0)).select_from(Document).where(*live))).one()
    chunks = (await session.execute(select(func.count()).select_from(Chunk).where(Chunk.tenant_id == tenant_id))).scalar_one()
    products = (await session.execute(select(func.count()).select_from(Product).where(
        Product.tenant_id == tenant_id, Product.deleted.is_(False)))).scalar_one()
    return Stored(int(documents), int(size), int(chunks), int(products))


async def recount(session: AsyncSession, tenant_id: str) -> dict[str, tuple[int, int]]:
    """Repair drift: the counters of stored resources become what is stored (the usage row locked
    first, so nothing is charged between the count and the write). Returns what had drifted:
    resource -> (counted, stored)."""
    await quotas.lock_usage(session, tenant_id)
    now = await stored(session, tenant_id)
    return await quotas.set_stored(session, tenant_id=tenant_id, **now.as_dict())
