"""Plan and usage tables: a tenant's plan overrides, its usage counters, and the charges that make
counting idempotent (`tenants.quotas` is the only code that writes them).

* ``tenant_plan``: one row per tenant with its own limits; a null limit means the settings
  default (``PARLEY_PLAN_MAX_*``), ``0`` means unlimited for this tenant. No row: every limit is
  the default.
* ``tenant_usage``: one row per tenant, locked (``SELECT ... FOR UPDATE``; SQLite's write lock)
  in the same transaction that consumes it. Stored resources (documents, blob bytes, chunks,
  products) are exact counts of what is stored; rates (questions today / this month, uploads this
  hour) count within their period, named beside them, and start again at zero in a new one.
* ``quota_charge``: one row per thing counted once (a question's inbound message id, a refusal's
  hour for the ``quota.exceeded`` event): an insert-or-ignore on it is what makes a redelivery
  count nothing twice.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, UTCDateTime, utcnow


class TenantPlan(TenantOwned, Base):
    __tablename__ = "tenant_plan"

    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    #: A label for people ("free", "pro"); the limits below are what count.
    name: Mapped[str | None] = mapped_column(String(32))
    max_documents: Mapped[int | None] = mapped_column(BigInteger)
    max_stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_chunks: Mapped[int | None] = mapped_column(BigInteger)
    max_products: Mapped[int | None] = mapped_column(BigInteger)
    max_questions_per_day: Mapped[int | None] = mapped_column(BigInteger)
    max_questions_per_month: Mapped[int | None] = mapped_column(BigInteger)
    max_uploads_per_hour: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class TenantUsage(TenantOwned, Base):
    __tablename__ = "tenant_usage"

    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    documents: Mapped[int] = mapped_column(BigInteger, default=0)
    blob_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks: Mapped[int] = mapped_column(BigInteger, default=0)
    products: Mapped[int] = mapped_column(BigInteger, default=0)
    questions_day: Mapped[int] = mapped_column(Integer, default=0)
    day: Mapped[str] = mapped_column(String(10), default="")  # 2026-12-03 (UTC)
    questions_month: Mapped[int] = mapped_column(Integer, default=0)
    month: Mapped[str] = mapped_column(String(7), default="")  # 2026-12
    uploads_hour: Mapped[int] = mapped_column(Integer, default=0)
    hour: Mapped[str] = mapped_column(String(13), default="")  # 2026-12-03T18
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class QuotaCharge(TenantOwned, Base):
    __tablename__ = "quota_charge"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    #: "question" (key: the inbound message id) or "alert:<resource>" (key: the hour of a refusal event).
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
