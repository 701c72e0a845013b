"""Connecting a store and taking its webhooks: the logic behind the routes and the CLI.

* :func:`install_link` — the signed link a tenant's admin sends the merchant (tenant id, link id,
  expiry; HMAC with a key derived from PARLEY_SECRET_KEY), so ``/shopify/install`` knows the
  tenant. A link is single use: the OAuth round trip it starts spends it when Shopify redirects
  back (a row of ``webhook_event``, source ``shopify_install_link``), so a copy of a used link
  connects nothing; it lives a day unless ``--ttl`` says otherwise (at most a week).
* OAuth ``state`` nonces are stored server-side, single-use, with a short lifetime. Until a
  dedicated table exists they are rows of the gateway's ``webhook_event`` table (source
  ``shopify_oauth``, external id = nonce + ``.`` + the install link's id, topic = shop, status
  pending -> used): unique, shared by every gateway replica, consumed with one conditional UPDATE.
* :func:`complete_install` — after the callback's checks: installation (tokens sealed), webhooks
  registered, first catalog sync requested.
* :func:`connect_custom_app` — ``parley shopify connect --tenant T --shop S --token ...`` for a
  merchant-created app's Admin API token (non-expiring; no OAuth).
* :func:`accept_webhook` — refuse a replayed or inconsistent delivery, dedupe, and turn a
  verified delivery into work. Shopify's HMAC covers the body only, so every header can be
  rewritten on a captured delivery; what holds: the shop is the one whose secret verified it
  (the route's job), a body that names a shop names that one, the delivery is deduplicated on
  ``X-Shopify-Event-Id``, ``X-Shopify-Webhook-Id`` *and* the body itself (its id, ``updated_at``
  and digest: the same under any headers, topic or shop), and an ``X-Shopify-Triggered-At``
  older than Shopify's retry schedule is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac as _hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.privacy.erasure import redact_shopify_customer, shop_products
from bot.models import WebhookEvent
from integrations.shopify.client import ShopifyClient
from integrations.shopify.config import MAX_INSTALL_LINK_TTL, ShopifyConfig
from integrations.shopify.errors import InvalidShop
from integrations.shopify.hmac import normalize_shop, sign_install_link
from parley.bus.contracts import (
    CATALOG_PRODUCT_CHANGED,
    CATALOG_PRODUCT_DELETED,
    CATALOG_SHOP_REDACTED,
    ProductChanged,
    ProductDeleted,
    ShopRedacted,
    stage_catalog,
)
from knowledge.service import request_sync
from integrations.shopify.oauth import TokenSet, check_scopes
from integrations.shopify.products import gid_to_int
from parley.crypto import SecretBox, load_secret_box
from parley.db import bind_admin, unit_of_work, utcnow
from parley.errors import InvalidInput
from parley.settings import Settings
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import TenantDirectory, reveal_secrets
from tenants.service import install_channel, revoke_channel

log = logging.getLogger(__name__)

#: Subscribed at install with webhookSubscriptionCreate. The compliance topics (customers/data_request,
#: customers/redact, shop/redact) cannot be subscribed through the API: they are declared in the app's
#: shopify.app.toml (``[webhooks] api_version = "2026-10"`` and ``[[webhooks.subscriptions]]
#: compliance_topics = [...]``, ``uri = "<public url>/shopify/webhooks"``).
WEBHOOK_TOPICS = ("products/create", "products/update", "products/delete", "app/uninstalled")
STATE_SOURCE = "shopify_oauth"
LINK_SOURCE = "shopify_install_link"
WEBHOOK_SOURCE = "shopify"
NO_CUSTOMER_DATA = "Parley stores no Shopify customer data: nothing to report or erase."


# --- install links ------------------------------------------------------------------------


def install_link_key(settings: Settings) -> bytes:
    """A key for install links derived from PARLEY_SECRET_KEY (or the generated key file)."""
    if settings.secret_key is not None:
        raw = settings.secret_key.get_secret_value().encode()
    else:
        load_secret_box(settings)  # creates <data_dir>/secret.key when missing
        raw = (settings.data_dir / "secret.key").read_bytes().strip()
    return _hmac.new(raw, b"parley shopify install link v1", hashlib.sha256).digest()


def install_link(settings: Settings, *, tenant_id: str, ttl: float | None = None, shop: str | None = None,
                 config: ShopifyConfig | None = None, now: float | None = None) -> str:
    """A single-use install link for ``tenant_id``, valid ``ttl`` seconds (default: a day; at most a week)."""
    config = config or ShopifyConfig.from_settings(settings)
    ttl = config.install_link_ttl if ttl is None else ttl
    if not 0 < ttl <= MAX_INSTALL_LINK_TTL:
        raise InvalidInput(f"an install link lives more than 0 and at most {MAX_INSTALL_LINK_TTL:.0f} seconds (a week)")
    expires = int((now or time.time()) + ttl)
    link_id = secrets.token_urlsafe(12)
    query = {"tenant": tenant_id, "expires": str(expires), "link": link_id,
             "sig": sign_install_link(install_link_key(settings), tenant_id, expires, link_id)}
    if shop:
        query["shop"] = normalize_shop(shop)
    return f"{config.public_url.rstrip('/')}/shopify/install?{urlencode(query)}"


# --- OAuth state --------------------------------------------------------------------------


async def _insert_once(session: AsyncSession, *, source: str, external_id: str, topic: str = "",
                       tenant_id: str | None = None, status: str = "received") -> bool:
    """One ``webhook_event`` row; False when (source, external_id) is already there (even from a
    transaction committed meanwhile by another replica: the unique constraint decides)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert(WebhookEvent).values(source=source, external_id=external_id[:255], topic=topic[:128], tenant_id=tenant_id,
                                    status=status, received_at=utcnow())
        .on_conflict_do_nothing(index_elements=["source", "external_id"]))
    return (result.rowcount or 0) == 1


