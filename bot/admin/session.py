"""Dashboard sign-in: a tenant API key in, a signed session cookie out; CSRF checks on every POST.

The cookie (``parley_admin``, path ``/admin``, ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when the
gateway is reached over HTTPS or its public URL is HTTPS) holds a token signed by the gateway's
`Signer` (purpose ``admin-session``): tenant id, API key id, a random session id and an expiry. The
key itself is never stored in it. Every request re-reads the key's row through the tenant's
repository, so revoking the key (``parley keys revoke``) ends each of its sessions at once; logging
out deletes the cookie. (The session is stateless: a copied cookie stays valid until it expires or
its key is revoked - revoke the key if a browser may have been compromised.)

CSRF: every POST must carry ``X-CSRF-Token`` (or a ``csrf`` form field) holding a token signed for
``admin-csrf`` over the session id, which the page gets from ``GET /admin/api/session`` (same-origin
only: the response is JSON read by the page's script). POSTs with a foreign ``Origin`` or a
cross-site ``Sec-Fetch-Site`` are refused too, the login form included. ``SameSite=Strict`` keeps
the cookie off cross-site requests in the first place; the token is the check that does not depend
on the browser.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from bot.context import GATEWAY, Gateway
from bot.http import API_KEY_ID, TENANT
from parley.db import unit_of_work
from parley.errors import Forbidden, Unauthorized
from parley.logging import bound
from tenants.repository import ApiKeyRepository

COOKIE = "parley_admin"
COOKIE_PATH = "/admin"
SESSION_PURPOSE = "admin-session"
CSRF_PURPOSE = "admin-csrf"
CSRF_HEADER = "X-CSRF-Token"
#: How long a dashboard sign-in lasts (a working day).
SESSION_TTL = 8 * 3600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("parley.gateway.admin")


@dataclass(frozen=True)
class AdminSession:
    tenant_id: str
    key_id: str
    sid: str
    expires: int


SESSION = web.RequestKey("parley_admin_session", AdminSession)


def issue(gw: Gateway, *, tenant_id: str, key_id: str) -> str:
    """A new session token (the cookie's value)."""
    return gw.signer.sign(SESSION_PURPOSE, {"t": tenant_id, "k": key_id, "s": secrets.token_urlsafe(16)}, ttl=SESSION_TTL)


def read(gw: Gateway, request: web.Request) -> AdminSession | None:
    """The session the request's cookie proves, or None (missing, forged, malformed or expired)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        data = gw.signer.verify(SESSION_PURPOSE, token)  # total: any cookie text is a session or Forbidden
    except Forbidden as exc:
        log.warning("admin session cookie refused: %s", exc)
        return None
    fields = (data.get("t"), data.get("k"), data.get("s"))
    if not all(isinstance(v, str) and v for v in fields):
        return None
    return AdminSession(tenant_id=data["t"], key_id=data["k"], sid=data["s"], expires=int(data["exp"]))


def csrf_token(gw: Gateway, session: AdminSession) -> str:
    return gw.signer.sign(CSRF_PURPOSE, {"s": session.sid}, ttl=max(60.0, session.expires - gw.clock()))


def _check_csrf(gw: Gateway, session: AdminSession, token: str | None) -> None:
    if not token:
        raise Forbidden("missing CSRF token; reload the page")
    data = gw.signer.verify(CSRF_PURPOSE, token)  # Forbidden when forged or expired
    if not hmac.compare_digest(str(data.get("s", "")), session.sid):
        raise Forbidden("the CSRF token belongs to another session; reload the page")


def check_origin(gw: Gateway, request: web.Request) -> None:
    """Refuse a state-changing request that a browser says came from another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden(f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("Origin")
    if origin is None:
        return
    public = urlsplit(gw.config.public_url)
    allowed = {f"{request.scheme}://{request.host}", f"{public.scheme}://{public.netloc}"}
    if origin not in allowed:
        raise Forbidden("cross-origin request refused")


def set_cookie(gw: Gateway, request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, token, path=COOKIE_PATH, max_age=int(SESSION_TTL), httponly=True, samesite="Strict",
                        secure=request.secure or gw.config.public_url.startswith("https://"))


def clear_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH)


async def _live(gw: Gateway, session: AdminSession) -> bool:
    """The key the session was opened with still exists and is not revoked."""
    async with unit_of_work(gw.sessions, tenant_id=session.tenant_id) as db:
        key = await ApiKeyRepository(db, session.tenant_id).find(session.key_id)
        return key is not None and key.revoked_at is None


async def current(request: web.Request) -> AdminSession | None:
    gw = request.app[GATEWAY]
    session = read(gw, request)
    if session is None or not await _live(gw, session):
        return None
    return session


def login_redirect(request: web.Request) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/admin/login?next={quote(request.path_qs, safe='/')}")


def require_session(handler: Handler, *, page: bool = False) -> Handler:
    """Wrap a handler that reads ``request[TENANT]``: the session cookie instead of a bearer key.

    No valid session: a page redirects to the login form, the API answers 401. A POST must pass
    the origin and CSRF checks (403 otherwise).
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        gw = request.app[GATEWAY]
        session = await current(request)
        if session is None:
            if page:
                raise login_redirect(request)
            raise Unauthorized("not signed in (or the session expired); sign in at /admin/login")
        if request.method not in SAFE_METHODS:
            check_origin(gw, request)
            token = request.headers.get(CSRF_HEADER)
            if token is None and request.content_type == "application/x-www-form-urlencoded":
                token = str((await request.post()).get("csrf") or "") or None
            _check_csrf(gw, session, token)
        request[SESSION] = session
        request[TENANT], request[API_KEY_ID] = session.tenant_id, session.key_id
        with bound(tenant_id=session.tenant_id):
            return await handler(request)

    wrapped.__name__ = getattr(handler, "__name__", "handler")
    return wrapped


def safe_next(value: Any) -> str:
    """Where to go after signing in: only a path of the dashboard, or the web chat page (which signs in
    here and then talks to ``/admin/api``: `bot.channels.web`) - no open redirect."""
    target = str(value or "")
    if target == "/chat":
        return target
    if not target.startswith("/admin") or target.startswith("//") or "\\" in target or target.startswith("/admin/login"):
        return "/admin/"
    return target
