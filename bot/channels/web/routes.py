"""Web chat and the tenant admin API, for the tenant of the API key (``Authorization: Bearer pk_...``).

    GET  /chat                      the static chat page (no build step) and /chat/static/ its script and style
    GET  /chat/widget.js, /chat/w/{widget}[/session|/chat]   the embeddable widget (`bot.channels.web.widget`)
    POST /api/chat                  {"message", "conversation_id"?, "client_message_id"?} -> answer + citations
    GET  /api/chat/updates          ?conversation_id=&after=: who owns it (bot / a person) and the staff replies since
    POST /api/chat/feedback         {"message_id", "rating": "up"|"down", "comment"?} -> the recorded rating
                                    (`bot.feedback`: the same rating again changes nothing; the other replaces it)
    POST /api/documents             multipart "file" parts, streamed and size-capped -> 202 + documents
                                    (an optional "password" field opens password-protected PDFs)
                                    (who may: the tenant's uploader policy for "web"; 403 when closed;
                                    403 pass_through_only when the tenant takes API files only as pass-through)
    POST /api/v1/process            pass-through processing, nothing kept (`bot.channels.web.process`)
    /api/v1/webhooks[/{id}[/rotate|enable|disable|test]]   outbound webhooks (`bot.admin.webhooks`)
    GET  /api/documents[?status=]   GET /api/documents/{id}
    GET  /api/jobs                  GET /api/jobs/{id}   (with the report: "3 of 4 indexed; 1 failed: ...")
    GET  /api/conversations         recent inbound messages of every channel, with latency and status
    GET  /api/conversations/{id}    the message, its ratings (``feedback``) and the sends to the customer that
                                    did not go out (``delivery_failures``: outside Instagram's window, refused by Graph)
    GET  /api/slack/install-link    the signed link that installs the Slack bot for this tenant (single use, a day)

Every read goes through a tenant-scoped repository: another tenant's id is a 404, not a 403, so
the API does not even confirm that it exists.

The handlers read the caller's tenant from ``request[TENANT]`` (and key from ``request[API_KEY_ID]``)
and are wrapped at registration: here by the API-key check, in the admin dashboard
(`bot.admin.routes`) by its session-cookie check, so both serve the same logic.

The chat page is a browser client of the dashboard's session, not of the bearer API: it sends
the person to the dashboard's sign-in (``/admin/login?next=/chat``: the API key in, a signed
HttpOnly SameSite=Strict cookie out) and then asks ``/admin/api/chat`` and ``/admin/api/documents``
with the session's CSRF token, so no script ever holds the API key. The page and its assets carry
the dashboard's headers (`bot.http.SECURITY_HEADERS`: CSP without inline script, no framing,
nosniff). The ``/api/*`` routes above stay for scripts, which send the key themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from bot.channels.slack.oauth import install_link
from bot.context import GATEWAY
from bot.conversation.failures import DeliveryFailureRepository, failure_json
from bot.conversation.handoff import updates as handoff_updates
from bot.conversation.repository import InboundRepository
from bot.feedback import service as feedback
from bot.feedback.repository import FeedbackRepository
from bot.feedback.service import feedback_json
from bot.conversation.schemas import Attachment, Download, IncomingMessage, Reply, Standing
from bot.conversation.uploads import StoredFile
from bot.http import API_KEY_ID, SECURITY_HEADERS, TENANT, error_response, read_json, require_api_key
from bot.models import InboundMessage
from parley.db import unit_of_work
from knowledge.repository import DocumentRepository, JobRepository
from knowledge.audit import Actor
from knowledge.service import job_report, refuse_upload
from parley.errors import BadQuestion, Forbidden, InvalidInput, ParleyError, TooLarge, Unavailable
from retrieval.schemas import MAX_MESSAGE_CHARS, question_problem
from tenants import uploaders
from knowledge.models import Document, DocumentStatus

STATIC = Path(__file__).parent / "static"
MAX_FILES_PER_REQUEST = 20
_ACCEPT = re.compile(r'\baccept="[^"]*"')

auth = require_api_key(lambda request: request.app[GATEWAY].sessions, lambda request: request.app[GATEWAY].limits)


class WebChannel:
    """The web chat answers in the HTTP response; there is nothing to post and nothing to fetch."""

    name = "web"
    reply_window = None

    async def send(self, *, tenant_id: str, route: dict[str, Any], reply: Reply, progress: dict[str, Any],
                   by: str = "bot") -> None:
        return None

    @contextlib.asynccontextmanager
    async def download(self, *, tenant_id: str, route: dict[str, Any], attachment: Attachment) -> AsyncIterator[Download]:
        raise InvalidInput("web uploads arrive through POST /api/documents")
        yield  # pragma: no cover

    async def standing(self, *, tenant_id: str, route: dict[str, Any], sender_id: str) -> Standing:
        if sender_id.startswith("visitor:"):  # an anonymous visitor of a tenant's widget
            return Standing(admin=False, why="a web chat widget visitor")
        return Standing(admin=True, why="holds an admin API key")  # the chat page and the API need one


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def document_json(d: Document) -> dict[str, Any]:
    return {"id": d.id, "filename": d.filename, "status": d.status.value, "error": d.error, "error_code": d.error_code,
            "chunks": d.chunk_count, "size": d.size_bytes, "source": d.source, "job_id": d.job_id,
            "created_at": _iso(d.created_at), "updated_at": _iso(d.updated_at), "indexed_at": _iso(d.indexed_at),
            # False: the uploaded file was deleted once indexed (the tenant's retention policy); its chunks stay
            "original_kept": d.original_deleted_at is None, "original_deleted_at": _iso(d.original_deleted_at)}


def message_json(m: InboundMessage) -> dict[str, Any]:
    return {"id": m.id, "channel": m.channel, "conversation_id": m.conversation_id, "sender_id": m.sender_id,
            "text": m.text[:500], "status": m.status, "reply": m.reply, "citations": m.citations or [], "error": m.error,
            "attempts": m.attempts, "ack_ms": m.ack_ms, "answer_ms": m.answer_ms,
            "received_at": _iso(m.received_at), "answered_at": _iso(m.answered_at)}


# --- chat ---------------------------------------------------------------------------------


async def chat(request: web.Request) -> web.Response:
    key_id = request[API_KEY_ID]
    return await answer_now(request.app[GATEWAY], await read_json(request), tenant_id=request[TENANT],
                            sender_id=f"api_key:{key_id}", scope=key_id)


async def chat_updates(request: web.Request) -> web.Response:
    """``GET /api/chat/updates?conversation_id=&after=``: a handed-off conversation's state and the
    staff replies and notices since the cursor (the chat polls while a person owns the conversation)."""
    gw, tenant_id, key_id = request.app[GATEWAY], request[TENANT], request[API_KEY_ID]
    conversation = str(request.query.get("conversation_id") or "default")[:64]
    try:
        after = max(0, int(request.query.get("after") or 0))
    except ValueError as exc:
        raise InvalidInput("'after' must be a number (the cursor of the last poll)") from exc
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        body = await handoff_updates(session, tenant_id=tenant_id, channel="web",
                                     conversation_id=f"web:{key_id}:{conversation}", after=after)
    return web.json_response(body)


async def answer_now(gw: Any, data: dict[str, Any], *, tenant_id: str, sender_id: str, scope: str) -> web.Response:
    """Ask ``data["message"]`` as ``sender_id`` and answer in the response (the chat page, the API and
    the widget). ``scope`` keeps one sender's conversations and resends apart from everyone else's."""
    message = str(data.get("message") or "").strip()
    if not message or len(message) > MAX_MESSAGE_CHARS:  # a 400 whose detail is the polite reply, never cut short
        raise BadQuestion(question_problem(message) or "'message' is required")
    conversation = str(data.get("conversation_id") or "default")[:64]
    client_id = str(data.get("client_message_id") or uuid.uuid4().hex)[:64]
    incoming = IncomingMessage(
        channel="web", tenant_id=tenant_id, external_event_id=f"{scope}:{client_id}",
        conversation_id=f"web:{scope}:{conversation}", sender_id=sender_id, text=message,
    )
    gw.limits.check_question(incoming, gw.answers)  # 429 past the sender's or tenant's rate, or a full backlog
    accepted = await gw.writer.accept(incoming, want_existing=True)
    if accepted.created:
        outcome = await gw.answers.run(tenant_id, accepted.message_id)
        body = {"message_id": accepted.message_id, "status": outcome.status, "answer": outcome.reply,
                "citations": outcome.citations, "answer_ms": outcome.answer_ms}
        if outcome.status == "failed":
            return error_response(503, "unavailable", outcome.error, headers={"Retry-After": "5"})
        if outcome.quota is not None:  # the plan's questions are used up: a 429 naming the limit
            raise outcome.quota
        return web.json_response(body)
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:  # a resend of the same client message
        row = await InboundRepository(session, tenant_id).get(accepted.message_id)
        body = {"message_id": row.id, "status": row.status, "answer": row.reply, "citations": row.citations or [],
                "answer_ms": row.answer_ms}
    return web.json_response(body, status=200 if row.status in ("answered", "failed") else 202)


# --- documents ----------------------------------------------------------------------------


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(1 << 16):
        yield chunk


async def web_uploader(gw: Any, tenant_id: str, key_id: str) -> Actor:
    """The holder of this API key as an uploader (the tenant's policy for the web channel), or
    `Forbidden` with the reason, recorded in the audit log."""
    user_id = f"api_key:{key_id}"
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        permission = await uploaders.decide(session, tenant_id=tenant_id, channel="web", user_id=user_id,
                                            channel_admin=True, admin_reason="holds an admin API key")
        actor = Actor("web", user_id, may_replace=permission.may_replace)
        if not permission.may_upload:
            refuse_upload(session, tenant_id=tenant_id, actor=actor, filenames=["(web upload)"], why=permission.reason)
    if not permission.may_upload:
        raise Forbidden(permission.reason)
    return actor


#: The longest PDF password taken (PDF passwords are at most 127 bytes; room for UTF-8).
PASSWORD_MAX_BYTES = 512


def check_password(value: Any) -> str | None:
    """A password a person typed, or None when the field was left empty; a clear 400 otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("'password' must be text")
    if len(value.encode("utf-8", "surrogatepass")) > PASSWORD_MAX_BYTES:
        raise InvalidInput(f"the password is longer than {PASSWORD_MAX_BYTES} bytes")
    return value or None


async def read_password(part: BodyPartReader) -> str | None:
    data = b""
    async for chunk in _chunks(part):
        data += chunk
        if len(data) > PASSWORD_MAX_BYTES:
            raise InvalidInput(f"the password is longer than {PASSWORD_MAX_BYTES} bytes")
    try:
        return check_password(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidInput("the password is not valid UTF-8 text") from exc


@dataclass(frozen=True)
class VersionOf:
    """The document an upload is a new version of (the dashboard's "upload a new version")."""

    document_id: str
    source: str
    filename: str


async def upload(request: web.Request) -> web.Response:
    from passthrough.service import refuse_if_pass_through_only

    async with unit_of_work(request.app[GATEWAY].sessions, tenant_id=request[TENANT]) as session:
        await refuse_if_pass_through_only(session, tenant_id=request[TENANT])  # 403 pointing to /api/v1/process
    return await take_upload(request)


async def take_upload(request: web.Request, *, version_of: VersionOf | None = None) -> web.Response:
    """Multipart "file" parts (and an optional "password" field: the password of protected PDFs in
    the upload, sealed with the platform's key for the worker and stored nowhere). ``version_of``:
    one file, a new version of that document (kept under its name and source, whatever the file
    is called), which replaces it once indexed."""
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    actor = await web_uploader(gw, tenant_id, request[API_KEY_ID])
    max_files = 1 if version_of is not None else MAX_FILES_PER_REQUEST
    password: str | None = None
    limit = await gw.intake.limit_for(tenant_id)
    if request.content_length is not None and request.content_length > limit * MAX_FILES_PER_REQUEST + (1 << 20):
        raise TooLarge(f"the upload is larger than {MAX_FILES_PER_REQUEST} files of the {limit:,}-byte limit")
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the files as multipart/form-data, field name 'file'")
    reader = await request.multipart()
    stored: list[StoredFile] = []
    rejected: list[dict[str, str]] = []
    try:  # whatever ends the request early (too many files, a broken body, a lost client), no blob stays behind
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "password" and not part.filename:
                password = await read_password(part)
                continue
            if not isinstance(part, BodyPartReader) or not part.filename:
                continue
            if len(stored) + len(rejected) >= max_files:
                raise TooLarge(f"at most {max_files} file{'s' if max_files > 1 else ''} per upload; nothing was kept")
            name = version_of.filename if version_of is not None else Path(part.filename).name[:255] or "upload"
            try:
                mime = gw.intake.check_supported(name, part.headers.get("Content-Type"))
                blob = await gw.intake.store(tenant_id, name, _chunks(part), max_bytes=limit)
            except ParleyError as exc:
                detail = f"{name} is larger than the limit of {limit:,} bytes" if isinstance(exc, TooLarge) else exc.message
                rejected.append({"filename": name, "error": exc.code, "detail": detail})
                gw.metrics.uploads.labels("web", exc.code).inc()
                continue
            stored.append(StoredFile(name, mime, blob))
            gw.metrics.uploads.labels("web", "stored").inc()
        if not stored:
            if not rejected:
                raise InvalidInput("no file in the upload (use the multipart field 'file')")
            status = 413 if all(r["error"] == "too_large" for r in rejected) else 415 if all(
                r["error"] == "unsupported_type" for r in rejected) else 400
            return web.json_response({"error": rejected[0]["error"], "detail": "; ".join(r["detail"] for r in rejected),
                                      "rejected": rejected}, status=status)
        submission = await gw.intake.submit(tenant_id, source=version_of.source if version_of else "web", files=stored,
                                            notify=None, description=f"{len(stored)} files uploaded in the web chat",
                                            actor=actor, sealed_password=gw.box.encrypt(password) if password else None,
                                            version_of=version_of.document_id if version_of else None)
    except BaseException:
        await asyncio.shield(gw.intake.discard(tenant_id, [f.blob for f in stored]))
        raise
    for f in submission.files:
        if f.refused:
            rejected.append({"filename": f.name, "error": "forbidden", "detail": f"{f.name}: {f.refused}"})
            gw.metrics.uploads.labels("web", "refused").inc()
    taken = [f for f in submission.files if not f.refused]
    if not taken:
        return web.json_response({"error": "forbidden", "detail": "; ".join(r["detail"] for r in rejected),
                                  "rejected": rejected}, status=403)
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        repo = DocumentRepository(session, tenant_id)
        documents = [document_json(await repo.get(f.document_id)) for f in taken]
    return web.json_response({"documents": documents, "job_id": submission.job_id, "rejected": rejected}, status=202)


async def list_documents(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    status = request.query.get("status")
    try:
        wanted = DocumentStatus(status) if status else None
    except ValueError as exc:
        raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(s.value for s in DocumentStatus)}") from exc
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await DocumentRepository(session, tenant_id).list(status=wanted, limit=_limit(request))
        return web.json_response({"documents": [document_json(d) for d in rows]})


async def get_document(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        return web.json_response(document_json(await DocumentRepository(session, tenant_id).get(request.match_info["id"])))


async def list_jobs(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        jobs = await JobRepository(session, tenant_id).list(limit=_limit(request))
        return web.json_response({"jobs": [job_json(j) for j in jobs]})


async def get_job(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        job = await JobRepository(session, tenant_id).get(request.match_info["id"])
        return web.json_response({**job_json(job), "report": await job_report(session, job)})


def job_json(j: Any) -> dict[str, Any]:
    return {"id": j.id, "kind": j.kind, "status": j.status.value, "total": j.total, "done": j.done, "failed": j.failed,
            "description": j.description, "created_at": _iso(j.created_at), "finished_at": _iso(j.finished_at)}


async def list_conversations(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await InboundRepository(session, tenant_id).recent(limit=_limit(request), channel=request.query.get("channel"))
        return web.json_response({"messages": [message_json(m) for m in rows]})


async def get_conversation(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        row = await InboundRepository(session, tenant_id).get(request.match_info["id"])
        ratings = await FeedbackRepository(session, tenant_id).of_messages([row.id])
        failures = await DeliveryFailureRepository(session, tenant_id).of_conversation(row.channel, row.conversation_id)
        return web.json_response({**message_json(row), "feedback": [feedback_json(f) for f in ratings],
                                  "delivery_failures": [failure_json(f) for f in failures]})


async def chat_feedback(request: web.Request) -> web.Response:
    return await rate_answer(request.app[GATEWAY], await read_json(request), tenant_id=request[TENANT],
                             rater_id=f"api_key:{request[API_KEY_ID]}")


async def rate_answer(gw: Any, data: dict[str, Any], *, tenant_id: str, rater_id: str, asker: str | None = None) -> web.Response:
    """Rate an answer of the web chat (the page, the API, a widget's visitor: ``asker``, who may rate
    only answers to their own questions). 400 for a bad rating, 404 for an unknown answer."""
    message_id, rating, comment = data.get("message_id"), data.get("rating"), data.get("comment")
    if not isinstance(message_id, str) or not message_id:
        raise InvalidInput("'message_id' is the id of the answered message (the chat's answer gives it)")
    if not isinstance(rating, str) or rating not in feedback.RATINGS:
        raise InvalidInput("'rating' is 'up' or 'down'")
    if comment is not None and not isinstance(comment, str):
        raise InvalidInput("'comment' is text")
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rated = await feedback.rate(session, tenant_id=tenant_id, message_id=message_id[:32], rater_id=rater_id,
                                    rating=rating, channel="web", comment=comment, asker=asker)
    if rated.changed:
        gw.metrics.feedback.labels("web", rating).inc()
    if rated.comment and comment:
        gw.metrics.feedback_comments.labels("web").inc()
    return web.json_response({"message_id": rated.message_id, "rating": rated.rating, "comment": rated.comment,
                              "created": rated.created, "changed": rated.changed})


async def slack_install_link(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if not gw.config.slack_oauth_enabled:
        raise Unavailable("Slack install is not configured on this gateway")
    url = install_link(gw.signer, gw.config.public_url, request[TENANT], ttl=gw.config.slack_install_link_ttl)
    return web.json_response({"url": url, "expires_in": int(gw.config.slack_install_link_ttl), "single_use": True})


def _limit(request: web.Request) -> int:
    try:
        return max(1, min(500, int(request.query.get("limit", "100"))))
    except ValueError as exc:
        raise InvalidInput("'limit' must be a number") from exc


def page_for_uploads(page: Path, request: web.Request) -> str:
    """A static page whose file pickers (``accept="..."``) offer every format this gateway accepts."""
    accept = html.escape(request.app[GATEWAY].intake.formats.accept())
    return _ACCEPT.sub(f'accept="{accept}"', page.read_text(encoding="utf-8"))


async def chat_page(request: web.Request) -> web.Response:
    return web.Response(text=page_for_uploads(STATIC / "index.html", request), content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/chat")


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/chat" or request.path.startswith("/chat/"):
        if request.path.startswith("/chat/w/") and "Content-Security-Policy" in response.headers:
            return  # the widget's frame sets its own: framing allowed to the widget's origins only (bot.channels.web.widget)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def setup_web_routes(app: web.Application) -> None:
    from bot.channels.web.process import setup_process_routes  # pass-through processing: POST /api/v1/process
    from bot.channels.web.widget import setup_widget_routes  # it builds on this module's answer_now

    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", root)
    app.router.add_get("/chat", chat_page)
    app.router.add_static("/chat/static", STATIC, append_version=False)
    setup_widget_routes(app)  # the embeddable widget: /chat/widget.js and its frame (bot.channels.web.widget)
    app.router.add_post("/api/chat", auth(chat))
    app.router.add_get("/api/chat/updates", auth(chat_updates))  # staff replies in a handed-off conversation
    app.router.add_post("/api/chat/feedback", auth(chat_feedback))
    app.router.add_post("/api/documents", auth(upload))
    app.router.add_get("/api/documents", auth(list_documents))
    app.router.add_get("/api/documents/{id}", auth(get_document))
    app.router.add_get("/api/jobs", auth(list_jobs))
    app.router.add_get("/api/jobs/{id}", auth(get_job))
    app.router.add_get("/api/conversations", auth(list_conversations))
    app.router.add_get("/api/conversations/{id}", auth(get_conversation))
    app.router.add_get("/api/slack/install-link", auth(slack_install_link))
    from bot.admin.webhooks import API as WEBHOOKS_API  # outbound webhooks, the same handlers as the dashboard's

    for method, path, handler in WEBHOOKS_API:
        app.router.add_route(method, f"/api/v1/{path}", auth(handler))
    setup_process_routes(app)