async def link_used(session: AsyncSession, link_id: str) -> bool:
    found = await session.execute(select(WebhookEvent.id).where(WebhookEvent.source == LINK_SOURCE,
                                                                WebhookEvent.external_id == link_id[:255]))
    return found.first() is not None


async def remember_state(session: AsyncSession, *, tenant_id: str, shop: str, ttl: float = 900.0,
                         link_id: str | None = None) -> str:
    """A new OAuth state for ``shop``; ``link_id``: the install link it was started from, spent with it."""
    # states older than a day are of no use to anyone: forget them as new ones are made
    await session.execute(delete(WebhookEvent).where(
        WebhookEvent.source == STATE_SOURCE, WebhookEvent.received_at < utcnow() - dt.timedelta(seconds=max(ttl, 86400))))
    nonce = secrets.token_urlsafe(24) + (f".{link_id}" if link_id else "")  # token_urlsafe has no "."
    session.add(WebhookEvent(source=STATE_SOURCE, external_id=nonce, topic=shop, tenant_id=tenant_id,
                             status="pending", received_at=utcnow()))
    await session.flush()
    return nonce


async def consume_state(session: AsyncSession, *, nonce: str, shop: str, ttl: float) -> str | None:
    """The tenant the nonce was issued for, once; None when unknown, used, expired, for another shop,
    or started from an install link that another round trip has already spent."""
    if not nonce or len(nonce) > 255:
        return None
    row = (await session.execute(select(WebhookEvent).where(
        WebhookEvent.source == STATE_SOURCE, WebhookEvent.external_id == nonce))).scalar_one_or_none()
    if row is None or row.topic != shop or row.received_at < utcnow() - dt.timedelta(seconds=ttl):
        return None
    used = await session.execute(update(WebhookEvent).where(WebhookEvent.id == row.id, WebhookEvent.status == "pending")
                                 .values(status="used").execution_options(synchronize_session=False))
    if used.rowcount != 1:
        return None
    _, _, link_id = nonce.partition(".")  # the stored nonce is ours: its link part is the link it came from
    if link_id and not await _insert_once(session, source=LINK_SOURCE, external_id=link_id, topic=shop,
                                          tenant_id=row.tenant_id, status="used"):
        log.warning("shopify install link used twice", extra={"tenant_id": row.tenant_id, "shop": shop})
        return None
    return row.tenant_id


