"""Message contracts: the only thing producers and consumers share.

Types are `noun.past_tense_verb`. Payloads carry ids and references, never file bytes.

Queue ``documents``: ``document.uploaded``, ``document.deleted``,
``document.process_requested`` (pass-through: ids only). Queue ``notifications``:
``notice.requested``. Queue ``webhooks``: ``tenant.event``, ``webhook.delivery_requested`` (see
:func:`stage_event`). Queue ``catalog`` (Shopify; produced by the gateway's Shopify routes and the
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
from parley.db import utcnow

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


#: Queue ``documents``: pass-through processing (`passthrough`): extract, chunk, embed, deliver to a
#: webhook, keep nothing.
PROCESS_REQUESTED = "document.process_requested"


class ProcessRequested(BaseModel):
    """Ids only, so this message (in the outbox, on the bus, in a dead letter) holds nothing of the
    file: its name, type and bytes wait sealed in the upload's temporary file (`passthrough.store`)."""

    request_id: str
    endpoint_id: str


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


# --- tenant events (outbound webhooks) -------------------------------------------------------

#: Queue ``webhooks``: ``tenant.event`` (something happened that a tenant's webhook endpoints may
#: subscribe to; the webhooks worker fans it out into one signed delivery per endpoint) and
#: ``webhook.delivery_requested`` (one delivery attempt of one event to one endpoint).
QUEUE_WEBHOOKS = "webhooks"
TENANT_EVENT = "tenant.event"
WEBHOOK_DELIVERY_REQUESTED = "webhook.delivery_requested"

#: Every event type a tenant may subscribe a webhook endpoint to.
EVENT_TYPES = (
    "document.indexed",
    "document.failed",
    "job.completed",
    "catalog.synced",
    "conversation.handed_off",
    "quota.exceeded",
    "process.completed",
    "job.stalled",
)


#: Subscribable like the others, but never staged here: the pass-through worker delivers it itself.
PASS_THROUGH_EVENT = "process.completed"


class TenantEvent(BaseModel):
    """The payload of a ``tenant.event`` message: ids and metadata only, never document text."""

    event_type: str
    data: dict[str, Any] = Field(default_factory=dict)
    occurred_at: dt.datetime


class WebhookDeliveryRequested(BaseModel):
    """One delivery of an event to one endpoint; ``delivery_id`` is the ``webhook-id`` (``msg_...``)."""

    delivery_id: str
    endpoint_id: str


def stage_event(session: AsyncSession, *, tenant_id: str, event_type: str, data: dict[str, Any],
                idempotency_key: str | None = None) -> Envelope:
    """Stage a tenant event in the caller's unit of work (published after its commit, dropped on
    rollback). ``event_type`` must be one of :data:`EVENT_TYPES`; ``data`` must be JSON-serialisable
    and carry ids and metadata only. ``idempotency_key`` makes a repeated emission (a redelivered
    message finishing the same document twice) one event: the webhooks worker fans out each key once."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; use one of {', '.join(EVENT_TYPES)}")
    if event_type == PASS_THROUGH_EVENT:
        raise ValueError("process.completed carries document content, which must never be stored (the outbox, the "
                         "delivery log): the pass-through worker delivers it itself")
    payload = TenantEvent(event_type=event_type, data=dict(data), occurred_at=utcnow())
    envelope = Envelope.new(TENANT_EVENT, tenant_id=tenant_id, payload=payload,
                            idempotency_key=idempotency_key or None)
    stage(session, envelope, QUEUE_WEBHOOKS)
    return envelope
