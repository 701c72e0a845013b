"""The gateway's install flow: signed install link -> Shopify's authorize page -> signed callback ->
expiring offline token stored sealed, webhooks registered, first sync queued. Real app factory
routes, the local Shopify emulator, real SQLite and PostgreSQL (one rolled-back transaction)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet
from sqlalchemy import select

from bot.channels.shopify import SHOPIFY, install_link, setup_shopify
from bot.channels.shopify.routes import STATE_COOKIE
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.oauth import TokenSet
from parley.bus import Envelope
from parley.crypto import SecretBox
from parley.db import unit_of_work
from parley.errors import InvalidInput
from knowledge.models import Job
from parley.bus.models import OutboxMessage
from parley.settings import Settings
from tenants.models import ChannelInstallation
from tenants.repository import reveal_secrets
from tenants.service import create_tenant
from tests.integrations.shopify_emulator import ShopifyEmulator, running

SHOP = "acme-outfitters.myshopify.com"


@dataclass
class Gateway:
    client: TestClient
    emulator: ShopifyEmulator
    settings: Settings
    config: ShopifyConfig
    box: SecretBox
    db: object
    tenant_id: str
    http: aiohttp.ClientSession

    async def start(self, shop: str = SHOP) -> str:
        """Open the tenant's install link for ``shop``; returns the Shopify authorize URL we were sent to."""
        link = install_link(self.settings, tenant_id=self.tenant_id, config=self.config, shop=shop)
        response = await self.client.get(_path(link), allow_redirects=False)
        assert response.status == 302, await response.text()
        return response.headers["Location"]

    async def approve(self, authorize_url: str) -> str:
        """The merchant approves on Shopify: the emulator redirects to our callback with a signed query."""
        async with self.http.get(authorize_url, allow_redirects=False) as response:
            assert response.status == 302
            return response.headers["Location"]


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
async def gateway(db, tmp_path) -> AsyncIterator[Gateway]:
    emulator = ShopifyEmulator()
    secret_key = Fernet.generate_key().decode()
    settings = Settings(data_dir=tmp_path / "var", secret_key=secret_key)
    box = SecretBox(secret_key.encode())
    async with running(emulator) as base_url, aiohttp.ClientSession() as http:
        config = ShopifyConfig(client_id=emulator.client_id, client_secret=emulator.client_secret,
                               base_url=f"{base_url}/{{shop}}", scopes=("read_products",))
        app = web.Application()
        gw = setup_shopify(app, settings=settings, sessions=db.sessions, box=box, config=config, http=http)
        server = TestServer(app, host="127.0.0.1")
        async with TestClient(server) as client:
            config = config.with_(public_url=str(server.make_url("")).rstrip("/"))
            gw.config = config
            async with unit_of_work(db.sessions) as session:
                tenant = await create_tenant(session, name="acme")
            yield Gateway(client, emulator, settings, config, box, db, tenant.id, http)


async def test_install_connects_the_store_with_an_expiring_token_and_queues_a_sync(gateway: Gateway) -> None:
    # Given a tenant's signed install link without a shop: the merchant is asked for it
    link = install_link(gateway.settings, tenant_id=gateway.tenant_id, config=gateway.config)
    form = await gateway.client.get(_path(link))
    assert form.status == 200 and "myshopify.com" in await form.text()
    # When the merchant opens it with their shop and approves the app on Shopify
    authorize = await gateway.start()
    query = dict(parse_qsl(urlsplit(authorize).query))
    assert urlsplit(authorize).path == f"/{SHOP}/admin/oauth/authorize"
    assert query["client_id"] == gateway.config.client_id and query["scope"] == "read_products"
    assert query["redirect_uri"] == f"{gateway.config.public_url}/shopify/callback" and query["state"]
    callback = await gateway.approve(authorize)
    response = await gateway.client.get(_path(callback))
    # Then the store is connected
    assert response.status == 200, await response.text()
    assert "connected" in (await response.text()).lower()
    # And the code was exchanged for an expiring offline token, stored sealed with its refresh token
    assert gateway.emulator.token_requests[-1]["expiring"] == "1"
    async with unit_of_work(gateway.db.sessions, admin=True) as session:
        row = (await session.execute(select(ChannelInstallation).where(ChannelInstallation.external_id == SHOP))).scalar_one()
        assert row.tenant_id == gateway.tenant_id and row.status == "active"
        assert "shprt_" not in (row.secrets_encrypted or "") and "shpat_" not in (row.secrets_encrypted or "")
        tokens = TokenSet.from_secrets(reveal_secrets(gateway.box, row))
        assert tokens.expiring and tokens.refresh_token and row.details["scopes"] == ["read_products"]
        assert row.details["currency"] == "USD"
        # And the first catalog sync is queued (published after the commit) with its job visible
        [outbox] = (await session.execute(select(OutboxMessage).where(OutboxMessage.message_type == "catalog.sync_requested"))).scalars()
        envelope = Envelope.from_bytes(outbox.body)
        job = (await session.execute(select(Job).where(Job.id == envelope.payload["job_id"]))).scalar_one()
        assert envelope.tenant_id == gateway.tenant_id and envelope.payload["shop"] == SHOP and job.kind == "catalog_sync"
    # And the product and uninstall webhooks point at our webhook route
    hooks = gateway.emulator.shops[SHOP].webhooks
    assert {h["topic"] for h in hooks} == {"PRODUCTS_CREATE", "PRODUCTS_UPDATE", "PRODUCTS_DELETE", "APP_UNINSTALLED"}
    assert {h["uri"] for h in hooks} == {f"{gateway.config.public_url}/shopify/webhooks"}

    # When the same callback is replayed, Then the spent state refuses it
    replay = await gateway.client.get(_path(callback))
    assert replay.status == 403