# --- connecting a store -------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    tenant_id: str
    shop: str
    shop_name: str
    job_id: str
    scopes: frozenset[str]
    webhooks: tuple[str, ...]


async def register_webhooks(client: ShopifyClient, config: ShopifyConfig) -> tuple[str, ...]:
    for topic in WEBHOOK_TOPICS:
        await client.subscribe_webhook(topic, config.webhook_uri)
    return WEBHOOK_TOPICS


async def complete_install(sessions: async_sessionmaker[AsyncSession], box: SecretBox, http: aiohttp.ClientSession,
                           config: ShopifyConfig, *, tenant_id: str, shop: str, tokens: TokenSet) -> Connected:
    """Scopes checked, shop read, webhooks registered (network first), then one transaction:
    installation with the sealed tokens + the first sync's job and message."""
    check_scopes(tokens.scopes, config.scopes, shop=shop)
    client = ShopifyClient(http, config, shop=shop, access_token=tokens.access_token)
    info = await client.shop_info()
    webhooks = await register_webhooks(client, config)
    details = {"scopes": sorted(tokens.scopes), "currency": info.currency, "shop_name": info.name,
               "api_version": config.api_version, "token_kind": "expiring_offline" if tokens.expiring else "offline",
               "webhooks": list(webhooks)}
    async with unit_of_work(sessions) as session:
        await install_channel(session, box=box, tenant_id=tenant_id, kind=ChannelKind.shopify, external_id=shop,
                              display_name=info.name, details=details, secrets=tokens.to_secrets())
        job = await request_sync(session, tenant_id=tenant_id, shop=shop, reason="install")
    log.info("shopify store connected", extra={"tenant_id": tenant_id, "shop": shop, "job_id": job.id})
    return Connected(tenant_id, shop, info.name, job.id, tokens.scopes, webhooks)


async def connect_custom_app(sessions: async_sessionmaker[AsyncSession], box: SecretBox, *, tenant: str, shop: str,
                             token: str, config: ShopifyConfig | None = None, http: aiohttp.ClientSession | None = None,
                             webhook_secret: str | None = None, register: bool | None = None) -> Connected:
    """Connect a store through a merchant-created (custom) app's Admin API access token.

    The token is checked against the shop (``shop`` + ``currentAppInstallation.accessScopes``)
    before anything is stored. Webhooks are registered only when ``webhook_secret`` (the custom
    app's API secret key, which signs its webhooks) is given, or ``register=True``.
    """
    shop = normalize_shop(shop)
    if not token or not token.strip():
        raise InvalidInput("an Admin API access token is required (Shopify admin > Apps > Develop apps)")
    config = config or ShopifyConfig.from_settings()
    own = http is None
    http = http or aiohttp.ClientSession()
    try:
        async with unit_of_work(sessions) as session:
            tenant_id = (await TenantDirectory(session).resolve(tenant)).id
        client = ShopifyClient(http, config, shop=shop, access_token=token.strip())
        info = await client.shop_info()
        check_scopes(info.scopes, ("read_products",), shop=shop)
        webhooks: tuple[str, ...] = ()
        if register if register is not None else bool(webhook_secret):
            webhooks = await register_webhooks(client, config)
    finally:
        if own:
            await http.close()
    secrets_ = TokenSet(access_token=token.strip(), scopes=info.scopes).to_secrets()
    if webhook_secret:
        secrets_["webhook_secret"] = webhook_secret
    details = {"scopes": sorted(info.scopes), "currency": info.currency, "shop_name": info.name,
               "api_version": config.api_version, "token_kind": "custom_app", "webhooks": list(webhooks)}
    async with unit_of_work(sessions) as session:
        await install_channel(session, box=box, tenant_id=tenant_id, kind=ChannelKind.shopify, external_id=shop,
                              display_name=info.name, details=details, secrets=secrets_)
        job = await request_sync(session, tenant_id=tenant_id, shop=shop, reason="connect")
    return Connected(tenant_id, shop, info.name, job.id, info.scopes, webhooks)


async def installation_any_status(session: AsyncSession, shop: str) -> ChannelInstallation | None:
    """The shop's installation even when revoked (shop/redact arrives 48 hours after uninstall)."""
    bind_admin(session)
    stmt = select(ChannelInstallation).where(ChannelInstallation.kind == ChannelKind.shopify,
                                             ChannelInstallation.external_id == shop)
    return (await session.execute(stmt)).scalar_one_or_none()


