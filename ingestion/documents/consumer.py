"""The document worker's consumer: consumes `documents`, indexes, reports.

Run by `parley worker documents` through the one worker bootstrap (`parley.worker.run_worker`), at
nice 19 under `parley up`. Its CPU-heavy steps run in
a sandboxed parser child (extraction) and an embedding thread bounded by
PARLEY_EMBEDDING_THREADS, so the process never competes with the answer path for more than its
share of a core.
"""

from __future__ import annotations

from ingestion.documents import sandbox
from ingestion.documents.passthrough import PassThroughDeps, dead_letter_hook, process_requested
from ingestion.documents.service import IndexingDeps, index_document, mark_failed, open_password, remove_vectors
from parley.blobs import BlobStore
from tenants.deletion import tenant_exists
from parley.bus import Broker, Consumer, Received
from parley.bus.contracts import DOCUMENT_DELETED, DOCUMENT_UPLOADED, QUEUE_DOCUMENTS, DocumentDeleted, DocumentUploaded
from parley.bus.contracts import PROCESS_REQUESTED, ProcessRequested
from passthrough.store import SealedStore
from webhooks.delivery import client_session
from parley.crypto import load_secret_box
from parley.worker import WorkerContext
from tenants.quotas import PlanDefaults


def document_consumer(deps: IndexingDeps, broker: Broker, *, max_attempts: int, prefetch: int = 2,
                      passthrough: PassThroughDeps | None = None) -> Consumer:
    consumer = Consumer(name="document-worker", queue=QUEUE_DOCUMENTS, broker=broker, sessions=deps.sessions,
                        max_attempts=max_attempts, prefetch=prefetch, tenant_exists=tenant_exists)

    async def on_uploaded(msg: Received[DocumentUploaded]) -> None:
        await index_document(deps, msg.session, tenant_id=msg.envelope.tenant_id or "", document_id=msg.payload.document_id,
                             password=open_password(deps, msg.payload.sealed_password))

    async def on_deleted(msg: Received[DocumentDeleted]) -> None:
        await remove_vectors(deps, msg.session, tenant_id=msg.envelope.tenant_id or "", document_id=msg.payload.document_id)

    consumer.register(DOCUMENT_UPLOADED, on_uploaded, DocumentUploaded, on_dead_letter=mark_failed)
    consumer.register(DOCUMENT_DELETED, on_deleted, DocumentDeleted)
    if passthrough is not None:  # pass-through processing (`ingestion.documents.passthrough`): same worker, same CPU budget
        pass_deps = passthrough

        async def on_process(msg: Received[ProcessRequested]) -> None:
            await process_requested(pass_deps, msg)

        consumer.register(PROCESS_REQUESTED, on_process, ProcessRequested, on_dead_letter=dead_letter_hook(pass_deps))
    return consumer


def build_document_consumer(context: WorkerContext, *, prefetch: int = 2) -> Consumer:
    """The documents queue's consumer over a worker context (the worker process, single-process mode
    and the benchmarks all build it here)."""
    settings = context.settings
    context.on_close(sandbox.aclose)  # stop the parser fork server
    deps = IndexingDeps(sessions=context.sessions, blobs=BlobStore(settings.effective_blob_dir),
                        embedder=context.embedder, index=context.index,
                        max_member_bytes=settings.max_upload_bytes, parse_time_limit_s=settings.parse_time_limit_seconds,
                        max_archive_bytes=settings.effective_archive_max_unpacked_bytes,
                        parse_memory_limit_mb=settings.parse_memory_limit_mb, parser_plugins=settings.parser_plugin_paths,
                        box=load_secret_box(settings), raw_files_default=settings.retention_raw_files,
                        plan=PlanDefaults.from_settings(settings))
    return document_consumer(deps, context.broker, max_attempts=settings.max_attempts, prefetch=prefetch,
                             passthrough=passthrough_deps(context, deps))


def passthrough_deps(context: WorkerContext, deps: IndexingDeps) -> PassThroughDeps:
    """What pass-through processing needs beside indexing: the sealed uploads, an HTTP client for the
    deliveries (closed with the worker), the delivery settings."""
    settings = context.settings
    box = deps.box or load_secret_box(settings)
    http = client_session(allow_private=settings.webhooks_allow_private)  # refuses private addresses at connect time too
    context.on_close(http.close)
    return PassThroughDeps(indexing=deps, store=SealedStore(settings.effective_blob_dir, box), box=box, http=http,
                           allow_private=settings.webhooks_allow_private,
                           delivery_attempts=settings.process_delivery_attempts,
                           retry_pause_s=settings.process_retry_pause_seconds,
                           delivery_timeout_s=settings.webhooks_timeout_seconds)