async def test_callback_checks_hmac_state_cookie_and_shop(gateway: Gateway) -> None:
    callback = await gateway.approve(await gateway.start())
    params = dict(parse_qsl(urlsplit(callback).query))
    # a tampered query fails the HMAC
    forged = await gateway.client.get(f"/shopify/callback?{urlencode({**params, 'shop': 'other.myshopify.com'})}")
    assert forged.status == 401
    # a callback from another browser (no state cookie) is refused
    gateway.client.session.cookie_jar.clear()
    stranger = await gateway.client.get(_path(callback))
    assert stranger.status == 403
    # no token was exchanged for any of them
    assert gateway.emulator.token_requests == []


async def test_install_link_must_be_signed_and_the_shop_valid(gateway: Gateway) -> None:
    link = install_link(gateway.settings, tenant_id=gateway.tenant_id, config=gateway.config, shop=SHOP)
    params = dict(parse_qsl(urlsplit(link).query))
    other_tenant = await gateway.client.get(f"/shopify/install?{urlencode({**params, 'tenant': 'someone-else'})}", allow_redirects=False)
    assert other_tenant.status == 403
    bad_shop = await gateway.client.get(f"/shopify/install?{urlencode({**params, 'shop': 'evil.com'})}", allow_redirects=False)
    assert bad_shop.status == 400
    bare = await gateway.client.get("/shopify/install?shop=acme-outfitters.myshopify.com", allow_redirects=False)
    assert bare.status == 400
    cookie = gateway.client.session.cookie_jar.filter_cookies(gateway.client.make_url("/shopify/callback"))
    assert STATE_COOKIE not in cookie


async def test_missing_scopes_are_refused(gateway: Gateway) -> None:
    gateway.config = gateway.config.with_(scopes=("read_products", "read_inventory"))
    gateway.client.app[SHOPIFY].config = gateway.config
    gateway.emulator.granted_scopes = "read_products"  # the merchant's grant lacks read_inventory
    callback = await gateway.approve(await gateway.start())
    response = await gateway.client.get(_path(callback))
    assert response.status == 403 and "read_inventory" in await response.text()
    async with unit_of_work(gateway.db.sessions, admin=True) as session:
        assert (await session.execute(select(ChannelInstallation))).first() is None


async def test_an_install_link_connects_one_store_once(gateway: Gateway) -> None:
    # Given one install link (no shop pre-filled), opened twice for two stores before either finishes
    link = install_link(gateway.settings, tenant_id=gateway.tenant_id, config=gateway.config)
    first = await gateway.client.get(f"{_path(link)}&shop={SHOP}", allow_redirects=False)
    second = await gateway.client.get(f"{_path(link)}&shop=copycat.myshopify.com", allow_redirects=False)
    assert (first.status, second.status) == (302, 302)
    first_callback = await gateway.approve(first.headers["Location"])
    second_callback = await gateway.approve(second.headers["Location"])
    # When the first round trip comes back (in the browser that started it), Then that store is connected
    assert (await _back(gateway, first_callback)).status == 200
    # When the second one comes back (a copy of the link, used by someone else), Then it connects nothing
    late = await _back(gateway, second_callback)
    assert late.status == 403 and "already used" in await late.text()
    async with unit_of_work(gateway.db.sessions, admin=True) as session:
        shops = (await session.execute(select(ChannelInstallation.external_id))).scalars().all()
    assert shops == [SHOP]
    assert [r["shop"] for r in gateway.emulator.token_requests] == [SHOP]  # no code exchanged for the copy
    # And the link itself now says it was used
    again = await gateway.client.get(f"{_path(link)}&shop=copycat.myshopify.com", allow_redirects=False)
    assert again.status == 403 and "already used" in await again.text()


async def test_install_links_live_a_day_by_default_and_a_week_at_most(gateway: Gateway) -> None:
    # Given the default link, When its expiry is read, Then it is a day away (it was a week)
    link = install_link(gateway.settings, tenant_id=gateway.tenant_id, config=gateway.config, now=1_000_000)
    assert dict(parse_qsl(urlsplit(link).query))["expires"] == str(1_000_000 + 24 * 3600)
    # When a link is asked for longer than a week (or for no time at all), Then it is refused
    for ttl in (8 * 24 * 3600.0, 0.0, -5.0):
        with pytest.raises(InvalidInput):
            install_link(gateway.settings, tenant_id=gateway.tenant_id, config=gateway.config, ttl=ttl)


async def _back(gateway: Gateway, callback: str) -> aiohttp.ClientResponse:
    """Shopify's redirect to our callback, in the browser whose state cookie matches it."""
    gateway.client.session.cookie_jar.clear()
    state = dict(parse_qsl(urlsplit(callback).query))["state"]
    return await gateway.client.get(_path(callback), cookies={STATE_COOKIE: state})
