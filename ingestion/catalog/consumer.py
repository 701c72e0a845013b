"""The catalog worker's consumer: consumes ``catalog``, syncs Shopify stores into the index.

Run by ``parley worker catalog`` through the one worker bootstrap (``parley.worker.run_worker``).
Like the document worker it embeds on one thread bounded by PARLEY_EMBEDDING_THREADS and runs at
low OS priority under ``parley up``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ingestion.catalog.service import CatalogDeps, apply_change, apply_delete, index_batch, redact_shop
from ingestion.catalog.sync import finish_sync, on_dead_letter, start_sync
from integrations.shopify.config import ShopifyConfig
from tenants.deletion import tenant_exists
from parley.bus.contracts import (
    CATALOG_PRODUCT_CHANGED,
    CATALOG_PRODUCT_DELETED,
    CATALOG_PRODUCTS_RECEIVED,
    CATALOG_SHOP_REDACTED,
    CATALOG_SYNC_FINISHED,
    CATALOG_SYNC_REQUESTED,
    QUEUE_CATALOG,
    ProductChanged,
    ProductDeleted,
    ProductsReceived,
    ShopRedacted,
    SyncFinished,
    SyncRequested,
)
from parley.bus import Broker, Consumer, Received
from parley.crypto import load_secret_box
from parley.worker import WorkerContext
from tenants.quotas import PlanDefaults

_Service = Callable[..., Awaitable[Any]]


def catalog_consumer(deps: CatalogDeps, broker: Broker, *, max_attempts: int, prefetch: int = 2) -> Consumer:
    consumer = Consumer(name="catalog-worker", queue=QUEUE_CATALOG, broker=broker, sessions=deps.sessions,
                        max_attempts=max_attempts, prefetch=prefetch, tenant_exists=tenant_exists)

    def route(message_type: str, model: Any, service: _Service, *, dead_letter: bool = False) -> None:
        async def handle(msg: Received[Any]) -> None:
            await service(deps, msg.session, tenant_id=msg.envelope.tenant_id or "", payload=msg.payload)

        consumer.register(message_type, handle, model, on_dead_letter=on_dead_letter if dead_letter else None)

    route(CATALOG_SYNC_REQUESTED, SyncRequested, start_sync, dead_letter=True)
    route(CATALOG_PRODUCTS_RECEIVED, ProductsReceived, index_batch, dead_letter=True)
    route(CATALOG_SYNC_FINISHED, SyncFinished, finish_sync)
    route(CATALOG_PRODUCT_CHANGED, ProductChanged, apply_change)
    route(CATALOG_PRODUCT_DELETED, ProductDeleted, apply_delete)
    route(CATALOG_SHOP_REDACTED, ShopRedacted, redact_shop)
    return consumer


def build_catalog_consumer(context: WorkerContext, *, config: ShopifyConfig | None = None,
                           prefetch: int = 2) -> Consumer:
    """The catalog queue's consumer over a worker context (the worker process, single-process mode
    and the benchmarks all build it here). Opens the Shopify HTTP session, closed with the context."""
    settings = context.settings
    http = aiohttp.ClientSession()
    context.on_close(http.close)
    deps = CatalogDeps(sessions=context.sessions, embedder=context.embedder, index=context.index,
                       config=config or ShopifyConfig.from_settings(settings), box=load_secret_box(settings), http=http,
                       plan=PlanDefaults.from_settings(settings))
    return catalog_consumer(deps, context.broker, max_attempts=settings.max_attempts, prefetch=prefetch)
