"""Webhook endpoints and their delivery log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, UTCDateTime, new_id

#: Delivery statuses: waiting for its (next) attempt, answered 2xx, last attempt failed (a retry is
#: scheduled), out of attempts (in the dead-letter queue, replayable), not attempted (endpoint disabled).
DELIVERY_STATUSES = ("pending", "delivered", "failed", "dead", "skipped")


class WebhookEndpoint(TenantOwned, TimestampMixin, Base):
    """A URL of one tenant that gets the events it subscribed to, signed with its own secret.

    ``secret_sealed`` is the current signing secret (``whsec_...``) sealed with the platform's
    `parley.crypto.SecretBox`; after a rotation ``previous_secret_sealed`` keeps signing beside it
    until ``previous_secret_expires_at``.
    """

    __tablename__ = "webhook_endpoint"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(255), default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret_sealed: Mapped[str] = mapped_column(Text)
    previous_secret_sealed: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: When the first of the failures since the last success happened; None while it succeeds.
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:  # never show secrets
        return f"WebhookEndpoint(id={self.id!r}, url={self.url!r}, tenant_id={self.tenant_id!r})"


class WebhookDelivery(TenantOwned, Base):
    """One event for one endpoint: the delivery log. ``id`` is the ``webhook-id`` (``msg_...``),
    the same on every attempt. ``body`` is the JSON sent, kept only while a retry may need it
    (cleared once delivered or dead); ``process.completed`` results are never stored here."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_key"),
        Index("ix_webhook_delivery_endpoint_created", "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    #: What makes "the same event" for this endpoint (the event's idempotency key): one delivery each.
    event_key: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
