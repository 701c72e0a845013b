"""Pass-through processing in the document worker: ``document.process_requested``.

The same sandboxed extraction, chunking and embedding as indexing (`ingestion.documents.sandbox`,
`chunking`, the worker's embedder), then the result is delivered to the request's webhook endpoint
(`passthrough.delivery`) instead of being written anywhere: no document, chunk, vector or job row,
no blob. The sealed upload (`passthrough.store`) is deleted once the result was delivered, or when
the request finally failed (the dead-letter hook). What is recorded is `passthrough.models`'
metadata; what is logged is ids, counts and sizes, never a name or a word of the document; a
failure's reason names a status code or an error kind, so the consumer's log line and the dead
letter (whose body is this message: ids only) hold nothing of it either.

A file that cannot be read (unsupported after all, damaged, password-protected, no text) is not a
failure of the request: the endpoint is told so (``status: failed`` with the reason) and the
request ends ``delivered`` with result ``unreadable``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import traceback
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession

from ingestion.documents import archive
from ingestion.documents.chunking import chunk_document
from ingestion.documents.errors import ExtractionError
from ingestion.documents.sandbox import extract_document
from ingestion.documents.service import IndexingDeps
from parley.bus import Envelope, Failure, Permanent, Received, Retryable
from parley.bus.contracts import ProcessRequested
from parley.crypto import SecretBox
from parley.db import unit_of_work, utcnow
from parley.errors import NotFound, ParleyError
from passthrough import service
from passthrough.delivery import Attempt, deliver
from passthrough.schemas import EmbeddingInfo, ProcessCompleted, ProcessedChunk, ProcessError, ProcessResult, webhook_id
from passthrough.store import Sealed, SealedStore

log = logging.getLogger(__name__)

#: True while this task extracts a pass-through document: the sandbox's log lines then leave out the
#: parser's stderr (a traceback's message may quote the document, e.g. a parser's "bad token b'...'").
_EXTRACTING = contextvars.ContextVar("parley_pass_through_extracting", default=False)


class _NoParserStderr(logging.Filter):
    """On the sandbox's logger: a pass-through document's parser stderr is never logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _EXTRACTING.get():
            return True
        if record.levelno <= logging.DEBUG:
            return False  # "document parser stderr: ..." (debug): nothing else in it
        if isinstance(record.args, tuple) and len(record.args) >= 2 and "stderr" in str(record.msg):
            record.msg = "document parser failed: %s (exit %s); its stderr is not logged (a pass-through document)"
            record.args = record.args[:2]
        return True


logging.getLogger("ingestion.documents.sandbox").addFilter(_NoParserStderr())


@dataclass
class PassThroughDeps:
    indexing: IndexingDeps
    store: SealedStore
    box: SecretBox
    http: aiohttp.ClientSession
    #: PARLEY_WEBHOOKS_ALLOW_PRIVATE: endpoints on http:// and private addresses (development, tests).
    allow_private: bool = False
    delivery_attempts: int = 3
    retry_pause_s: float = 1.0
    delivery_timeout_s: float = 10.0
    #: When this worker last deleted sealed uploads a crash left behind (`SealedStore.sweep`).
    swept_at: float | None = None


#: How often a worker sweeps stale sealed uploads (at most; only while pass-through requests arrive).
SWEEP_EVERY_S = 3600.0


async def process_requested(deps: PassThroughDeps, msg: Received[ProcessRequested]) -> None:
    tenant_id, request_id = msg.envelope.tenant_id or "", msg.payload.request_id
    if deps.swept_at is None or time.monotonic() - deps.swept_at > SWEEP_EVERY_S:
        deps.swept_at = time.monotonic()
        swept = await deps.store.sweep()
        if swept:
            log.warning("deleted stale sealed pass-through uploads", extra={"count": swept})
    try:
        await _process(deps, tenant_id=tenant_id, request_id=request_id, endpoint_id=msg.payload.endpoint_id)
    except ParleyError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unexpected error's message may quote the document: not logged
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("pass-through request failed unexpectedly (%s)\n%s", type(exc).__name__, frames,
                  extra={"request_id": request_id})
        raise Retryable(f"an internal error ({type(exc).__name__}) stopped the processing", code="internal") from None