def own_webhook_secret(box: SecretBox, installation: ChannelInstallation | None) -> str | None:
    """The secret that signs a connected store's webhooks when it is its own (a custom app connected
    with ``--webhook-secret``); None when the app's client secret signs them."""
    if installation is None or installation.status != "active":
        return None
    return reveal_secrets(box, installation).get("webhook_secret") or None


# --- webhooks -----------------------------------------------------------------------------


#: Topics about the shop itself: their body names the shop (``shop_domain``, ``myshopify_domain`` or
#: ``domain``), and it must be the shop of the delivery.
SHOP_TOPICS = frozenset({"app/uninstalled", "shop/redact", "customers/data_request", "customers/redact"})
#: Fields of a product that a products/delete body (``{"id": ...}``) never has.
_PRODUCT_FIELDS = frozenset({"title", "handle", "variants", "updated_at", "body_html"})


@dataclass(frozen=True)
class Delivery:
    topic: str
    shop: str
    event_id: str | None
    webhook_id: str | None
    triggered_at: dt.datetime | None
    body: Any
    #: The raw body's SHA-256 (hex): what a replay cannot change.
    digest: str


def body_key(body: Any, digest: str) -> str:
    """The delivery's own identity, from the signed body alone: its id, ``updated_at`` and digest.
    A replay keeps these whatever headers it comes with (new event or webhook id, another topic or
    shop); two versions of a product never share it."""
    if isinstance(body, dict) and body.get("id") is not None:
        return f"body:{str(body['id'])[:40]}@{str(body.get('updated_at') or '')[:40]}:{digest}"
    return f"body:{digest}"


def dedupe_keys(d: Delivery) -> list[str]:
    keys = [d.event_id] if d.event_id else []  # bare, as earlier versions stored it
    if d.webhook_id:
        keys.append(f"webhook:{d.webhook_id}")
    keys.append(body_key(d.body, d.digest))
    return [k[:255] for k in keys]


