"""Webhooks end to end: signed deliveries to the gateway's route, the real catalog worker process,
real RabbitMQ and real databases."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.channels.shopify import setup_shopify
from ingestion.catalog.service import document_id, product_row_id
from knowledge.service import request_sync
from parley.bus.models import ProcessedMessage
from parley.db import unit_of_work
from parley.bus.models import OutboxMessage
from tenants.models import ChannelInstallation
from tests.ingestion.catalog.conftest import Stack, eventually
from tests.integrations.catalog_data import BASE_ID, synthetic_catalog
from tests.support import services
from tests.support.services import SHARED_DATA

pytestmark = pytest.mark.skipif(not services.reachable("127.0.0.1", 5672), reason="RabbitMQ is not reachable on 127.0.0.1:5672")

SHOP = "acme-outfitters.myshopify.com"
FIXTURE = SHARED_DATA / "fixtures" / "shopify" / "products_create_payload_2025-10__ids_restored.json"


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[TestClient]:
    app = web.Application()
    setup_shopify(app, settings=stack.settings, sessions=stack.sessions, box=stack.box, config=stack.config, http=stack.http)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def _post(stack: Stack, client: TestClient, topic: str, payload: dict | bytes, *, shop: str = SHOP, **kwargs) -> tuple[int, dict]:
    body, headers = stack.emulator.signed_webhook(topic, shop, payload, **kwargs)
    response = await client.post("/shopify/webhooks", data=body, headers=headers)
    result = await response.json()
    await stack.relay.flush()
    return response.status, result


async def _processed(stack: Stack, event_id: str) -> bool:
    async with unit_of_work(stack.sessions, admin=True) as session:
        found = await session.execute(select(ProcessedMessage).where(ProcessedMessage.key == f"shopify:{event_id}"))
        return found.first() is not None


async def _outbox(stack: Stack, message_type: str) -> int:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return (await session.execute(select(func.count()).select_from(OutboxMessage)
                                      .where(OutboxMessage.message_type == message_type))).scalar_one()


async def test_product_webhooks_update_the_index_once_in_order(stack: Stack, gateway: TestClient) -> None:
    # Given a connected store of 6 products, fully synced
    stack.emulator.add_products(SHOP, synthetic_catalog(6))
    await stack.finished((await stack.connect(SHOP)).job_id)
    target = BASE_ID + 1
    row_id = product_row_id(stack.tenant_id, SHOP, target)
    before = stack.emulator.rest_payload(SHOP, target)  # the version the store has now

    # When a forged products/update arrives, Then it is refused and nothing is queued
    body, headers = stack.emulator.signed_webhook("products/update", SHOP, {**before, "title": "Hacked"}, secret="not-the-secret")
    forged = await gateway.post("/shopify/webhooks", data=body, headers=headers)
    assert forged.status == 401 and await _outbox(stack, "catalog.product_changed") == 0

    # When the product is renamed in Shopify and its products/update webhook is delivered twice
    stack.emulator.update_product(SHOP, target, title="Midnight Blue Hoodie")
    renamed = stack.emulator.rest_payload(SHOP, target)
    version = await stack.index_version()
    status, first = await _post(stack, gateway, "products/update", renamed, event_id="evt-rename")
    again, second = await _post(stack, gateway, "products/update", renamed, event_id="evt-rename")
    # Then it is accepted once, the duplicate acknowledged without new work
    assert (status, first["status"], again, second["status"]) == (200, "accepted", 200, "duplicate")
    assert await _outbox(stack, "catalog.product_changed") == 1
    # And the row and the searchable text follow the new title; the answer cache is invalidated
    await eventually(lambda: _title_is(stack, target, "Midnight Blue Hoodie"))
    vectors = await stack.vectors()
    assert vectors[document_id(row_id)].title == "Midnight Blue Hoodie"
    assert "Midnight Blue Hoodie" in vectors[document_id(row_id)].text
    assert await stack.index_version() > version

    # When Shopify retries an older delivery (the previous version) after the newer one
    status, _ = await _post(stack, gateway, "products/update", before, event_id="evt-stale")
    assert status == 200
    await eventually(lambda: _processed(stack, "evt-stale"))
    # Then it is ignored: the newer title stays
    assert (await stack.products(SHOP))[target].title == "Midnight Blue Hoodie"

    # When a product is deleted in Shopify
    gone = BASE_ID + 2
    await _post(stack, gateway, "products/delete", {"id": gone}, event_id="evt-delete")
    # Then its row is flagged deleted and its vectors are gone
    await eventually(lambda: _deleted(stack, gone))
    assert document_id(product_row_id(stack.tenant_id, SHOP, gone)) not in await stack.vectors()

    # When a product is set back to draft in Shopify, Then customers stop seeing it: it leaves the index
    stack.emulator.update_product(SHOP, BASE_ID + 4, status="DRAFT")
    await _post(stack, gateway, "products/update", stack.emulator.rest_payload(SHOP, BASE_ID + 4), event_id="evt-draft")
    await eventually(lambda: _deleted(stack, BASE_ID + 4))
    assert document_id(product_row_id(stack.tenant_id, SHOP, BASE_ID + 4)) not in await stack.vectors()

    # When a product whose ids exceed 2**53 is created (Shopify's own example payload)
    if FIXTURE.exists():
        payload = json.loads(FIXTURE.read_text())
        payload["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
        await _post(stack, gateway, "products/create", payload, event_id="evt-create")
        # Then its id is stored exactly
        products = await eventually(lambda: _has(stack, 788032119674292922))
        row = products[788032119674292922]
        assert row.shopify_id == 788032119674292922 and row.variants[0]["id"] == "642667041472713922"
        assert row.currency == "USD"  # the webhook has no currency: the shop's, from the installation


async def test_compliance_uninstall_and_redact(stack: Stack, gateway: TestClient) -> None:
    stack.emulator.add_products(SHOP, synthetic_catalog(4))
    await stack.finished((await stack.connect(SHOP)).job_id)
    # Customers' data requests and redactions (their bodies as Shopify sends them): acknowledged, we
    # store no customer data
    for topic, extra in (("customers/data_request", {"orders_requested": [], "data_request": {"id": 9999}}),
                         ("customers/redact", {"orders_to_redact": []})):
        status, result = await _post(stack, gateway, topic, {"shop_id": 1, "shop_domain": SHOP, "customer": {"id": 1}, **extra})
        assert status == 200 and "no Shopify customer data" in result["detail"]
    # A shop we do not know: acknowledged and ignored
    status, result = await _post(stack, gateway, "products/update", {"id": 1}, shop="stranger.myshopify.com")
    assert (status, result["status"]) == (200, "ignored")

    # When the app is uninstalled
    status, result = await _post(stack, gateway, "app/uninstalled", {"id": 1, "domain": SHOP})
    assert status == 200
    # Then the installation is revoked with its tokens erased, product webhooks are ignored, a sync fails
    async with unit_of_work(stack.sessions, admin=True) as session:
        row = (await session.execute(select(ChannelInstallation).where(ChannelInstallation.external_id == SHOP))).scalar_one()
        assert row.status == "revoked" and row.secrets_encrypted is None
    status, result = await _post(stack, gateway, "products/update", stack.emulator.rest_payload(SHOP, BASE_ID))
    assert result["status"] == "ignored"
    async with unit_of_work(stack.sessions) as session:
        job = await request_sync(session, tenant_id=stack.tenant_id, shop=SHOP)
    await stack.relay.flush()
    failed = await stack.finished(job.id)
    assert failed.status.value == "failed" and "no longer connected" in (await stack.failed_items(job.id))[0].error
    assert len(await stack.products(SHOP)) == 4  # kept until Shopify asks for redaction

    # When shop/redact arrives (48 hours after the uninstall)
    status, result = await _post(stack, gateway, "shop/redact", {"shop_id": 1, "shop_domain": SHOP})
    assert (status, result["status"]) == (200, "accepted")
    assert result["counts"] == {"products": 4}  # the report of what goes (bot.privacy.erasure.shop_products)
    # Then the shop's products and vectors are erased
    await eventually(lambda: _none_left(stack))
    assert not [d for d in await stack.vectors() if d.startswith("product:")]


async def _title_is(stack: Stack, shopify_id: int, title: str) -> bool:
    return (await stack.products(SHOP))[shopify_id].title == title


async def _deleted(stack: Stack, shopify_id: int) -> bool:
    return shopify_id in await stack.products(SHOP, deleted=True)


async def _has(stack: Stack, shopify_id: int) -> dict | None:
    products = await stack.products(SHOP)
    return products if shopify_id in products else None


async def _none_left(stack: Stack) -> bool:
    return not await stack.products(SHOP, deleted=None)
