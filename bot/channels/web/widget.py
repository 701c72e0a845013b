"""The embeddable web chat widget: a tenant's chat on the tenant's own site, without any key on it.

    GET  /chat/widget.js                 the script a tenant's page loads:
                                         <script src="https://GATEWAY/chat/widget.js" data-widget="wgt_..." async></script>
                                         it draws a floating button that opens the chat in an iframe
    GET  /chat/w/{widget}                the chat inside that iframe (static page, script and style)
    POST /chat/w/{widget}/session        {"embedder"?} -> an anonymous visitor session (a signed token)
    POST /chat/w/{widget}/chat           Authorization: Bearer <visitor token>, {"message", ...} -> the answer
    POST /chat/w/{widget}/feedback       Authorization: Bearer <visitor token>, {"message_id", "rating", "comment"?}:
                                         👍/👎 on an answer to one of the visitor's own questions

Who may do what: the widget id (``wgt_...``, `tenants.widgets`) is public - it is in the tenant's
page source - and proves nothing but which tenant's chat to show. Its allowed origins decide where
it may be shown: the frame's CSP says ``frame-ancestors <allowed origins>`` (the browser refuses to
draw it anywhere else), a frame request whose ``Referer`` names another site is refused, and so is
a session asked for on behalf of another site (``embedder``: the frame's ancestor origin, which the
page's script reads from the browser). The widget's own requests must come from the frame itself
(same origin: a foreign ``Origin`` or a cross-site ``Sec-Fetch-Site`` is a 403), so another site's
script cannot ask in a visitor's name. The host page never sees a token: the session lives in the
frame (a signed token in the frame's memory and sessionStorage, not a cookie: third-party cookies
are blocked by browsers anyway).

A visitor is a sender like any other (``visitor:<id>``), under the same per-sender and per-tenant
question limits and answer backlog (`bot.limits`); since a new session would be a new sender, new
sessions are limited per client address too. A visitor may only ask: no uploads, no dashboard.
Revoking the widget ends it at once: its frame is a 404 and its sessions are refused.
"""

from __future__ import annotations

import html
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.channels.web.routes import answer_now, rate_answer
from bot.context import GATEWAY, Gateway
from bot.conversation.handoff import updates as handoff_updates
from bot.http import SECURITY_HEADERS, read_json
from parley.db import unit_of_work
from parley.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from parley.logging import bound
from tenants.repository import TenantDirectory
from tenants.widgets import Widget, find_widget, normalize_origin, widget_json

STATIC = Path(__file__).parent / "static"
VISITOR_PURPOSE = "widget-visitor"
#: How long a visitor session lasts; the frame asks for a new one when it has expired.
VISITOR_TTL = 12 * 3600.0


def own_origins(gw: Gateway, request: web.Request) -> set[str]:
    """The gateway's own origin(s): as the request reached it, and its public URL."""
    public = urlsplit(gw.config.public_url)
    return {f"{request.scheme}://{request.host}", f"{public.scheme}://{public.netloc}"}


def frame_policy(widget: Widget) -> dict[str, str]:
    """The frame's headers: the dashboard's CSP, except that the widget's origins may frame it."""
    csp = SECURITY_HEADERS["Content-Security-Policy"].replace("frame-ancestors 'none'",
                                                             "frame-ancestors " + " ".join(widget.origins))
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"}


async def _active(gw: Gateway, widget_id: str) -> tuple[Widget, str]:
    """The active widget with this id and its tenant's display name, or `NotFound`."""
    async with unit_of_work(gw.sessions) as session:
        widget = await find_widget(session, widget_id)
        if widget is None:
            raise NotFound("this chat is not available (unknown or revoked widget)")
        tenant = await TenantDirectory(session).by_id(widget.tenant_id)
        return widget, (tenant.display_name or tenant.name) if tenant else ""


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return normalize_origin(f"{urlsplit(url).scheme}://{urlsplit(url).netloc}")
    except (InvalidInput, ValueError):
        return "(unreadable)"


def _allowed(gw: Gateway, request: web.Request, widget: Widget, origin: str) -> bool:
    return origin in widget.origins or origin in own_origins(gw, request)


def _from_the_frame(gw: Gateway, request: web.Request) -> None:
    """The widget's API answers its own frame only, never another site's script."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        raise Forbidden(f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("Origin")
    if origin is not None and origin not in own_origins(gw, request):
        raise Forbidden("cross-origin request refused: the widget's chat talks only to its own frame")


def _notice_page(status: int, title: str, text: str) -> web.Response:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><link rel="stylesheet" href="/admin/static/admin.css">
<link rel="stylesheet" href="/chat/static/chat.css"></head>
<body class="chat-body"><main class="chat-notice"><h1>{html.escape(title)}</h1><p class="muted">{html.escape(text)}</p></main></body></html>"""
    return web.Response(text=body, status=status, content_type="text/html", headers={"Cache-Control": "no-store"})


# --- routes ---------------------------------------------------------------------------------


async def widget_script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "widget.js", headers={"Content-Type": "application/javascript; charset=utf-8",
                                                           "Cache-Control": "public, max-age=300"})


