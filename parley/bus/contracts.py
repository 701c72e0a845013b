"""Message contracts: the only thing producers and consumers share.

Types are `noun.past_tense_verb`. Payloads carry ids and references, never file bytes.

Queue ``documents``: ``document.uploaded``, ``document.deleted``. Queue ``notifications``:
``notice.requested``. Queue ``catalog`` (Shopify; produced by the gateway's Shopify routes and the
CLI, consumed by ``ingestion.catalog``):

=============================  =================================================================
``catalog.sync_requested``     list the whole store and fan out ``products_received`` batches
``catalog.products_received``  index a batch of products of a sync job (counted per product)
``catalog.sync_finished``      the last batch was counted: remove products the store no longer has
``catalog.product_changed``    a ``products/create`` or ``products/update`` webhook
``catalog.product_deleted``    a ``products/delete`` webhook
``catalog.shop_redacted``      ``shop/redact``: erase the shop's products and vectors
=============================  =================================================================
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from parley.bus.envelope import Envelope
from parley.bus.outbox import stage

DOCUMENT_UPLOADED = "document.uploaded"
DOCUMENT_DELETED = "document.deleted"
NOTICE_REQUESTED = "notice.requested"

QUEUE_DOCUMENTS = "documents"
QUEUE_CATALOG = "catalog"
QUEUE_NOTIFICATIONS = "notifications"

#: The job kind of a Shopify catalog sync.
CATALOG_SYNC_JOB_KIND = "catalog_sync"


class DocumentUploaded(BaseModel):
    document_id: str
    #: The password of a protected PDF, encrypted with the platform's `parley.crypto.SecretBox`
    #: (never in plain text on the bus, in the outbox or in a dead letter); left out when there is none.
    sealed_password: str | None = None


class DocumentDeleted(BaseModel):
    document_id: str


class NoticeRequested(BaseModel):
    """A line for a person: posted back into the DM (or web chat) the upload came from."""

    text: str
    target: dict[str, Any] = Field(default_factory=dict)  # channel kind, conversation/channel id, user
    document_id: str | None = None
    job_id: str | None = None
    kind: str = "info"  # received / indexed / failed / job_done


# --- catalog ------------------------------------------------------------------------------

CATALOG_SYNC_REQUESTED = "catalog.sync_requested"
CATALOG_PRODUCTS_RECEIVED = "catalog.products_received"
CATALOG_SYNC_FINISHED = "catalog.sync_finished"
CATALOG_PRODUCT_CHANGED = "catalog.product_changed"
CATALOG_PRODUCT_DELETED = "catalog.product_deleted"
CATALOG_SHOP_REDACTED = "catalog.shop_redacted"


class SyncRequested(BaseModel):
    shop: str
    job_id: str
    reason: str = "manual"  # install / manual / reconnect / schedule


class ProductsReceived(BaseModel):
    shop: str
    job_id: str
    products: list[dict[str, Any]]  # ShopifyProduct.to_payload()
    #: Set when the listing was incomplete (a bulk export's partialDataUrl): no removals at the end.
    partial_reason: str | None = None


class SyncFinished(BaseModel):
    shop: str
    job_id: str
    partial_reason: str | None = None


class ProductChanged(BaseModel):
    shop: str
    product: dict[str, Any]  # the webhook's REST payload, parsed with json.loads (ids stay exact)
    event_id: str | None = None
    triggered_at: dt.datetime | None = None


class ProductDeleted(BaseModel):
    shop: str
    product_id: int
    event_id: str | None = None
    triggered_at: dt.datetime | None = None


class ShopRedacted(BaseModel):
    shop: str
    event_id: str | None = None


class SyncNotice(BaseModel):
    """Where a sync's final report goes (a DM, the web chat), as ``Job.notify``."""

    target: dict[str, Any] = Field(default_factory=dict)


def stage_catalog(session: AsyncSession, message_type: str, *, tenant_id: str, payload: BaseModel,
                  idempotency_key: str | None = None) -> Envelope:
    """Stage a catalog message in the caller's unit of work (published after its commit)."""
    envelope = Envelope.new(message_type, tenant_id=tenant_id, payload=payload, idempotency_key=idempotency_key)
    stage(session, envelope, QUEUE_CATALOG)
    return envelope
