"""The knowledge base's tables: documents and their chunks, bulk jobs and their items, catalog products.

The gateway creates documents, the workers index them and the retrieval service cites them; none
of those packages may import another, so the tables live here, in the domain they share.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, UTCDateTime, new_id, utcnow


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK constraint: portable across SQLite and PostgreSQL.
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class DocumentStatus(str, enum.Enum):
    queued = "queued"
    processing = "processing"
    indexed = "indexed"
    failed = "failed"
    deleted = "deleted"


class Document(TenantOwned, TimestampMixin, Base):
    __tablename__ = "document"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        UniqueConstraint("tenant_id", "sha256"),
        Index("ix_document_tenant_status", "tenant_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # slack / instagram / web / cli / api
    filename: Mapped[str] = mapped_column(String(512))
    mime_type: Mapped[str | None] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(256))
    status: Mapped[DocumentStatus] = mapped_column(_enum(DocumentStatus, "document_status"), default=DocumentStatus.queued)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("job.id", ondelete="SET NULL"), index=True)
    # Where progress notices go (channel kind, conversation, user), as the gateway recorded it.
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A document uploaded again under the same name with new content replaces this one.
    replaces_id: Mapped[str | None] = mapped_column(String(32))
    #: Who sent it: ``{"channel", "id", "may_replace"}`` (`knowledge.audit.Actor`); a new version
    #: from someone else is refused unless they may replace (None: before uploaders were recorded).
    uploader: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    indexed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: When the uploaded file itself was deleted after indexing (the tenant's retention policy,
    #: `tenants.retention`): the chunks answer, but re-indexing needs the file uploaded again.
    original_deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Chunk(TenantOwned, Base):
    """Chunk metadata: what a citation needs. Vectors live in the vector index under the same id."""

    __tablename__ = "chunk"
    __table_args__ = (UniqueConstraint("document_id", "ordinal"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid5(tenant, document, ordinal)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[str] = mapped_column(String(32), ForeignKey("document.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[list[str]] = mapped_column(JSON, default=list)
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer, default=0)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JobStatus(str, enum.Enum):
    running = "running"
    #: No item finished before the job's deadline (`knowledge.stalls`); it goes back to running as
    #: soon as one does, or on `parley jobs resume`.
    stalled = "stalled"
    done = "done"
    failed = "failed"


class Job(TenantOwned, TimestampMixin, Base):
    """Bulk work (a multi-file upload, a catalog sync): one job, N items, counters updated atomically."""

    __tablename__ = "job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # documents / catalog_sync
    description: Mapped[str] = mapped_column(String(512), default="")
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, "job_status"), default=JobStatus.running)
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: When an item last finished (the stall deadline runs from it, or from the start, or a resume).
    last_progress_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    stalled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: queue_empty / no_worker / broker_unreachable / no_progress, and a sentence for a person.
    stall_reason: Mapped[str | None] = mapped_column(String(32))
    stall_detail: Mapped[str | None] = mapped_column(Text)


class JobItemStatus(str, enum.Enum):
    pending = "pending"
    done = "done"
    failed = "failed"


class JobItem(TenantOwned, Base):
    """One item of a job. Counting an item moves it out of `pending` exactly once, so a redelivered
    message never counts twice; the failed items are the job's error list."""

    __tablename__ = "job_item"
    __table_args__ = (UniqueConstraint("job_id", "item_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("job.id", ondelete="CASCADE"), index=True)
    item_key: Mapped[str] = mapped_column(String(256))
    label: Mapped[str] = mapped_column(String(512), default="")
    status: Mapped[JobItemStatus] = mapped_column(_enum(JobItemStatus, "job_item_status"), default=JobItemStatus.pending)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Product(TenantOwned, TimestampMixin, Base):
    """A Shopify product with the fields an answer quotes. Ids exceed 2**53: BigInteger, never float."""

    __tablename__ = "product"
    __table_args__ = (UniqueConstraint("tenant_id", "shop_domain", "shopify_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    shop_domain: Mapped[str] = mapped_column(String(255))
    shopify_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str] = mapped_column(String(512))
    handle: Mapped[str] = mapped_column(String(255))
    vendor: Mapped[str | None] = mapped_column(String(255))
    product_type: Mapped[str | None] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    price_min: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    price_max: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(8))
    available: Mapped[bool] = mapped_column(Boolean, default=False)
    total_inventory: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(String(1024))
    shopify_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    content_hash: Mapped[str] = mapped_column(String(64))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


class KnowledgeAction(str, enum.Enum):
    uploaded = "uploaded"
    replaced = "replaced"
    deleted = "deleted"
    restored = "restored"
    refused = "refused"


class KnowledgeEvent(TenantOwned, Base):
    """The knowledge base's audit log: every change (and every refused one), who made it and when,
    written in the same transaction as the change (`knowledge.audit.record`). Rows are only added."""

    __tablename__ = "knowledge_event"
    __table_args__ = (Index("ix_knowledge_event_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    action: Mapped[KnowledgeAction] = mapped_column(_enum(KnowledgeAction, "knowledge_action"))
    #: The document changed (refused: the one the sender tried to replace, if any).
    document_id: Mapped[str | None] = mapped_column(String(32), index=True)
    filename: Mapped[str] = mapped_column(String(512), default="")
    actor_channel: Mapped[str] = mapped_column(String(16))  # slack / instagram / web / admin / cli / system
    actor_id: Mapped[str] = mapped_column(String(255), default="")
    #: uploaded/replaced/restored: the document it takes the place of.
    replaced_document_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