async def frame(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        widget, _ = await _active(gw, request.match_info["widget"])
    except NotFound:
        return _notice_page(404, "Chat not available", "This chat widget does not exist or was switched off by its owner.")
    embedder = _origin_of(request.headers.get("Referer"))
    if embedder is not None and not _allowed(gw, request, widget, embedder):
        return _notice_page(403, "Chat not available here", f"This chat may not be shown on {embedder}.")
    return web.Response(text=(STATIC / "frame.html").read_text(encoding="utf-8"), content_type="text/html",
                        headers=frame_policy(widget))


async def open_session(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    _from_the_frame(gw, request)
    widget, tenant_name = await _active(gw, request.match_info["widget"])
    data = await read_json(request)
    embedder = data.get("embedder")
    if embedder:
        if not isinstance(embedder, str):
            raise InvalidInput("'embedder' is the origin of the page that shows the chat")
        origin = normalize_origin(embedder)
        if not _allowed(gw, request, widget, origin):
            raise Forbidden(f"this chat may not be shown on {origin}; its owner can allow that site in the dashboard")
    gw.limits.new_visitor(request)  # 429 when one address opens sessions faster than allowed
    visitor = secrets.token_urlsafe(12)
    token = gw.signer.sign(VISITOR_PURPOSE, {"w": widget.id, "v": visitor}, ttl=VISITOR_TTL)
    return web.json_response({"token": token, "visitor": visitor, "expires_in": int(VISITOR_TTL),
                              "tenant": {"display_name": tenant_name}},
                             headers={"Cache-Control": "no-store"})


async def ask(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    widget, visitor = await _visitor(gw, request)
    data = await read_json(request)
    with bound(tenant_id=widget.tenant_id):
        return await answer_now(gw, data, tenant_id=widget.tenant_id, sender_id=f"visitor:{visitor}",
                                scope=f"{widget.id}:{visitor}")


async def rate(request: web.Request) -> web.Response:
    """👍/👎 on an answer to one of the visitor's own questions (`bot.channels.web.routes.rate_answer`)."""
    gw = request.app[GATEWAY]
    widget, visitor = await _visitor(gw, request)
    data = await read_json(request)
    with bound(tenant_id=widget.tenant_id):
        return await rate_answer(gw, data, tenant_id=widget.tenant_id, rater_id=f"visitor:{visitor}",
                                 asker=f"visitor:{visitor}")


async def _visitor(gw: Any, request: web.Request) -> tuple[Any, str]:
    """The widget and the visitor of a request from the widget's frame with a live visitor session."""
    _from_the_frame(gw, request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise Forbidden("no visitor session")
        claims = gw.signer.verify(VISITOR_PURPOSE, token.strip())
    except Forbidden as exc:
        raise Unauthorized("your chat session has expired; start a new one") from exc
    widget_id = request.match_info["widget"]
    visitor = claims.get("v")
    if claims.get("w") != widget_id or not isinstance(visitor, str) or not visitor:
        raise Unauthorized("this session belongs to another chat; start a new one")
    widget, _ = await _active(gw, widget_id)  # revoked since: 404
    return widget, visitor


async def updates(request: web.Request) -> web.Response:
    """``{"conversation_id", "after"}``: the visitor's conversation, once handed to a person: its state
    and the staff replies since the cursor (`bot.conversation.handoff.updates`; the frame polls)."""
    gw = request.app[GATEWAY]
    widget, visitor = await _visitor(gw, request)
    data = await read_json(request)
    conversation = str(data.get("conversation_id") or "default")[:64]
    after = data.get("after", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise InvalidInput("'after' must be a whole number (the cursor of the last poll)")
    async with unit_of_work(gw.sessions, tenant_id=widget.tenant_id) as session:
        body = await handoff_updates(session, tenant_id=widget.tenant_id, channel="web",
                                     conversation_id=f"web:{widget.id}:{visitor}:{conversation}", after=after)
    return web.json_response(body, headers={"Cache-Control": "no-store"})


def setup_widget_routes(app: web.Application) -> None:
    app.router.add_get("/chat/widget.js", widget_script)
    app.router.add_get("/chat/w/{widget}", frame)
    app.router.add_post("/chat/w/{widget}/session", open_session)
    app.router.add_post("/chat/w/{widget}/chat", ask)
    app.router.add_post("/chat/w/{widget}/feedback", rate)
    app.router.add_post("/chat/w/{widget}/updates", updates)  # a person's replies once handed off


def snippet(public_url: str, widget_id: str) -> str:
    """The tag a tenant puts on its site."""
    return f'<script src="{public_url.rstrip("/")}/chat/widget.js" data-widget="{widget_id}" async></script>'


def widget_info(public_url: str, widget: Widget) -> dict[str, Any]:
    """A widget as the dashboard shows it: with the snippet to copy."""
    return {**widget_json(widget), "snippet": snippet(public_url, widget.id),
            "frame_url": f"{public_url.rstrip('/')}/chat/w/{widget.id}"}