async def _process(deps: PassThroughDeps, *, tenant_id: str, request_id: str, endpoint_id: str) -> None:
    sessions = deps.indexing.sessions
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        claimed = await service.claim(session, tenant_id=tenant_id, request_id=request_id)
    if not claimed:  # ended already (a duplicate delivery, or a replay): make sure nothing stays
        await deps.store.delete(tenant_id, request_id)
        log.info("pass-through request already ended; nothing to do (its file is not kept: send it again)",
                 extra={"request_id": request_id})
        return
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        endpoint = await service.endpoint_by_id(session, tenant_id=tenant_id, endpoint_id=endpoint_id)
        secrets = _secrets(endpoint, deps.box) if endpoint is not None else []
    if endpoint is None:
        raise Permanent("the webhook endpoint was deleted before the result could be delivered", code="endpoint_gone")
    if not endpoint.enabled:
        raise Permanent(f"the webhook endpoint is disabled ({endpoint.disabled_reason or 'by an admin'})",
                        code="endpoint_disabled")
    from webhooks.urls import check_url

    try:  # again at delivery time: the name may resolve elsewhere now
        url = await asyncio.to_thread(check_url, endpoint.url, allow_private=deps.allow_private)
    except ParleyError as exc:
        raise Permanent(f"the webhook endpoint's URL is refused: {exc.message}", code="webhook_url_rejected") from None

    try:  # the endpoint first (cheap): no extraction for a result nobody can receive
        sealed = await deps.store.get(tenant_id, request_id)
    except NotFound as exc:
        raise Permanent(exc.message, code="upload_missing") from None
    result = await _result(deps, request_id, sealed)
    del sealed
    body = ProcessCompleted(timestamp=utcnow(), id=webhook_id(request_id), data=result).body()
    chunks, outcome_of_file, unread = len(result.chunks), result.status, result.error
    del result

    async def counted(attempt: Attempt) -> None:
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            await service.record_attempt(session, tenant_id=tenant_id, request_id=request_id,
                                         status_code=attempt.status_code,
                                         error_code=None if attempt.ok else attempt.error_code,
                                         error=None if attempt.ok else attempt.error)

    sent = await deliver(deps.http, url, secrets=secrets, msg_id=webhook_id(request_id), body=body,
                         attempts=deps.delivery_attempts, pause=deps.retry_pause_s, timeout=deps.delivery_timeout_s,
                         on_attempt=counted)
    size = len(body)
    del body
    if not sent.ok:
        raise Retryable(sent.error or "the delivery failed", code=sent.error_code or "webhook_failed")
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        if outcome_of_file == "completed":
            await service.finish(session, tenant_id=tenant_id, request_id=request_id, status="delivered",
                                 result="chunks", chunk_count=chunks)
        else:
            await service.finish(session, tenant_id=tenant_id, request_id=request_id, status="delivered",
                                 result="unreadable", chunk_count=0, error_code=unread.code if unread else None,
                                 error=unread.message if unread else None)
    await deps.store.delete(tenant_id, request_id)
    log.info("delivered a pass-through result",
             extra={"request_id": request_id, "chunks": chunks, "bytes": size, "status_code": sent.status_code})


async def _result(deps: PassThroughDeps, request_id: str, sealed: Sealed) -> ProcessResult:
    """Extract, chunk and embed as indexing does; a file that cannot be read is a ``failed`` result
    (its reason for the endpoint); a transient failure (the parser crashed) is retried by the bus."""
    ix = deps.indexing
    base = {"request_id": request_id, "filename": sealed.filename, "content_type": sealed.content_type,
            "size_bytes": len(sealed.data)}

    def unreadable(code: str, message: str) -> ProcessResult:
        return ProcessResult(status="failed", error=ProcessError(code=code, message=message), **base)

    if archive.is_archive(sealed.data):
        return unreadable("archive_not_processed", "an archive is not processed in pass-through: send its documents one by one")
    token = _EXTRACTING.set(True)
    try:
        extracted = await extract_document(
            sealed.data, filename=sealed.filename, declared_mime=sealed.content_type,
            time_limit_s=ix.parse_time_limit_s, memory_limit_mb=ix.parse_memory_limit_mb, plugins=ix.parser_plugins)
    except ExtractionError as exc:
        if exc.retryable:
            raise Retryable(exc.message, code=exc.code) from None
        return unreadable(exc.code, exc.message)
    finally:
        _EXTRACTING.reset(token)
    chunks = chunk_document(extracted)
    if not chunks:
        return unreadable("no_text", "the document has no text")
    vectors = await ix.embedder.embed_documents([c.embedding_text() for c in chunks])
    sections: list[list[str]] = []
    for c in chunks:
        if list(c.heading_path) not in sections:
            sections.append(list(c.heading_path))
    return ProcessResult(
        status="completed", title=extracted.title or sealed.filename, page_count=extracted.page_count,
        sections=sections, embedding=EmbeddingInfo(model=ix.embedder.model_id, dimension=ix.embedder.dimension),
        chunks=[ProcessedChunk(ordinal=c.ordinal, text=c.text, section=list(c.heading_path), token_count=c.token_estimate,
                               page_start=c.page_start, page_end=c.page_end, content_hash=c.content_hash,
                               vector=[float(x) for x in vectors[i]])
                for i, c in enumerate(chunks)],
        **{**base, "content_type": extracted.mime_type or sealed.content_type})


def _secrets(endpoint: object, box: SecretBox) -> list[str]:
    from webhooks.service import signing_secrets

    return list(signing_secrets(endpoint, box))  # type: ignore[arg-type]


def dead_letter_hook(deps: PassThroughDeps):  # type: ignore[no-untyped-def]
    """The request ends ``failed`` with the reason (no content in it) and its sealed upload goes."""

    async def mark_failed(session: AsyncSession, envelope: Envelope, failure: Failure) -> None:
        tenant_id = envelope.tenant_id or ""
        request_id = str(envelope.payload.get("request_id", ""))
        await service.finish(session, tenant_id=tenant_id, request_id=request_id, status="failed",
                             error_code=failure.code, error=failure.human_reason())
        await deps.store.delete(tenant_id, request_id)
        log.warning("pass-through request failed", extra={"request_id": request_id, "code": failure.code})

    return mark_failed
