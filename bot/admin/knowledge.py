"""The dashboard's knowledge history and uploader policy (behind the session cookie, per tenant).

    GET  /admin/api/knowledge-events[?document=ID]   the audit log: who added, replaced, deleted,
                                                     restored a document, or was refused, and when
    POST /admin/api/documents/{id}/restore           a replaced or deleted document back (re-indexed
                                                     through knowledge.service; recorded)
    GET  /admin/api/uploaders                        who may add documents, channel by channel
    POST /admin/api/uploaders                        {"channel", "mode"} and/or {"channel", "user_id",
                                                     "may_replace"?, "note"?} (list someone)
    POST /admin/api/uploaders/remove                 {"channel", "user_id"}

The person acting is the signed-in API key (``admin:api_key:<id>`` in the log).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.channels.web.routes import document_json
from bot.context import GATEWAY
from bot.http import API_KEY_ID, TENANT, read_json
from knowledge.audit import Actor, KnowledgeEventRepository, event_json
from knowledge.models import Document, DocumentStatus, KnowledgeEvent
from knowledge.repository import DocumentRepository
from knowledge.service import restore_document
from parley.db import unit_of_work
from parley.errors import InvalidInput
from tenants import uploaders


def admin_actor(request: web.Request) -> Actor:
    return Actor("admin", f"api_key:{request[API_KEY_ID]}", may_replace=True)


async def knowledge_events(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    try:
        limit = max(1, min(500, int(request.query.get("limit", "200"))))
    except ValueError as exc:
        raise InvalidInput("'limit' must be a number") from exc
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        events = await KnowledgeEventRepository(session, tenant_id).list(limit=limit,
                                                                          document_id=request.query.get("document"))
        documents = await event_documents(session, tenant_id, events)
    return web.json_response({"events": [event_with_documents(e, documents) for e in events]})


async def event_documents(session: Any, tenant_id: str, events: list[KnowledgeEvent]) -> dict[str, Document]:
    """The documents these events are about, by id (for `event_with_documents`)."""
    ids = {i for e in events for i in (e.document_id, e.replaced_document_id) if i}
    if not ids:
        return {}
    repo = DocumentRepository(session, tenant_id)
    return {d.id: d for d in (await session.execute(repo.select().where(Document.id.in_(ids)))).scalars()}


def event_with_documents(event: KnowledgeEvent, documents: dict[str, Document]) -> dict[str, Any]:
    out = event_json(event)
    for key, id_ in (("document", event.document_id), ("replaced_document", event.replaced_document_id)):
        doc = documents.get(id_ or "")
        out[key] = None if doc is None else {
            "id": doc.id, "filename": doc.filename, "status": doc.status.value, "source": doc.source,
            "restorable": doc.status == DocumentStatus.deleted,
        }
    return out


async def restore(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        document = await restore_document(session, tenant_id=tenant_id, document_id=request.match_info["id"],
                                          actor=admin_actor(request), plan=gw.intake.plan)
        body = {"document": document_json(document), "replaces": document.replaces_id}
    return web.json_response(body, status=202)


async def list_uploaders(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        return web.json_response({"channels": await uploaders.describe(session, tenant_id=tenant_id),
                                  "modes": [m.value for m in uploaders.UploadMode]})


async def change_uploaders(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    channel = uploaders.check_channel(str(data.get("channel") or ""))
    if not data.get("mode") and not data.get("user_id"):
        raise InvalidInput("send a 'mode' for the channel, or the 'user_id' of someone to list as an uploader")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        if data.get("mode"):
            await uploaders.set_mode(session, tenant_id=tenant_id, channel=channel, mode=str(data["mode"]))
        if data.get("user_id"):
            await uploaders.allow(session, tenant_id=tenant_id, channel=channel, user_id=str(data["user_id"]),
                                  may_replace=data.get("may_replace") is True, note=str(data.get("note") or ""),
                                  added_by=str(admin_actor(request)))
        return web.json_response({"channels": await uploaders.describe(session, tenant_id=tenant_id)})


async def remove_uploader(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    data = await read_json(request)
    channel = uploaders.check_channel(str(data.get("channel") or ""))
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        removed = await uploaders.disallow(session, tenant_id=tenant_id, channel=channel, user_id=str(data.get("user_id") or ""))
        return web.json_response({"removed": removed, "channels": await uploaders.describe(session, tenant_id=tenant_id)})


#: (method, path under /admin/api/, handler) for `bot.admin.routes`.
API: list[tuple[str, str, Any]] = [
    ("GET", "knowledge-events", knowledge_events),
    ("POST", "documents/{id}/restore", restore),
    ("GET", "uploaders", list_uploaders),
    ("POST", "uploaders", change_uploaders),
    ("POST", "uploaders/remove", remove_uploader),
]
