"""The bus's own tables.

- ``pending_message``: one row per message the relay has published and no consumer has finished
  yet, by work queue and tenant. Its row count per tenant is that tenant's backlog, which the relay
  turns into a message priority (see :mod:`parley.bus.outbox`). The relay commits the row before it
  publishes (PostgreSQL; on SQLite in the transaction that marks the outbox row published, whose
  write lock a consumer's delete waits for), so a consumer always finds it; the consumer deletes it in the handler's (or the
  dead-letter step's) transaction.
- ``processed_message``: the consumer wrapper's idempotency marker, keyed by (consumer, idempotency
  key), written in the handler's transaction: it exists iff the handler's work committed, so a
  redelivered or duplicated message changes nothing twice.
- ``outbox_message``: a message written in the producer's transaction, relayed after commit.
- ``dead_letter``: the index of dead letters, written in the same transaction as the domain's
  ``on_dead_letter`` hook; ``parley dlq list|replay`` read and update it. The broker-side
  ``<queue>.dlq`` keeps a copy of each message until it is replayed.

None of them is tenant-owned: they are infrastructure read by workers and the admin CLI, and a
message may belong to no tenant. Callers filter by ``tenant_id`` explicitly.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, UTCDateTime, utcnow


class PendingMessage(Base):
    __tablename__ = "pending_message"
    __table_args__ = (Index("ix_pending_message_queue_tenant", "queue", "tenant_id"),)

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(128))
    tenant_id: Mapped[str | None] = mapped_column(String(32))
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ProcessedMessage(Base):
    __tablename__ = "processed_message"

    consumer: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64))
    processed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class DeadLetter(Base):
    __tablename__ = "dead_letter"
    __table_args__ = (
        UniqueConstraint("queue", "message_id"),
        Index("ix_dead_letter_queue_status", "queue", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(64))  # logical work queue: documents, catalog, ...
    message_id: Mapped[str] = mapped_column(String(64))
    message_type: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(String(32), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    body: Mapped[str] = mapped_column(Text)  # the envelope JSON as last delivered (or the raw body)
    dead_lettered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="dead")  # dead / replayed
    replayed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    replay_message_id: Mapped[str | None] = mapped_column(String(64))


class OutboxMessage(Base):
    """A message written in the same transaction as the work it announces, relayed to RabbitMQ after
    commit. If the process dies between commit and publish, the relay publishes it on restart."""

    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_unpublished", "published_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    routing_key: Mapped[str] = mapped_column(String(128))
    message_type: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)  # the JSON envelope
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)
