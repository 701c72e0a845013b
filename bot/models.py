"""Gateway tables: inbound messages (idempotent on the vendor's event id), webhook dedupe, conversation turns."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, UTCDateTime, new_id, utcnow


class InboundMessage(TenantOwned, Base):
    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("channel", "external_event_id"),
        Index("ix_inbound_message_status_received", "status", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # slack / instagram / web
    external_event_id: Mapped[str] = mapped_column(String(255))
    conversation_id: Mapped[str] = mapped_column(String(255))
    sender_id: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text, default="")
    # received -> answering -> answered | failed | expired | ignored | waiting (for its files; then received again)
    status: Mapped[str] = mapped_column(String(16), default="received")
    reply: Mapped[str | None] = mapped_column(Text)
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ack_ms: Mapped[float | None] = mapped_column(Float)
    answer_ms: Mapped[float | None] = mapped_column(Float)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # channel routing data for the reply


class WebhookEvent(Base):
    """Dedupe of vendor webhooks on (source, external id); processed only when new."""

    __tablename__ = "webhook_event"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))  # slack / instagram / shopify
    external_id: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(128), default="")
    tenant_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="received")
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConversationTurn(TenantOwned, Base):
    """One turn of a DM conversation, kept so a follow-up question is understood."""

    __tablename__ = "conversation_turn"
    __table_args__ = (Index("ix_conversation_turn_conv", "tenant_id", "conversation_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # user / assistant
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
