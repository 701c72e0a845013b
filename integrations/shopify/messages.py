"""Catalog message contracts (queue ``catalog``), shared by the gateway and the catalog worker.

They live here until the lead moves them into ``parley.contracts``: both producers (the gateway's
Shopify routes, the CLI) and the consumer (``ingestion.catalog``) may import this package.

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

from parley.bus import Envelope, stage
from parley.documents import create_job
from parley.models import Job

QUEUE_CATALOG = "catalog"
JOB_KIND = "catalog_sync"

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


async def request_sync(session: AsyncSession, *, tenant_id: str, shop: str, reason: str = "manual",
                       notify: dict[str, Any] | None = None, correlation_id: str | None = None) -> Job:
    """Create the sync's job (visible at once, total filled in by the worker) and stage
    ``catalog.sync_requested`` in the caller's unit of work (published after its commit)."""
    job = await create_job(session, tenant_id=tenant_id, kind=JOB_KIND,
                           description=f"Shopify catalog sync of {shop} ({reason})", total=0, notify=notify)
    stage(session, Envelope.new(CATALOG_SYNC_REQUESTED, tenant_id=tenant_id,
                                payload=SyncRequested(shop=shop, job_id=job.id, reason=reason),
                                correlation_id=correlation_id), QUEUE_CATALOG)
    return job


def stage_catalog(session: AsyncSession, message_type: str, *, tenant_id: str, payload: BaseModel,
                  idempotency_key: str | None = None) -> Envelope:
    envelope = Envelope.new(message_type, tenant_id=tenant_id, payload=payload, idempotency_key=idempotency_key)
    stage(session, envelope, QUEUE_CATALOG)
    return envelope
