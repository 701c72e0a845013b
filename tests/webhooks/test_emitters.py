"""The events the platform emits reach a tenant's endpoint: the real document worker (in this
process, on the in-memory broker) indexes one file and fails another, and the receiver gets
``document.indexed``, ``document.failed`` and ``job.completed``, signed, with ids and metadata only."""

from __future__ import annotations

import asyncio

import pytest

from parley import runtime
from parley.blobs import BlobStore
from parley.bus import consuming
from parley.vectors import create_vector_index
from parley.webhook_signing import verify
from parley.worker import WorkerContext
from tests.faults.support import submit
from tests.webhooks.conftest import Receiver, Stack, eventually

try:
    from parley.embeddings.local import model_installed

    HAVE_MODEL = model_installed("all-MiniLM-L6-v2")
except Exception:  # pragma: no cover - the embeddings package itself is broken
    HAVE_MODEL = False

SECRET_SENTENCE = "Our returns desk opens at nine and every refund is paid within five days."


@pytest.mark.skipif(not HAVE_MODEL, reason="the local embedding model is not installed (scripts/bootstrap.sh)")
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_documents_and_their_job_reach_the_endpoint(stack: Stack, receiver: Receiver) -> None:
    from ingestion.documents.consumer import build_document_consumer

    # Given an endpoint subscribed to the document and job events, and the real document worker
    endpoint, secret = await stack.endpoint(receiver.url, "document.indexed,document.failed,job.completed")
    embedder = await asyncio.to_thread(runtime.embedder, stack.settings)
    index = create_vector_index(stack.settings, role="writer", sessions=stack.sessions)
    context = WorkerContext(settings=stack.settings, sessions=stack.sessions, broker=stack.broker, embedder=embedder,
                            index=index)
    documents = build_document_consumer(context)
    try:
        async with consuming(documents, shutdown_timeout=5.0):
            # When a job of two files is uploaded: one readable, one empty
            batch = await submit(stack.sessions, BlobStore(stack.settings.effective_blob_dir), stack.relay,
                                 tenant_id=stack.tenant_id,
                                 files=[("returns.md", f"# Returns\n\n{SECRET_SENTENCE}\n".encode()), ("empty.txt", b"")])
            # Then the receiver gets one delivery per event, each signed with the endpoint's secret
            await eventually(lambda: len(receiver.requests) >= 3, timeout=90, what="three webhook deliveries")
    finally:
        await context.aclose()
        await index.aclose()
        await embedder.aclose()
    for request in receiver.requests:
        verify(secret, request["headers"], request["body"])
    by_type = {body["type"]: body["data"] for body in receiver.bodies()}
    assert set(by_type) == {"document.indexed", "document.failed", "job.completed"}
    indexed, failed, job = by_type["document.indexed"], by_type["document.failed"], by_type["job.completed"]
    assert indexed["document_id"] == batch.documents["returns.md"] and indexed["filename"] == "returns.md"
    assert indexed["chunks"] >= 1 and indexed["job_id"] == batch.job_id
    assert failed["document_id"] == batch.documents["empty.txt"] and failed["error_code"]
    assert job == {**job, "job_id": batch.job_id, "total": 2, "done": 1, "failed": 1}
    # And no delivery carries the document's text
    assert all(SECRET_SENTENCE.encode() not in request["body"] for request in receiver.requests)
    assert len({d.id for d in await stack.deliveries(endpoint.id)}) == 3
