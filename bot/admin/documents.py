"""The dashboard's documents: a searchable, filtered, paged list, a page per document, and the changes
a person makes there (behind the session cookie, per tenant; every change is in the audit log).

    GET    /admin/api/documents[?q=NAME&status=S&limit=N&offset=K]
                                           a page of documents, newest first, with the total that match
                                           and the counts by status (status: a document status, or "all";
                                           by default deleted and replaced versions are left out)
    GET    /admin/api/documents/{id}/page  the document page: the document, its versions, its history
                                           (knowledge_event), its first chunks, the jobs it was in, the
                                           questions whose answers cited it, and what may be done to it
    DELETE /admin/api/documents/{id}       delete it (its vectors go through the document worker:
                                           `knowledge.service.request_deletion`); it can be restored
    POST   /admin/api/documents/{id}/versions   multipart "file" (and "password"): a new version, kept
                                           under the document's name and source; it replaces this one once
                                           indexed (this one stays in the history and can be restored)
    POST   /admin/api/documents/{id}/retry {"password"}: a PDF that failed as password-protected,
                                           indexed again with its password

A password is sealed with the platform's `SecretBox` at once and travels only in the job message
(`DocumentUploaded.sealed_password`): it is never logged, never stored in the clear, and gone
once the worker has taken the message.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import String, cast

from bot.admin.knowledge import admin_actor, event_documents, event_with_documents
from bot.channels.web import routes as webchat
from bot.context import GATEWAY
from bot.http import TENANT, read_json
from bot.conversation.repository import InboundRepository
from bot.models import InboundMessage
from knowledge.audit import KnowledgeEventRepository
from knowledge.models import Document, DocumentStatus
from knowledge.repository import DocumentRepository, JobRepository
from knowledge.service import job_breakdown, needs_password, request_deletion, retry_with_password
from parley.db import unit_of_work
from parley.errors import InvalidInput

#: Documents per page of the list (at most; the page asks with `limit`).
PAGE_SIZE = 50
#: Chunks shown on a document page (with their text), and questions that cited it.
SHOWN_CHUNKS = 20
SHOWN_QUESTIONS = 20


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _number(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError as exc:
        raise InvalidInput(f"'{name}' must be a whole number") from exc
    if not low <= value <= high:
        raise InvalidInput(f"'{name}' must be between {low} and {high:,}")
    return value


def _status(request: web.Request) -> tuple[DocumentStatus | None, bool]:
    """(status to keep, include deleted) from ?status=."""
    given = request.query.get("status", "")
    if given in ("", "all"):
        return None, given == "all"
    try:
        return DocumentStatus(given), True
    except ValueError as exc:
        raise InvalidInput(f"unknown status {given!r}; use all or one of "
                           f"{', '.join(s.value for s in DocumentStatus)}") from exc


async def list_documents(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    limit = _number(request, "limit", PAGE_SIZE, low=1, high=500)
    offset = _number(request, "offset", 0, low=0, high=10_000_000)
    status, include_deleted = _status(request)
    name = request.query.get("q", "").strip()[:200]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        repo = DocumentRepository(session, tenant_id)
        rows, total = await repo.search(name=name, status=status, include_deleted=include_deleted, limit=limit, offset=offset)
        return web.json_response({"documents": [webchat.document_json(d) for d in rows], "total": total, "limit": limit,
                                  "offset": offset, "counts": await repo.counts_by_status()})


def _version_json(d: Document, current: Document) -> dict[str, Any]:
    return {"id": d.id, "filename": d.filename, "status": d.status.value, "chunks": d.chunk_count, "size": d.size_bytes,
            "created_at": _iso(d.created_at), "indexed_at": _iso(d.indexed_at), "this": d.id == current.id}


async def _questions(session: Any, tenant_id: str, document_id: str) -> list[dict[str, Any]]:
    """Recent questions whose answers cited the document (the answer path records each citation's
    document id with the message)."""
    stmt = (InboundRepository(session, tenant_id).select().where(cast(InboundMessage.citations, String).like(f"%{document_id}%"))
            .order_by(InboundMessage.received_at.desc()).limit(SHOWN_QUESTIONS * 2))
    out = []
    for m in (await session.execute(stmt)).scalars():
        cited = [c for c in (m.citations or []) if isinstance(c, dict) and c.get("document_id") == document_id]
        if cited:
            out.append({"id": m.id, "channel": m.channel, "text": m.text[:300], "reply": (m.reply or "")[:300],
                        "status": m.status, "received_at": _iso(m.received_at), "answer_ms": m.answer_ms,
                        "cited_as": sorted({int(c["n"]) for c in cited if isinstance(c.get("n"), int)})})
    return out[:SHOWN_QUESTIONS]


async def document_page(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        repo = DocumentRepository(session, tenant_id)
        document = await repo.get(request.match_info["id"])  # another tenant's: 404
        versions = await repo.versions(document)
        events_repo = KnowledgeEventRepository(session, tenant_id)
        events = {e.id: e for v in versions for e in await events_repo.list(limit=100, document_id=v.id)}
        ordered = sorted(events.values(), key=lambda e: (e.at, e.id), reverse=True)
        named = await event_documents(session, tenant_id, ordered)
        chunks = await repo.chunks(document.id, limit=SHOWN_CHUNKS)
        jobs = []
        for job, item in await JobRepository(session, tenant_id).items_of(document.id):
            jobs.append({**webchat.job_json(job), "item": {"status": item.status.value, "error": item.error,
                                                           "error_code": item.error_code},
                         "breakdown": await job_breakdown(session, job)})
        questions = await _questions(session, tenant_id, document.id)
        newer = versions[0] if versions[0].id != document.id else None
        body = {
            "document": {**webchat.document_json(document), "mime_type": document.mime_type, "sha256": document.sha256,
                         "uploader": document.uploader, "replaces_id": document.replaces_id, "attempts": document.attempts},
            "replaced_by": _version_json(newer, document) if newer is not None else None,
            "versions": [_version_json(v, document) for v in versions],
            "events": [event_with_documents(e, named) for e in ordered],
            "chunks": {"total": document.chunk_count, "shown": [
                {"ordinal": c.ordinal, "heading_path": c.heading_path, "text": c.text, "tokens": c.token_count}
                for c in chunks]},
            "jobs": jobs,
            "questions": questions,
            "actions": {
                "delete": document.status != DocumentStatus.deleted,
                "restore": document.status == DocumentStatus.deleted,
                "new_version": document.status != DocumentStatus.deleted or newer is None,
                "retry_with_password": needs_password(document),
            },
        }
    return web.json_response(body)


async def delete(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        document = await request_deletion(session, tenant_id=tenant_id, document_id=request.match_info["id"],
                                          actor=admin_actor(request))
        body = {"document": webchat.document_json(document)}
    return web.json_response(body, status=202)


async def new_version(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        document = await DocumentRepository(session, tenant_id).get(request.match_info["id"])
        of = webchat.VersionOf(document.id, document.source, document.filename)
    return await webchat.take_upload(request, version_of=of)


async def retry(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    password = webchat.check_password((await read_json(request)).get("password"))
    if password is None:
        raise InvalidInput("send the PDF's 'password'")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        document = await retry_with_password(session, tenant_id=tenant_id, document_id=request.match_info["id"],
                                             actor=admin_actor(request), sealed_password=gw.box.encrypt(password))
        body = {"document": webchat.document_json(document)}
    return web.json_response(body, status=202)


#: (method, path under /admin/api/, handler) for `bot.admin.routes`.
API: list[tuple[str, str, Any]] = [
    ("GET", "documents", list_documents),
    ("GET", "documents/{id}/page", document_page),
    ("DELETE", "documents/{id}", delete),
    ("POST", "documents/{id}/versions", new_version),
    ("POST", "documents/{id}/retry", retry),
]
