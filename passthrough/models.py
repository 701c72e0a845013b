"""The one table of pass-through processing: what a person may know about a request, nothing of its content."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, UTCDateTime, new_id

#: queued (accepted, waiting for a worker) -> processing -> delivered | failed
STATUSES = ("queued", "processing", "delivered", "failed")
#: What was delivered: the chunks and vectors, or the reason the file could not be read.
RESULTS = ("chunks", "unreadable")


class ProcessRequest(TenantOwned, TimestampMixin, Base):
    """One ``POST /api/v1/process``. Metadata only, by design: the file's name (personal data, often)
    travels sealed with its bytes and reaches the webhook only; its text and vectors exist in the
    worker's memory and in the webhook body, nowhere else. ``error`` is a reason a person reads
    (``webhook_failed: the endpoint answered HTTP 500``), never a quote of the document or of
    what the endpoint answered."""

    __tablename__ = "process_request"
    __table_args__ = (Index("ix_process_request_status_updated", "status", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    #: The `webhooks.models.WebhookEndpoint` the result goes to (no foreign key: the endpoint may be
    #: deleted while the request is remembered).
    endpoint_id: Mapped[str] = mapped_column(String(32))
    content_type: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    result: Mapped[str | None] = mapped_column(String(16))
    chunk_count: Mapped[int | None] = mapped_column(Integer)
    #: Delivery attempts so far (every run's together).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The HTTP status the endpoint answered last (None: no answer, or not tried yet).
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
