"""SQL side of the embedded index: writes (one transaction per call) and the change feed readers follow.

:class:`VectorStore` works inside a session the caller owns, so an ingestion consumer can write its
``chunk`` rows and the vectors in the same transaction; :class:`~parley.vectors.embedded.EmbeddedVectorIndex`
wraps each call in its own unit of work. Every statement is scoped by the store's tenant, and the
session is bound to that tenant too (``parley.db`` filters and refuses un-scoped ORM statements).

Write transactions start with a write (the counter upsert), never a read: on SQLite a transaction
that reads first and writes later can fail with SQLITE_BUSY_SNAPSHOT instead of waiting for the lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from parley.db import bind_tenant, new_id, session_tenant, utcnow
from parley.errors import InvalidInput, TenantScopeError
from parley.vectors.base import IndexItem, check_tenant
from parley.vectors.models import VectorEntry, VectorTenant

VECTOR_DTYPE = np.dtype("<f4")
_BATCH = 500  # rows per statement: far below SQLite's and asyncpg's bind-parameter limits
_CHANGE_COLUMNS = (
    VectorEntry.id,
    VectorEntry.seq,
    VectorEntry.deleted,
    VectorEntry.document_id,
    VectorEntry.kind,
    VectorEntry.title,
    VectorEntry.text,
    VectorEntry.heading_path,
    VectorEntry.meta,
    VectorEntry.vector,
)


@dataclass(frozen=True)
class Head:
    """Where a tenant's change feed stands."""

    generation: str
    last_seq: int
    dimension: int | None


