"""The catalog worker process: consumes ``catalog``, syncs Shopify stores into the index.

Started by ``parley worker catalog`` (the lead wires it to :func:`run_catalog_worker`) or, until
then, ``python -m ingestion.catalog``. Like the document worker it embeds on one thread bounded by
PARLEY_EMBEDDING_THREADS and runs at low OS priority under ``parley up``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ingestion.catalog.service import CatalogDeps, apply_change, apply_delete, index_batch, redact_shop
from ingestion.catalog.sync import finish_sync, on_dead_letter, start_sync
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.messages import (
    CATALOG_PRODUCT_CHANGED, CATALOG_PRODUCT_DELETED, CATALOG_PRODUCTS_RECEIVED, CATALOG_SHOP_REDACTED,
    CATALOG_SYNC_FINISHED, CATALOG_SYNC_REQUESTED, QUEUE_CATALOG, ProductChanged, ProductDeleted, ProductsReceived,
    ShopRedacted, SyncFinished, SyncRequested,
)
from parley import runtime
from parley.bus import Broker, Consumer, OutboxRelay, Received, run_consumer
from parley.crypto import load_secret_box
from parley.db import create_engine, create_sessionmaker
from parley.observability import WorkerMetrics, start_worker_endpoint
from parley.settings import Settings
from parley.vectors import create_vector_index

log = logging.getLogger(__name__)

_Service = Callable[..., Awaitable[Any]]


def catalog_consumer(deps: CatalogDeps, broker: Broker, *, max_attempts: int, prefetch: int = 2) -> Consumer:
    consumer = Consumer(name="catalog-worker", queue=QUEUE_CATALOG, broker=broker, sessions=deps.sessions,
                        max_attempts=max_attempts, prefetch=prefetch)

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


async def run_catalog_worker(settings: Settings, *, stop: asyncio.Event | None = None,
                             config: ShopifyConfig | None = None, prefetch: int = 2) -> None:
    runtime.niceness_across_sessions()  # nice 19 under `parley up` must count against the retrieval service too
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError):  # not the main thread (tests, benchmarks): the caller sets `stop`
            pass
    config = config or ShopifyConfig.from_settings(settings)
    engine = create_engine(settings, "catalog-worker")
    sessions = create_sessionmaker(engine)
    broker = runtime.rabbit_broker(settings, "catalog-worker")
    await broker.start()
    relay = OutboxRelay(sessions, broker)
    await relay.start()
    embedder = await asyncio.to_thread(runtime.embedder, settings)
    index = create_vector_index(settings, role="writer", sessions=sessions)
    http = aiohttp.ClientSession()
    metrics = WorkerMetrics("catalog-worker")
    deps = CatalogDeps(sessions=sessions, embedder=embedder, index=metrics.counting(index), config=config,
                       box=load_secret_box(settings), http=http)
    consumer = catalog_consumer(deps, broker, max_attempts=settings.max_attempts, prefetch=prefetch)
    metrics.watch(consumer)
    endpoint = await start_worker_endpoint(settings, metrics, broker=broker, sessions=sessions, queue=QUEUE_CATALOG)
    log.info("catalog worker consuming", extra={"queue": QUEUE_CATALOG, "nice": os.nice(0),
                                                 "api_version": config.api_version})
    try:
        await run_consumer(consumer, stop)
    finally:
        if endpoint is not None:
            await endpoint.aclose()
        await relay.flush()
        await relay.stop()
        await http.close()
        await index.aclose()
        await embedder.aclose()
        await broker.close()
        await engine.dispose()
