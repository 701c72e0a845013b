"""The admin dashboard: one static page per tenant view, filled from a JSON API, behind a session cookie.

    GET  /admin/login, POST /admin/login      the sign-in form (a tenant API key) -> session cookie
                                              (wrong keys count per address: 429 when locked out, `bot.limits`)
    POST /admin/logout
    GET  /admin/{documents,history,jobs,dead-letters,channels,conversations,chat,analytics,webhooks,...}   the pages (one static shell)
    GET  /admin/static/...                    its script and style sheet (no build step)

    GET  /admin/api/session                   tenant, key prefix and the CSRF token for the page's POSTs
    GET  /admin/documents/{id}                a document's page (the same shell)
    GET  /admin/api/documents[?q=&status=&limit=&offset=]   a page of them, the total and the counts by status;
         /admin/api/documents/{id}/page, DELETE /admin/api/documents/{id}, POST .../{id}/versions, .../{id}/retry
                                              (`bot.admin.documents`)     GET /admin/api/documents/{id}
    POST /admin/api/documents                 upload (the web chat's handler; optional "password" field)
    GET  /admin/api/jobs                      with done/failed/total, the report and its breakdown   GET /admin/api/jobs/{id}
    GET  /admin/api/dead-letters[?all=1]      POST /admin/api/dead-letters/{id}/replay (through parley.bus.replay)
    GET  /admin/api/channels                  installations and their health
    GET  /admin/api/channels/setup, POST /admin/api/channels/{slack,instagram,shopify}, POST .../{kind}/{ref}/{disconnect,rotate}
                                              connecting channels without code (`bot.admin.channels`)
    GET  /admin/api/conversations             recent messages with answer latency   GET /admin/api/conversations/{id}
    POST /admin/api/chat                      ask (the web chat's handler)
    POST /admin/api/chat/feedback             rate an answer (the web chat's handler)
    GET  /admin/api/knowledge-events, POST /admin/api/documents/{id}/restore, GET/POST /admin/api/uploaders,
    POST /admin/api/uploaders/remove          the knowledge history and who may upload (`bot.admin.knowledge`)
    GET  /admin/api/analytics[?since=7d], GET /admin/api/analytics.csv   the figures and the to-do list (`bot.admin.analytics`)
    GET  /admin/api/passthrough, POST /admin/api/passthrough/api-uploads   pass-through processing: the API upload
                                              mode and the recent requests, metadata only (`bot.admin.passthrough`)
    GET/POST /admin/api/webhooks, GET/PATCH/DELETE /admin/api/webhooks/{id}, POST .../{id}/{rotate,enable,disable,test}
                                              outbound webhooks and their delivery log (`bot.admin.webhooks`)
    GET  /admin/api/usage                     the plan's limits and what is used, for the "Plan & usage" page
                                              (`bot.admin.usage`)
    GET/POST /admin/api/retention, POST /admin/api/erasure   the Privacy page: retention settings, erasing
                                              one end customer with a dry-run preview (`bot.privacy.routes`)
    GET/POST /admin/api/widgets, POST /admin/api/widgets/{id}/{origins,revoke}
                                              the embeddable web chat widgets (`bot.admin.widgets`)

The dashboard is per tenant: whoever signs in with a tenant's API key sees that tenant only, every
read going through a tenant-scoped repository (another tenant's id is a 404). Platform-wide views
(every tenant, dead letters with no tenant) stay with the admin CLI. Authentication, cookie and
CSRF: `bot.admin.session`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.admin import analytics, documents, knowledge, widgets
from bot.admin import handoff as handoff_admin
from bot.admin import passthrough as passthrough_admin
from bot.admin import usage as usage_admin
from bot.admin import webhooks as webhooks_admin
from bot.admin import channels as channel_connect
from bot.admin import session as auth
from bot.admin.repository import (
    ChannelHealthReader, DeadLetterRepository, dead_letter_json, document_names, latency_summary,
)
from bot.channels.web import routes as webchat
from bot.conversation.failures import by_message as delivery_failures_by_message, failure_json
from bot.feedback.repository import FeedbackRepository
from bot.feedback.service import feedback_json
from bot.privacy import routes as privacy
from bot.context import GATEWAY
from bot.conversation.repository import InboundRepository
from bot.http import SECURITY_HEADERS, TENANT
from knowledge.retry import REPLAY_RULES as KNOWLEDGE_RULES
from webhooks.service import REPLAY_RULES as WEBHOOK_RULES
from parley.bus import replay
from parley.bus.dead_letters import check_replays
from parley.db import unit_of_work
from knowledge.repository import JobRepository
from knowledge.service import job_breakdown, report_text
from parley.errors import AlreadyExists, InvalidInput, Unavailable
from tenants.repository import ApiKeyRepository, TenantDirectory, authenticate_api_key

STATIC = Path(__file__).parent / "static"
#: Which dead letters a replay can help, by message type (documents, webhook deliveries).
REPLAY_RULES = {**KNOWLEDGE_RULES, **WEBHOOK_RULES}

PAGES = ("documents", "history", "jobs", "dead-letters", "channels", "conversations", "chat", "analytics", "passthrough",
         "handoff", "webhooks", "usage", "privacy")

# Every dashboard response carries bot.http.SECURITY_HEADERS (shared with the web chat's pages).


# --- sign-in --------------------------------------------------------------------------------


def _login_page(*, error: str | None = None, next_: str = "/admin/", status: int = 200) -> web.Response:
    problem = f'<p class="error" id="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Parley admin</title><link rel="stylesheet" href="/admin/static/admin.css"></head>
<body class="login"><main class="login-card">
<h1><span class="logo">Parley</span> admin</h1>
<p class="muted">Sign in with one of your tenant's API keys (<code>parley keys create --tenant NAME</code>).</p>
{problem}
<form method="post" action="/admin/login" id="login-form">
<label for="api_key">API key</label>
<input id="api_key" name="api_key" type="password" placeholder="pk_…" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{html.escape(next_)}">
<button type="submit" class="primary">Sign in</button>
</form></main></body></html>"""
    return web.Response(text=body, content_type="text/html", status=status)


