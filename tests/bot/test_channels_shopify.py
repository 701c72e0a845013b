"""Rotating and disconnecting a Shopify store through `bot.channels.connect` (the CLI's and the
dashboard's path), against the local Shopify (`tests.integrations.shopify_emulator`)."""

from __future__ import annotations

import aiohttp
import pytest
from cryptography.fernet import Fernet

from bot.channels.connect import Vendors, disconnect, rotate
from integrations.shopify.config import ShopifyConfig
from parley.crypto import SecretBox
from parley.db import unit_of_work
from parley.errors import ParleyError
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import reveal_secrets
from tenants.service import create_tenant, install_channel
from tests.bot.test_admin import Browser
from tests.integrations.shopify_emulator import ShopifyEmulator, running

SHOP = "acme-outfitters.myshopify.com"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_shopify_token_is_rotated_after_the_shop_accepts_it_then_disconnected(db) -> None:
    # Given a store connected with a custom app's token (and its webhook secret)
    emulator = ShopifyEmulator()
    box = SecretBox(Fernet.generate_key())
    old = emulator.issue_token(SHOP)
    async with unit_of_work(db.sessions) as session:
        tenant = await create_tenant(session, name="acme")
        tenant_id = tenant.id
    async with unit_of_work(db.sessions, admin=True) as session:
        await install_channel(session, box=box, tenant_id=tenant_id, kind=ChannelKind.shopify, external_id=SHOP,
                              display_name="Acme Outfitters", secrets={"access_token": old, "webhook_secret": "whsec-shop"})
    async with running(emulator) as base_url, aiohttp.ClientSession() as http:
        vendors = Vendors(shopify=ShopifyConfig(base_url=f"{base_url}/{{shop}}", scopes=("read_products",)))
        # When a token of another shop is offered, then a new token of this shop
        elsewhere = emulator.issue_token("other-shop.myshopify.com")
        with pytest.raises(ParleyError) as refused:
            await rotate(db.sessions, box, http, tenant_id=tenant_id, kind="shopify", ref="acme-outfitters", token=elsewhere,
                         vendors=vendors, actor="cli:test")
        assert refused.value.code == "channel_token_refused" and SHOP in refused.value.message
        new = emulator.issue_token(SHOP)
        out = await rotate(db.sessions, box, http, tenant_id=tenant_id, kind="shopify", ref="acme-outfitters", token=new,
                           vendors=vendors, actor="cli:test")
        # Then only the accepted one replaced the old token, and the webhook secret is kept
        assert out["external_id"] == SHOP and out["details"]["token_rotated_at"]
        async with unit_of_work(db.sessions, admin=True) as session:
            row = await session.get(ChannelInstallation, out["id"])
            assert row is not None
            secrets = reveal_secrets(box, row)
        assert secrets["access_token"] == new and secrets["webhook_secret"] == "whsec-shop"
        # And disconnecting erases the secrets and stops its routing
        gone = await disconnect(db.sessions, box, http, tenant_id=tenant_id, kind="shopify", ref=SHOP, vendors=vendors,
                                actor="cli:test")
        assert gone["status"] == "revoked" and gone["revoked_at_vendor"] is None
    async with unit_of_work(db.sessions, admin=True) as session:
        row = await session.get(ChannelInstallation, out["id"])
        assert row is not None and row.status == "revoked" and row.secrets_encrypted is None


@pytest.mark.rabbitmq
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_dashboard_connects_a_store_by_its_custom_app_token(make_stack) -> None:
    # Given the gateway pointed at the local Shopify, and a token of the store
    emulator = ShopifyEmulator()
    async with running(emulator) as base_url:
        stack = await make_stack(settings_update={"shopify_base_url": f"{base_url}/{{shop}}"})
        admin = await Browser(stack).signed_in(stack.api_key)
        try:
            token = emulator.issue_token(SHOP)
            # When the owner pastes a token Shopify does not know, then the right one
            bad = await admin.request("POST", "/admin/api/channels/shopify", json={"shop": "acme-outfitters", "token": "shpat_nope"})
            done = await admin.json("POST", "/admin/api/channels/shopify", 201, json={"shop": "acme-outfitters", "token": token})
            listed = (await admin.json("GET", "/admin/api/channels"))["channels"]
        finally:
            await admin.close()
    # Then the bad one is a 400 saying Shopify refused it, and the good one connects the store and starts its sync
    body = await bad.json()
    assert bad.status == 400 and body["error"] == "channel_token_refused" and "Shopify refused" in body["detail"], body
    assert done["external_id"] == SHOP and done["sync_job"]
    assert [c["external_id"] for c in listed if c["kind"] == "shopify"] == [SHOP]