def check_delivery(d: Delivery, *, max_age: float, now: dt.datetime | None = None) -> None:
    """`InvalidInput` for a delivery that is stale or whose body contradicts its headers."""
    if d.triggered_at is not None and d.triggered_at < (now or utcnow()) - dt.timedelta(seconds=max_age):
        raise InvalidInput(f"X-Shopify-Triggered-At is more than {max_age / 3600:g} hours old: a replay, not a Shopify retry",
                           code="stale_delivery")
    body = d.body if isinstance(d.body, dict) else {}
    named: set[str] = set()
    for name in ("shop_domain", "myshopify_domain", "domain"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            continue
        try:
            named.add(normalize_shop(value))
        except InvalidShop:
            if name != "domain":  # ``domain`` may be the shop's own custom domain: not comparable
                named.add(value.strip().lower()[:100])
    if named - {d.shop}:
        raise InvalidInput(f"X-Shopify-Shop-Domain is {d.shop} but the body is about {sorted(named - {d.shop})[0]}",
                           code="shop_mismatch")
    if d.topic in SHOP_TOPICS and not named:
        raise InvalidInput(f"a {d.topic} body names its shop; this one does not", code="shop_mismatch")
    if d.topic == "products/delete" and _PRODUCT_FIELDS & body.keys():
        raise InvalidInput("a products/delete body carries only the product id; this one is a product", code="topic_mismatch")


async def _first_time(session: AsyncSession, delivery: Delivery, tenant_id: str | None) -> bool:
    """Record the delivery's dedupe keys unless one of them is known (then nothing new is recorded)."""
    keys = list(dict.fromkeys(dedupe_keys(delivery)))
    seen = await session.execute(select(WebhookEvent.id).where(WebhookEvent.source == WEBHOOK_SOURCE,
                                                               WebhookEvent.external_id.in_(keys)))
    if seen.first() is not None:
        return False
    # one statement; a copy being accepted at this very moment: the unique constraint decides
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    result = await session.execute(insert(WebhookEvent).values([
        {"source": WEBHOOK_SOURCE, "external_id": key, "topic": delivery.topic[:128], "tenant_id": tenant_id,
         "status": "received", "received_at": now} for key in keys]).on_conflict_do_nothing(index_elements=["source", "external_id"]))
    return (result.rowcount or 0) == len(keys)


async def accept_webhook(session: AsyncSession, delivery: Delivery, installation: ChannelInstallation | None, *,
                         max_age: float = ShopifyConfig.webhook_max_age, blobs: Any = None,
                         vectors: Any = None) -> dict[str, Any]:
    """A verified delivery, in the edge's transaction (dedupe rows + the staged work commit together,
    so a failure lets Shopify's retry try again). ``installation``: the shop's, whatever its status.
    `InvalidInput`, nothing recorded, for a stale or self-contradicting delivery."""
    check_delivery(delivery, max_age=max_age)
    tenant_id = installation.tenant_id if installation is not None else None
    if not await _first_time(session, delivery, tenant_id):
        return {"status": "duplicate"}
    return await _dispatch(session, delivery, installation, blobs=blobs, vectors=vectors)


async def _dispatch(session: AsyncSession, d: Delivery, installation: ChannelInstallation | None, *,
                    blobs: Any = None, vectors: Any = None) -> dict[str, Any]:
    topic, body = d.topic, d.body if isinstance(d.body, dict) else {}
    if topic == "customers/redact" and installation is not None and blobs is not None:
        # The erasure machinery (bot.privacy.erasure): whoever wrote this customer's email or phone.
        result = await redact_shopify_customer(session, tenant_id=installation.tenant_id, body=body, blobs=blobs,
                                               index=vectors)
        log.info("shopify customers/redact", extra={"shop": d.shop, "erased": len(result["erased"])})
        return result
    if topic in ("customers/data_request", "customers/redact"):
        log.info("shopify compliance request: no customer data stored", extra={"shop": d.shop, "topic": topic})
        return {"status": "ok", "detail": NO_CUSTOMER_DATA}
    if installation is None:
        log.info("shopify webhook for an unknown shop", extra={"shop": d.shop, "topic": topic})
        return {"status": "ignored", "detail": "unknown shop"}
    tenant_id = installation.tenant_id
    key = f"shopify:{d.event_id or d.webhook_id}" if (d.event_id or d.webhook_id) else None
    if topic == "shop/redact":
        stage_catalog(session, CATALOG_SHOP_REDACTED, tenant_id=tenant_id, idempotency_key=key,
                      payload=ShopRedacted(shop=d.shop, event_id=d.event_id))
        # The same kind of report as an erasure: what goes (the catalog worker removes it).
        products = await shop_products(session, tenant_id=tenant_id, shop=d.shop)
        return {"status": "accepted", "detail": f"the shop's {products} product(s) and their vectors are being removed",
                "counts": {"products": products}}
    if installation.status != "active":
        log.info("shopify webhook for a disconnected shop", extra={"shop": d.shop, "topic": topic})
        return {"status": "ignored", "detail": "shop disconnected"}
    if topic in ("products/create", "products/update"):
        gid_to_int(body.get("id"))  # refuse a body without a product id before queueing it
        stage_catalog(session, CATALOG_PRODUCT_CHANGED, tenant_id=tenant_id, idempotency_key=key,
                      payload=ProductChanged(shop=d.shop, product=body, event_id=d.event_id, triggered_at=d.triggered_at))
        return {"status": "accepted"}
    if topic == "products/delete":
        stage_catalog(session, CATALOG_PRODUCT_DELETED, tenant_id=tenant_id, idempotency_key=key,
                      payload=ProductDeleted(shop=d.shop, product_id=gid_to_int(body.get("id")), event_id=d.event_id,
                                             triggered_at=d.triggered_at))
        return {"status": "accepted"}
    if topic == "app/uninstalled":
        await revoke_channel(session, kind=ChannelKind.shopify, external_id=d.shop)
        log.info("shopify app uninstalled: store disconnected", extra={"shop": d.shop, "tenant_id": tenant_id})
        return {"status": "ok", "detail": "store disconnected"}
    return {"status": "ignored", "detail": f"topic {topic} is not used"}