@dataclass(frozen=True)
class Change:
    """One row of the change feed: the latest version of an entry, or its tombstone."""

    id: str
    seq: int
    deleted: bool
    document_id: str
    kind: str
    title: str
    text: str
    heading_path: list[str]
    metadata: dict[str, Any]
    vector: np.ndarray | None

    @classmethod
    def from_row(cls, row: Any) -> Change:
        vector = None if row.deleted or row.vector is None else np.frombuffer(row.vector, dtype=VECTOR_DTYPE)
        return cls(
            row.id, row.seq, bool(row.deleted), row.document_id, row.kind, row.title or "", row.text or "",
            list(row.heading_path or []), dict(row.meta or {}), vector,
        )


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _chunks(seq: Sequence[Any], size: int = _BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


class VectorStore:
    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        check_tenant(tenant_id)
        bound = session_tenant(session)
        if bound is None:
            bind_tenant(session, tenant_id)
        elif bound != tenant_id:
            raise TenantScopeError(f"session is bound to tenant {bound}, vector store asked for {tenant_id}")
        self.session = session
        self.tenant_id = tenant_id

    # --- writes --------------------------------------------------------------------------

    async def ensure_tenant(self) -> None:
        await self._create_counter()

    async def upsert(self, items: Sequence[IndexItem]) -> None:
        if not items:
            return
        seq = await self._next_seq(items[0].vector.shape[0])
        await self._write_rows(items, seq)

    async def replace_document(self, document_id: str, items: Sequence[IndexItem]) -> None:
        """Tombstone the document's chunks that ``items`` no longer contain, upsert ``items``: one seq."""
        seq = await self._next_seq(items[0].vector.shape[0] if items else None)
        existing = await self.session.execute(
            select(VectorEntry.id).where(
                VectorEntry.tenant_id == self.tenant_id,
                VectorEntry.document_id == document_id,
                VectorEntry.deleted.is_(False),
            )
        )
        keep = {item.id for item in items}
        stale = [row.id for row in existing if row.id not in keep]
        for batch in _chunks(stale):
            await self._tombstone(VectorEntry.id.in_(batch), seq)
        await self._write_rows(items, seq)

    async def delete_document(self, document_id: str) -> int:
        seq = await self._next_seq(None)
        return await self._tombstone(VectorEntry.document_id == document_id, seq)

    async def delete_tenant(self) -> None:
        """Every row of the tenant goes, counter included: readers drop their index and snapshot."""
        await self._next_seq(None)  # waits for the tenant's in-flight writers, then holds them off
        for model in (VectorEntry, VectorTenant):
            await self.session.execute(
                delete(model).where(model.tenant_id == self.tenant_id).execution_options(synchronize_session=False)
            )

    # --- reads ---------------------------------------------------------------------------

    async def count(self) -> int:
        result = await self.session.execute(
            select(func.count()).select_from(VectorEntry).where(
                VectorEntry.tenant_id == self.tenant_id, VectorEntry.deleted.is_(False)
            )
        )
        return int(result.scalar_one())

    async def head(self) -> Head | None:
        row = (
            await self.session.execute(
                select(VectorTenant.generation, VectorTenant.last_seq, VectorTenant.dimension).where(
                    VectorTenant.tenant_id == self.tenant_id
                )
            )
        ).one_or_none()
        return None if row is None else Head(row.generation, int(row.last_seq), row.dimension)

    async def changes(self, after: int, upto: int, max_rows: int) -> tuple[list[Change], int]:
        """The changes with ``after < seq <= end`` and ``end``, cut at a transaction boundary so that
        a round holds at most ``max_rows`` rows unless one transaction alone is larger."""
        base = (VectorEntry.tenant_id == self.tenant_id, VectorEntry.seq > after, VectorEntry.seq <= upto)
        cut = (
            await self.session.execute(
                select(VectorEntry.seq).where(*base).order_by(VectorEntry.seq).offset(max_rows).limit(1)
            )
        ).scalar_one_or_none()
        end = upto if cut is None else (cut - 1 if cut - 1 > after else cut)
        result = await self.session.execute(
            select(*_CHANGE_COLUMNS)
            .where(VectorEntry.tenant_id == self.tenant_id, VectorEntry.seq > after, VectorEntry.seq <= end)
            .order_by(VectorEntry.seq)
        )
        return [Change.from_row(row) for row in result], end

    # --- internals -----------------------------------------------------------------------

    async def _create_counter(self) -> None:
        insert = _insert(self.session)
        await self.session.execute(
            insert(VectorTenant)
            .values(tenant_id=self.tenant_id, generation=new_id(), last_seq=0, dimension=None)
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )

    async def _next_seq(self, dimension: int | None) -> int:
        """Bump the tenant's sequence; the row lock it takes serialises the tenant's writers until commit."""
        for _ in range(3):
            await self._create_counter()
            row = (
                await self.session.execute(
                    update(VectorTenant)
                    .where(VectorTenant.tenant_id == self.tenant_id)
                    .values(last_seq=VectorTenant.last_seq + 1, updated_at=utcnow())
                    .returning(VectorTenant.last_seq, VectorTenant.dimension)
                    .execution_options(synchronize_session=False)
                )
            ).one_or_none()
            if row is not None:
                break
            # a concurrent delete_tenant removed the counter between our insert and update: again
        else:  # pragma: no cover - needs three deletes racing one write
            raise InvalidInput(f"tenant {self.tenant_id} is being deleted concurrently")
        if dimension is not None:
            if row.dimension is None:
                await self.session.execute(
                    update(VectorTenant)
                    .where(VectorTenant.tenant_id == self.tenant_id)
                    .values(dimension=dimension)
                    .execution_options(synchronize_session=False)
                )
            elif row.dimension != dimension:
                raise InvalidInput(
                    f"tenant {self.tenant_id}'s index holds {row.dimension}-d vectors, got {dimension}-d; "
                    "delete the tenant's index and reindex to change the embedding model"
                )
        return int(row.last_seq)

    async def _write_rows(self, items: Sequence[IndexItem], seq: int) -> None:
        """Upsert; a row whose content is unchanged keeps its old seq, so a redelivered job costs readers nothing."""
        if not items:
            return
        insert = _insert(self.session)(VectorEntry)
        stmt = insert.on_conflict_do_update(
            index_elements=["tenant_id", "id"],
            set_={
                name: insert.excluded[name]
                for name in ("document_id", "kind", "title", "text", "heading_path", "meta", "vector",
                             "content_hash", "seq", "deleted", "updated_at")
            },
            where=or_(VectorEntry.deleted.is_(True), VectorEntry.content_hash != insert.excluded.content_hash),
        )
        now = utcnow()
        rows = [
            {
                "tenant_id": self.tenant_id,
                "id": item.id,
                "document_id": item.document_id,
                "kind": item.kind,
                "title": item.title,
                "text": item.text,
                "heading_path": list(item.heading_path),
                "meta": dict(item.metadata),
                "vector": item.vector.astype(VECTOR_DTYPE, copy=False).tobytes(),
                "content_hash": item.content_hash(),
                "seq": seq,
                "deleted": False,
                "updated_at": now,
            }
            for item in items
        ]
        for batch in _chunks(rows):
            await self.session.execute(stmt, list(batch))

    async def _tombstone(self, condition: Any, seq: int) -> int:
        result = await self.session.execute(
            update(VectorEntry)
            .where(VectorEntry.tenant_id == self.tenant_id, VectorEntry.deleted.is_(False), condition)
            # A tombstone keeps its id and document only: no text, title, headings or metadata of
            # what was deleted stays behind (an erasure must leave nothing of it: bot.privacy).
            .values(deleted=True, seq=seq, vector=None, text="", title="", heading_path=[], meta={}, content_hash="",
                    updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)


async def heads(session: AsyncSession, tenant_ids: Sequence[str]) -> dict[str, Head]:
    """Heads of many tenants in one query (the reader's periodic check); needs an admin-bound session."""
    found: dict[str, Head] = {}
    for batch in _chunks(list(tenant_ids)):
        result = await session.execute(
            select(VectorTenant.tenant_id, VectorTenant.generation, VectorTenant.last_seq, VectorTenant.dimension).where(
                VectorTenant.tenant_id.in_(batch)
            )
        )
        for row in result:
            found[row.tenant_id] = Head(row.generation, int(row.last_seq), row.dimension)
    return found
