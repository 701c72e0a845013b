"""Deleting a tenant: every row of it in every table, its files, its vectors, its queued work.

Every table with a ``tenant_id`` column is emptied of the tenant's rows, children first (the order
of `Base.metadata.sorted_tables`, reversed), whether or not its foreign key cascades: the tables
of the bus (outbox, pending and dead-lettered messages) and of the embedded vector index carry a
tenant id without a foreign key on purpose, and deleting explicitly does not depend on SQLite's
``foreign_keys`` pragma. The caller must have imported every model module (`cli.migrations
.load_models`), so the metadata holds the whole schema. Then the tenant's blob directory goes, and
its Weaviate tenant when that backend is used (the embedded index's rows are among the tables).

Messages of the tenant already in RabbitMQ are dropped by the consumers when they arrive
(`parley.bus.Consumer`'s ``tenant_exists`` check: acked and logged, no dead letter). The answer
cache of the retrieval service is keyed by the tenant's index version and its tenant row is cached
for seconds: entries of a deleted tenant are never served again and age out with their TTL.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from parley.blobs import BlobStore
from parley.db import Base, bind_admin
from tenants.models import Tenant
from tenants.repository import TenantDirectory


async def tenant_exists(session: AsyncSession, tenant_id: str) -> bool:
    """For consumers: is the message's tenant still there?"""
    return (await session.execute(select(Tenant.id).where(Tenant.id == tenant_id))).first() is not None


@dataclass
class TenantDeletion:
    tenant_id: str
    name: str
    dry_run: bool
    #: table -> rows of the tenant (removed, or that would be)
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    vector_files: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "name": self.name, "dry_run": self.dry_run, "rows": self.rows,
                "total_rows": sum(self.rows.values()), "files": self.files, "vector_files": self.vector_files}


def tenant_tables() -> list[Any]:
    """Every table with a tenant_id column (the tenant table itself last), children first."""
    return [t for t in reversed(Base.metadata.sorted_tables) if "tenant_id" in t.c and t.name != "tenant"]


def _count_files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


async def delete_tenant(session: AsyncSession, *, tenant_id: str, blobs: BlobStore, index: Any | None = None,
                        vector_dir: Path | None = None, dry_run: bool = False) -> TenantDeletion:
    """Delete the tenant (see the module) in the caller's unit of work; the files go after the rows
    are deleted, before the caller commits (a failed commit leaves rows without files, and running
    the deletion again finishes it). ``vector_dir``: the embedded index's snapshot directory."""
    bind_admin(session)
    tenant = await TenantDirectory(session).resolve(tenant_id)
    report = TenantDeletion(tenant.id, tenant.name, dry_run)
    for table in tenant_tables():
        n = int((await session.execute(select(func.count()).select_from(table).where(table.c.tenant_id == tenant.id)))
                .scalar_one())
        if n:
            report.rows[table.name] = n
    blob_dir = blobs.root / tenant.id
    report.files = await asyncio.to_thread(_count_files, blob_dir)
    snapshots = vector_dir / tenant.id if vector_dir is not None else None
    report.vector_files = await asyncio.to_thread(_count_files, snapshots) if snapshots else 0
    if dry_run:
        return report
    for table in tenant_tables():
        await session.execute(delete(table).where(table.c.tenant_id == tenant.id))
    await session.execute(delete(Tenant).where(Tenant.id == tenant.id).execution_options(synchronize_session=False))
    report.rows["tenant"] = 1
    if index is not None and getattr(index, "store", None) is None:  # Weaviate: its own tenant
        await index.delete_tenant(tenant.id)
    await asyncio.to_thread(shutil.rmtree, blob_dir, True)
    # pass-through uploads waiting for the worker, sealed (`passthrough.store.DIRNAME`)
    await asyncio.to_thread(shutil.rmtree, blobs.root / ".passthrough" / tenant.id, True)
    if snapshots is not None:
        await asyncio.to_thread(shutil.rmtree, snapshots, True)
    return report
