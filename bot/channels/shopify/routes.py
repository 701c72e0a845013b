"""Gateway routes for Shopify: ``/shopify/install``, ``/shopify/callback``, ``/shopify/webhooks``.

``setup_shopify(app, settings=..., sessions=..., box=...)`` adds them to the gateway's app with
their own resources (an aiohttp client session opened and closed in ``cleanup_ctx``).

Merchant-facing pages (install, callback) answer in small HTML; webhooks answer JSON and must be
fast: one transaction with the shop's installation read (whose secret verifies it), verification,
one lookup and one insert for dedupe, one outbox row, commit, 200. Every refusal is a 4xx and one
short log line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.privacy.erasure import vectors_for
from bot.channels.shopify.service import (
    Delivery, accept_webhook, complete_install, consume_state, install_link_key, installation_any_status, link_used,
    own_webhook_secret, remember_state,
)
from bot.context import GATEWAY
from integrations.shopify import oauth
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.errors import InvalidShop, MissingScopes, ShopifyError, ShopifyUnavailable, TokenRevoked
from integrations.shopify.hmac import normalize_shop, verify_install_link, verify_oauth_hmac, verify_webhook_hmac
from parley.blobs import BlobStore
from parley.crypto import SecretBox
from parley.db import unit_of_work
from parley.errors import AlreadyExists, InvalidInput, ParleyError
from parley.settings import Settings
from tenants.repository import TenantDirectory

log = logging.getLogger(__name__)

STATE_COOKIE = "parley_shopify_state"
MAX_TIMESTAMP_SKEW = 24 * 3600


@dataclass
class ShopifyGateway:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    box: SecretBox
    config: ShopifyConfig
    link_key: bytes = field(repr=False)
    http: aiohttp.ClientSession | None = None


SHOPIFY = web.AppKey("shopify_gateway", ShopifyGateway)


def setup_shopify(app: web.Application, *, settings: Settings, sessions: async_sessionmaker[AsyncSession] | None = None,
                  box: SecretBox | None = None, config: ShopifyConfig | None = None,
                  http: aiohttp.ClientSession | None = None) -> ShopifyGateway:
    """Add the Shopify routes to the gateway's app. Without ``sessions`` and ``box`` the routes use
    the gateway's own (its main pool and secret box, ready once the app has started): the gateway
    keeps building its separate pools for webhook acks and background work. ``http``: a client
    session to use (tests); by default one is opened with the app and closed on cleanup."""
    gateway = ShopifyGateway(settings, sessions, box, config or ShopifyConfig.from_settings(settings),  # type: ignore[arg-type]
                             install_link_key(settings), http)
    app[SHOPIFY] = gateway

    async def client_session(app_: web.Application) -> AsyncIterator[None]:
        if gateway.sessions is None or gateway.box is None:
            # Runs after the gateway's own resources (cleanup contexts run in the order added).
            gw = app_[GATEWAY]
            gateway.sessions = gateway.sessions or gw.sessions
            gateway.box = gateway.box or gw.box
        own = gateway.http is None
        if own:
            gateway.http = aiohttp.ClientSession()
        yield
        if own and gateway.http is not None:
            await gateway.http.close()
            gateway.http = None

    app.cleanup_ctx.append(client_session)
    app.router.add_get("/shopify/install", install)
    app.router.add_get("/shopify/callback", callback)
    app.router.add_post("/shopify/webhooks", webhooks)
    return gateway


def _page(title: str, text: str, *, status: int = 200, extra: str = "") -> web.Response:
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>{extra}</body></html>")
    return web.Response(text=body, status=status, content_type="text/html")


def _shop_form(query: Any) -> web.Response:
    hidden = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(query[k])}'>"
                     for k in ("tenant", "expires", "link", "sig") if k in query)
    form = (f"<form method='get' action='/shopify/install'>{hidden}<label>Your store address "
            "<input name='shop' placeholder='your-store.myshopify.com' required></label> <button>Connect</button></form>")
    return _page("Connect your Shopify store", "Enter your store's myshopify.com address.", extra=form)


# --- /shopify/install ---------------------------------------------------------------------


async def install(request: web.Request) -> web.StreamResponse:
    gw = request.app[SHOPIFY]
    query = request.query
    if not gw.config.configured:
        return _page("Shopify is not configured", "Set PARLEY_SHOPIFY_CLIENT_ID and PARLEY_SHOPIFY_CLIENT_SECRET.", status=503)
    tenant_id: str | None = None
    link_id = query.get("link", "")
    if "sig" in query:
        if not verify_install_link(gw.link_key, query.get("tenant", ""), query.get("expires", ""), query.get("sig", ""),
                                   link_id):
            log.warning("shopify install link refused: invalid or expired")
            return _page("Install link not valid", "This install link is invalid or has expired; ask for a new one.", status=403)
        async with unit_of_work(gw.sessions) as session:
            spent = await link_used(session, link_id)
        if spent:
            log.warning("shopify install link refused: already used")
            return _page("Install link already used", "This install link has already connected a store; "
                         "ask for a new one.", status=403)
        tenant_id = query["tenant"]
        if not query.get("shop"):
            return _shop_form(query)
    elif "hmac" in query:  # opened from Shopify (admin or App Store): only a shop we already know
        if not verify_oauth_hmac(list(query.items()), gw.config.client_secret):
            return _page("Request not signed by Shopify", "The request's signature is invalid.", status=401)
    else:
        return _page("Install link required", "Open the Shopify install link from your Parley admin.", status=400)
    try:
        shop = normalize_shop(query.get("shop"))
    except InvalidShop as exc:
        return _page("Not a Shopify store", exc.message, status=400)
    async with unit_of_work(gw.sessions) as session:
        if tenant_id is None:
            known = await installation_any_status(session, shop)
            if known is None:
                return _page("Install link required", "Open the Shopify install link from your Parley admin "
                             "to choose which Parley workspace this store connects to.", status=400)
            tenant_id = known.tenant_id
        if await TenantDirectory(session).by_id(tenant_id) is None:
            return _page("Unknown workspace", "The Parley workspace of this link no longer exists.", status=404)
        nonce = await remember_state(session, tenant_id=tenant_id, shop=shop, ttl=gw.config.state_ttl,
                                     link_id=link_id if "sig" in query else None)
    response = web.Response(status=302, headers={"Location": oauth.authorize_url(gw.config, shop=shop, state=nonce)})
    response.set_cookie(STATE_COOKIE, nonce, max_age=int(gw.config.state_ttl), httponly=True, samesite="Lax",
                        path="/shopify", secure=gw.config.public_url.startswith("https://"))
    return response


# --- /shopify/callback --------------------------------------------------------------------


async def callback(request: web.Request) -> web.StreamResponse:
    gw = request.app[SHOPIFY]
    query = request.query
    if not verify_oauth_hmac(list(query.items()), gw.config.client_secret):
        return _page("Request not signed by Shopify", "The callback's signature is invalid.", status=401)
    try:
        shop = normalize_shop(query.get("shop"))
    except InvalidShop as exc:
        return _page("Not a Shopify store", exc.message, status=400)
    try:
        if abs(time.time() - int(query.get("timestamp", "0"))) > MAX_TIMESTAMP_SKEW:
            return _page("Request too old", "Start the installation again.", status=401)
    except ValueError:
        return _page("Request not signed by Shopify", "The callback has no valid timestamp.", status=401)
    state = query.get("state", "")
    if not state or request.cookies.get(STATE_COOKIE) != state:
        return _page("Installation not started here", "Start the installation again from your install link.", status=403)
    async with unit_of_work(gw.sessions) as session:
        tenant_id = await consume_state(session, nonce=state, shop=shop, ttl=gw.config.state_ttl)
    if tenant_id is None:
        return _page("Installation expired", "This installation attempt expired or was already used; start again.", status=403)
    assert gw.http is not None
    try:
        tokens = await oauth.exchange_code(gw.http, gw.config, shop=shop, code=query.get("code", ""))
        connected = await complete_install(gw.sessions, gw.box, gw.http, gw.config, tenant_id=tenant_id, shop=shop, tokens=tokens)
    except MissingScopes as exc:
        return _page("Permissions missing", exc.message, status=403)
    except TokenRevoked as exc:
        return _page("Shopify refused the authorization", exc.message, status=400)
    except ShopifyUnavailable as exc:
        return _page("Shopify is not answering", f"{exc.message}. Please try again in a minute.", status=502)
    except AlreadyExists as exc:
        return _page("Store already connected", exc.message, status=409)
    except ShopifyError as exc:
        return _page("Shopify refused", exc.message, status=400)
    response = _page("Store connected", f"{connected.shop_name} ({shop}) is connected to Parley. Its products are being "
                     f"imported now (job {connected.job_id}); your assistant can answer about them in a few minutes.")
    response.del_cookie(STATE_COOKIE, path="/shopify")
    return response


# --- /shopify/webhooks --------------------------------------------------------------------


def _when(value: str | None) -> dt.datetime | None:
    """``X-Shopify-Triggered-At`` as an aware datetime; None when absent; `InvalidInput` when it is not one."""
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput("X-Shopify-Triggered-At is not an ISO 8601 time") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _header(request: web.Request, name: str) -> str | None:
    """A header Shopify writes in printable ASCII (ids, topic, time); none of them is signed, so
    anything else is refused before it reaches a query."""
    value = request.headers.get(name)
    if value is not None and not (len(value) <= 255 and value.isascii() and value.isprintable()):
        raise InvalidInput(f"{name} is not a Shopify value")
    return value


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else {}
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the parser's stack
        raise InvalidInput("the body is not JSON") from exc


def _refused(status: int, code: str, detail: str, **log_extra: Any) -> web.Response:
    log.warning("shopify webhook refused: %s", code, extra=log_extra)
    return web.json_response({"error": code, "detail": detail}, status=status)


async def webhooks(request: web.Request) -> web.StreamResponse:
    gw = request.app[SHOPIFY]
    body = await request.read()
    signature = request.headers.get("X-Shopify-Hmac-Sha256")
    shop_header = request.headers.get("X-Shopify-Shop-Domain", "")
    if not signature:
        return _refused(401, "unauthorized", "invalid X-Shopify-Hmac-Sha256", shop=shop_header[:100])
    try:
        shop = normalize_shop(shop_header)
    except InvalidShop:
        if verify_webhook_hmac(body, signature, gw.config.client_secret):
            return _refused(400, "invalid_input", "X-Shopify-Shop-Domain is not a myshopify.com store", shop=shop_header[:100])
        return _refused(401, "unauthorized", "invalid X-Shopify-Hmac-Sha256", shop=shop_header[:100])
    topic = request.headers.get("X-Shopify-Topic", "")[:64]
    try:
        async with unit_of_work(gw.sessions, admin=True) as session:
            installation = await installation_any_status(session, shop)
            # The one secret that may sign for this shop: its own app's when it was connected with one
            # (``parley shopify connect --webhook-secret``), else the app's. A delivery signed by one
            # store's secret cannot be re-addressed to another store, nor one signed with the app's
            # secret to a store of a custom app.
            if not verify_webhook_hmac(body, signature, own_webhook_secret(gw.box, installation) or gw.config.client_secret):
                return _refused(401, "unauthorized", "invalid X-Shopify-Hmac-Sha256", shop=shop)
            delivery = Delivery(topic=_header(request, "X-Shopify-Topic") or "", shop=shop,
                                event_id=_header(request, "X-Shopify-Event-Id"), webhook_id=_header(request, "X-Shopify-Webhook-Id"),
                                triggered_at=_when(_header(request, "X-Shopify-Triggered-At")), body=_json(body),
                                digest=hashlib.sha256(body).hexdigest())
            result = await accept_webhook(session, delivery, installation, max_age=gw.config.webhook_max_age,
                                          blobs=BlobStore(gw.settings.effective_blob_dir),
                                          vectors=vectors_for(gw.settings))
    except InvalidInput as exc:
        return _refused(400, exc.code, exc.message, shop=shop, topic=topic)
    except ParleyError as exc:
        log.warning("shopify webhook not accepted", extra={"shop": shop, "topic": topic, "error": exc.code})
        return web.json_response({"error": exc.code, "detail": exc.message}, status=503 if exc.retryable else 400)
    log.info("shopify webhook", extra={"shop": shop, "topic": topic, "result": result.get("status")})
    return web.json_response(result)
