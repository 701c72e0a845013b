"""The document worker process: consumes `documents`, indexes, reports.

Started by `parley worker documents` (at nice 19 under `parley up`). Its CPU-heavy steps run in
a sandboxed parser child (extraction) and an embedding thread bounded by
PARLEY_EMBEDDING_THREADS, so the process never competes with the answer path for more than its
share of a core.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingestion.documents.service import IndexingDeps, index_document, mark_failed
from ingestion.documents import sandbox
from parley.blobs import BlobStore
from parley import runtime
from parley.bus import Broker, Consumer, OutboxRelay, Received, run_consumer
from parley.contracts import DOCUMENT_UPLOADED, QUEUE_DOCUMENTS, DocumentUploaded
from parley.db import create_engine, create_sessionmaker
from parley.observability import WorkerMetrics, start_worker_endpoint
from parley.settings import Settings
from parley.vectors import create_vector_index

log = logging.getLogger(__name__)


def document_consumer(deps: IndexingDeps, broker: Broker, *, max_attempts: int, prefetch: int = 2) -> Consumer:
    consumer = Consumer(name="document-worker", queue=QUEUE_DOCUMENTS, broker=broker, sessions=deps.sessions,
                        max_attempts=max_attempts, prefetch=prefetch)

    async def on_uploaded(msg: Received[DocumentUploaded]) -> None:
        await index_document(deps, msg.session, tenant_id=msg.envelope.tenant_id or "", document_id=msg.payload.document_id)

    consumer.register(DOCUMENT_UPLOADED, on_uploaded, DocumentUploaded, on_dead_letter=mark_failed)
    return consumer


@dataclass
class WorkerRuntime:
    sessions: async_sessionmaker[AsyncSession]
    broker: Broker
    relay: OutboxRelay
    deps: IndexingDeps


async def run_document_worker(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    runtime.niceness_across_sessions()  # nice 19 under `parley up` must count against the retrieval service too
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = create_engine(settings, "documents-worker")
    sessions = create_sessionmaker(engine)
    broker = runtime.rabbit_broker(settings, "documents-worker")
    await broker.start()
    relay = OutboxRelay(sessions, broker)
    await relay.start()
    embedder = await asyncio.to_thread(runtime.embedder, settings)
    index = create_vector_index(settings, role="writer", sessions=sessions)
    metrics = WorkerMetrics("documents-worker")
    deps = IndexingDeps(sessions=sessions, blobs=BlobStore(settings.effective_blob_dir), embedder=embedder,
                        index=metrics.counting(index),
                        max_member_bytes=settings.max_upload_bytes, parse_time_limit_s=settings.parse_time_limit_seconds,
                        parse_memory_limit_mb=settings.parse_memory_limit_mb, parser_plugins=settings.parser_plugin_paths)
    consumer = document_consumer(deps, broker, max_attempts=settings.max_attempts)
    metrics.watch(consumer)
    endpoint = await start_worker_endpoint(settings, metrics, broker=broker, sessions=sessions, queue=QUEUE_DOCUMENTS)
    log.info("document worker consuming", extra={"queue": QUEUE_DOCUMENTS, "nice": os.nice(0)})
    try:
        await run_consumer(consumer, stop)
    finally:
        if endpoint is not None:
            await endpoint.aclose()
        await relay.flush()
        await relay.stop()
        await index.aclose()
        await embedder.aclose()
        await sandbox.aclose()  # stop the parser fork server
        await broker.close()
        await engine.dispose()
