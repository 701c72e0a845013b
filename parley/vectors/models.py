"""Tables of the embedded vector index: the source of truth that workers write and readers follow.

``vector_tenant`` is one row per tenant: its ``generation`` (new whenever the tenant's index is
created again after ``delete_tenant``, so a reader's snapshot of an older incarnation is never
reused) and ``last_seq``, the tenant's change sequence. Every write transaction bumps ``last_seq``
by one with an UPDATE; the row lock that UPDATE takes is held until commit, so the writers of one
tenant commit in sequence order and a reader that has applied everything up to ``last_seq`` can
never later find a smaller sequence committing behind it (PostgreSQL would otherwise commit
sequence values out of order; SQLite has one writer at a time anyway).

``vector_entry`` is the latest version of every chunk. All rows written by one transaction carry
that transaction's ``seq``, which is how a reader applies a replace atomically. A delete leaves a
tombstone (``deleted``, no vector, no text) so readers that follow the sequence see it.

There is no foreign key to ``tenant``: the index is a store behind an interface whose other
implementation is a Weaviate server, and removing a tenant goes through ``delete_tenant`` for both.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, UTCDateTime, utcnow


class VectorTenant(TenantOwned, TimestampMixin, Base):
    __tablename__ = "vector_tenant"

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    generation: Mapped[str] = mapped_column(String(32))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    dimension: Mapped[int | None] = mapped_column(Integer)


class VectorEntry(TenantOwned, Base):
    __tablename__ = "vector_entry"
    __table_args__ = (
        Index("ix_vector_entry_tenant_seq", "tenant_id", "seq"),
        Index("ix_vector_entry_tenant_document", "tenant_id", "document_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the caller's uuid5
    document_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text, default="")
    text: Mapped[str] = mapped_column(Text, default="")
    heading_path: Mapped[list[str]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)  # little-endian float32; None on tombstones
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    seq: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