async def login_form(request: web.Request) -> web.Response:
    if await auth.current(request) is not None:
        raise web.HTTPSeeOther(auth.safe_next(request.query.get("next")))
    return _login_page(next_=auth.safe_next(request.query.get("next")))


async def login(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    auth.check_origin(gw, request)
    form = await request.post()
    key, target = str(form.get("api_key") or "").strip(), auth.safe_next(form.get("next"))
    with gw.limits.sign_in(request, "admin_login") as attempt:  # 429 while the address is locked out
        async with unit_of_work(gw.sessions) as session:
            row = await authenticate_api_key(session, key) if key else None
            found = (row.tenant_id, row.id) if row is not None else None
        if found is None and key:
            attempt.failed()
    if found is None:
        return _login_page(error="Unknown or revoked API key.", next_=target, status=401)
    response = _see_other(target)
    auth.set_cookie(gw, request, response, auth.issue(gw, tenant_id=found[0], key_id=found[1]))
    return response


async def logout(request: web.Request) -> web.Response:
    response = _see_other("/admin/login")
    auth.clear_cookie(response)
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


# --- pages ----------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin/documents")


async def page(request: web.Request) -> web.Response:
    return web.Response(text=webchat.page_for_uploads(STATIC / "admin.html", request), content_type="text/html",
                        headers={"Cache-Control": "no-store"})


# --- API --------------------------------------------------------------------------------------


async def session_info(request: web.Request) -> web.Response:
    gw, current = request.app[GATEWAY], request[auth.SESSION]
    async with unit_of_work(gw.sessions, tenant_id=current.tenant_id) as session:
        key = await ApiKeyRepository(session, current.tenant_id).get(current.key_id)
        tenant = await TenantDirectory(session).by_id(current.tenant_id)
        dead = await DeadLetterRepository(session, current.tenant_id).count_dead()
        body = {"tenant": {"id": current.tenant_id, "name": tenant.name if tenant else "",
                           "display_name": (tenant.display_name or tenant.name) if tenant else ""},
                "key": {"id": key.id, "name": key.name, "prefix": key.prefix},
                "csrf": auth.csrf_token(gw, current), "expires_at": current.expires, "dead_letters": dead}
    return web.json_response(body)


async def jobs(request: web.Request) -> web.Response:
    """Each job with its one-line report and its breakdown (success first, failures grouped by reason,
    each with its files: `knowledge.service.job_breakdown`)."""
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await JobRepository(session, tenant_id).list(limit=_limit(request, 50))
        out = []
        for j in rows:
            breakdown = await job_breakdown(session, j)
            out.append({**webchat.job_json(j), "report": report_text(breakdown), "breakdown": breakdown,
                        "pending": max(0, j.total - j.done - j.failed), "stall_reason": j.stall_reason,
                        "stall_detail": j.stall_detail,
                        "stalled_at": j.stalled_at.isoformat() if j.stalled_at else None})
        return web.json_response({"jobs": out})


async def resume_job(request: web.Request) -> web.Response:
    """Re-queue a stalled job's pending items (the CLI's `parley jobs resume`; idempotent)."""
    from knowledge.stalls import resume

    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        job = await JobRepository(session, tenant_id).resolve(request.match_info["id"])
        done = await resume(session, tenant_id=tenant_id, job_id=job.id)
    return web.json_response({"job_id": done.job_id, "requeued": done.requeued, "already_running": done.already_running},
                             status=202 if done.requeued else 200)


async def dead_letters(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await DeadLetterRepository(session, tenant_id).list(include_replayed=request.query.get("all") == "1",
                                                                   limit=_limit(request))
        names = await document_names(session, tenant_id, rows)
        verdicts = await check_replays(session, rows, rules=REPLAY_RULES)  # the Replay button only where it can help
        return web.json_response({"dead_letters": [dead_letter_json(r, names, verdicts.get(r.id)) for r in rows]})


async def replay_dead_letter(request: web.Request) -> web.Response:
    """Replay one of the tenant's dead letters through the bus's own replay (the CLI's `dlq replay`),
    under the same rule: a failure for good only once something changed (409 saying what to do)."""
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    try:
        id_ = int(request.match_info["id"])
    except ValueError as exc:
        raise InvalidInput("a dead letter id is a number") from exc
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        row = await DeadLetterRepository(session, tenant_id).get(id_)  # another tenant's: 404
        queue, status = row.queue, row.status
    if status != "dead":
        raise AlreadyExists(f"dead letter {id_} was already replayed")
    if not gw.broker.is_connected:
        raise Unavailable("the message broker is not connected; try again in a moment")
    rows = await replay(gw.sessions, gw.broker, queue=queue, ids=[id_], rules=REPLAY_RULES)
    if not rows:  # replayed by someone else in the meantime
        raise AlreadyExists(f"dead letter {id_} was already replayed")
    return web.json_response({"replayed": [dead_letter_json(r) for r in rows],
                              "message_id": rows[0].replay_message_id}, status=202)


async def channels(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        return web.json_response({"channels": await ChannelHealthReader(session, tenant_id).installations()})


async def conversations(request: web.Request) -> web.Response:
    gw, tenant_id = request.app[GATEWAY], request[TENANT]
    async with unit_of_work(gw.sessions, tenant_id=tenant_id) as session:
        rows = await InboundRepository(session, tenant_id).recent(limit=_limit(request), channel=request.query.get("channel"))
        # what the customer did not receive (outside Instagram's window, refused by Graph) and the ratings
        failures = await delivery_failures_by_message(session, tenant_id, rows)
        ratings: dict[str, list[Any]] = {}
        for f in await FeedbackRepository(session, tenant_id).of_messages([m.id for m in rows]):
            ratings.setdefault(f.message_id, []).append(feedback_json(f))
        return web.json_response({"messages": [{**webchat.message_json(m), "feedback": ratings.get(m.id, []),
                                                "delivery_failures": [failure_json(f) for f in failures.get(m.id, [])]}
                                               for m in rows], "latency": latency_summary(rows)})


def _limit(request: web.Request, default: int = 100) -> int:
    try:
        return max(1, min(500, int(request.query.get("limit", str(default)))))
    except ValueError as exc:
        raise InvalidInput("'limit' must be a number") from exc


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/admin" or request.path.startswith("/admin/"):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path.startswith("/admin/api/"):
            response.headers["Cache-Control"] = "no-store"


def setup_admin_routes(app: web.Application) -> None:
    app.on_response_prepare.append(_security_headers)
    guard = auth.require_session
    app.router.add_get("/admin", root)
    app.router.add_get("/admin/", root)
    app.router.add_get("/admin/login", login_form)
    app.router.add_post("/admin/login", login)
    app.router.add_post("/admin/logout", guard(logout))
    app.router.add_static("/admin/static", STATIC, append_version=False)
    for name in PAGES:
        app.router.add_get(f"/admin/{name}", guard(page, page=True))
    app.router.add_get("/admin/documents/{id}", guard(page, page=True))  # a document's page (same shell)
    api: list[tuple[str, str, Any]] = [
        ("GET", "session", session_info),
        *documents.API,  # the list (search, filter, pages), a document's page, delete, versions, retry (bot.admin.documents)
        ("POST", "documents", webchat.upload),
        ("GET", "documents/{id}", webchat.get_document),
        ("GET", "jobs", jobs),
        ("GET", "jobs/{id}", webchat.get_job),
        ("POST", "jobs/{id}/resume", resume_job),  # a stalled job's pending items again (knowledge.stalls)
        ("GET", "dead-letters", dead_letters),
        ("POST", "dead-letters/{id}/replay", replay_dead_letter),
        ("GET", "channels", channels),
        *channel_connect.API,  # connect, disconnect, rotate, setup paths (bot.admin.channels)
        ("GET", "conversations", conversations),
        ("GET", "conversations/{id}", webchat.get_conversation),
        ("POST", "chat", webchat.chat),
        ("GET", "chat/updates", webchat.chat_updates),  # staff replies in a handed-off chat (bot.conversation.handoff)
        ("POST", "chat/feedback", webchat.chat_feedback),  # 👍/👎 under the chat page's answers (bot.feedback)
        *knowledge.API,  # the knowledge history, restore, and who may upload (bot.admin.knowledge)
        *widgets.API,  # the web chat widgets and their snippets (bot.admin.widgets)
        *analytics.API,  # the figures, the to-do list and its CSV (bot.admin.analytics)
        *handoff_admin.API,  # handoff settings, handed-off conversations, take / resolve / hand back (bot.admin.handoff)
        *privacy.API,  # retention settings and erasure of one end customer (bot.privacy.routes)
        *passthrough_admin.API,  # the API upload mode and the pass-through requests (bot.admin.passthrough)
        *usage_admin.API,  # the plan's limits and what is used (bot.admin.usage)
        *webhooks_admin.API,  # outbound webhook endpoints, rotation, test, delivery log (bot.admin.webhooks)
    ]
    for method, path, handler in api:
        app.router.add_route(method, f"/admin/api/{path}", guard(handler))
