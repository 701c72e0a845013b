"""Replaying a captured Shopify delivery: the HMAC covers only the body, so an attacker who saw one
delivery can resend its exact bytes with any headers. Each way of doing so must stage nothing new.

Real app routes (`setup_shopify`), deliveries signed as Shopify signs them (the emulator's
`signed_webhook`), real SQLite and PostgreSQL in one rolled-back transaction; what a delivery
staged is read from the outbox.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from parley.bus import Envelope
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from tenants.models import ChannelKind
from tenants.service import create_tenant, install_channel
from tests.integrations.test_shopify_install import SHOP, Gateway, gateway  # noqa: F401  (fixture)

OTHER = "other-outfitters.myshopify.com"  # another tenant's store, on the same public app
CUSTOM = "custom-made.myshopify.com"  # a store connected through its own custom app
CUSTOM_SECRET = "custom-app-api-secret"
PRODUCT = {"id": 632910392, "title": "IPod Nano - 8GB", "handle": "ipod-nano", "status": "active",
           "updated_at": "2026-12-01T10:00:00-05:00", "variants": [{"id": 808950810, "price": "199.00", "sku": "IPOD2008PINK"}]}


@pytest.fixture
async def stores(gateway: Gateway) -> dict[str, str]:
    """SHOP for the gateway's tenant, OTHER for a second tenant (both public-app installs), CUSTOM for
    the first tenant through a custom app whose webhooks are signed with its own secret."""
    async with unit_of_work(gateway.db.sessions) as session:
        other = await create_tenant(session, name="other")
    async with unit_of_work(gateway.db.sessions, admin=True) as session:
        for tenant_id, shop, details, secrets in (
                (gateway.tenant_id, SHOP, {"token_kind": "expiring_offline"}, {"access_token": "shpat_a"}),
                (other.id, OTHER, {"token_kind": "expiring_offline"}, {"access_token": "shpat_b"}),
                (gateway.tenant_id, CUSTOM, {"token_kind": "custom_app"},
                 {"access_token": "shpat_c", "webhook_secret": CUSTOM_SECRET})):
            await install_channel(session, box=gateway.box, tenant_id=tenant_id, kind=ChannelKind.shopify,
                                  external_id=shop, display_name=shop, details=details, secrets=secrets)
    return {SHOP: gateway.tenant_id, OTHER: other.id, CUSTOM: gateway.tenant_id}


def _delivery(gateway: Gateway, topic: str, shop: str, payload: dict[str, Any] | bytes, **options: Any) -> tuple[bytes, dict[str, str]]:
    return gateway.emulator.signed_webhook(topic, shop, payload, **options)


async def _post(gateway: Gateway, body: bytes, headers: dict[str, str], **changed: str) -> tuple[int, dict[str, Any]]:
    response = await gateway.client.post("/shopify/webhooks", data=body, headers={**headers, **changed})
    return response.status, await response.json()


async def _staged(gateway: Gateway) -> list[tuple[str, str]]:
    """(message type, tenant) of every catalog message staged so far."""
    async with unit_of_work(gateway.db.sessions, admin=True) as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.routing_key == "catalog")
                                      .order_by(OutboxMessage.id))).scalars()
        return [(row.message_type, Envelope.from_bytes(row.body).tenant_id) for row in rows]


def _fresh_ids() -> dict[str, str]:
    return {"X-Shopify-Event-Id": "replayed-event", "X-Shopify-Webhook-Id": "replayed-webhook",
            "X-Shopify-Triggered-At": dt.datetime.now(dt.UTC).isoformat()}


async def test_a_replay_under_new_event_and_webhook_ids_is_a_duplicate(gateway: Gateway, stores: dict[str, str]) -> None:
    # Given a products/update delivery that was accepted
    body, headers = _delivery(gateway, "products/update", SHOP, PRODUCT)
    assert (await _post(gateway, body, headers))[1]["status"] == "accepted"
    # When its bytes are sent again with a new X-Shopify-Event-Id, X-Shopify-Webhook-Id and trigger time
    status, result = await _post(gateway, body, headers, **_fresh_ids())
    # Then it is a duplicate, and only the first delivery staged work
    assert (status, result["status"]) == (200, "duplicate")
    # When they are sent once more as another topic (a product body presented as products/create)
    status, result = await _post(gateway, body, headers, **{**_fresh_ids(), "X-Shopify-Topic": "products/create",
                                                            "X-Shopify-Event-Id": "third", "X-Shopify-Webhook-Id": "third"})
    # Then that too is the same delivery
    assert (status, result["status"]) == (200, "duplicate")
    assert await _staged(gateway) == [("catalog.product_changed", stores[SHOP])]


async def test_a_known_webhook_id_is_a_duplicate_whatever_its_event_id(gateway: Gateway, stores: dict[str, str]) -> None:
    # Given a delivery that was accepted
    body, headers = _delivery(gateway, "products/update", SHOP, PRODUCT)
    assert (await _post(gateway, body, headers))[1]["status"] == "accepted"
    # When it comes again with its X-Shopify-Webhook-Id and another X-Shopify-Event-Id, Then it is a duplicate
    assert (await _post(gateway, body, headers, **{"X-Shopify-Event-Id": "another-event"}))[1]["status"] == "duplicate"
    # And a newer version of the product (a new updated_at) is new work
    newer, headers2 = _delivery(gateway, "products/update", SHOP, {**PRODUCT, "title": "IPod Nano - 16GB",
                                                                   "updated_at": "2026-12-01T11:00:00-05:00"})
    assert (await _post(gateway, newer, headers2))[1]["status"] == "accepted"
    assert len(await _staged(gateway)) == 2


async def test_a_delivery_readdressed_to_another_tenants_shop_stages_nothing_for_it(gateway: Gateway,
                                                                                   stores: dict[str, str]) -> None:
    # Given a products/update delivery accepted for SHOP
    body, headers = _delivery(gateway, "products/update", SHOP, PRODUCT)
    assert (await _post(gateway, body, headers))[1]["status"] == "accepted"
    # When its bytes are sent with another tenant's shop in X-Shopify-Shop-Domain (and fresh ids)
    status, result = await _post(gateway, body, headers, **_fresh_ids(), **{"X-Shopify-Shop-Domain": OTHER})
    # Then nothing is staged for that tenant
    assert (status, result["status"]) == (200, "duplicate")
    assert [tenant for _, tenant in await _staged(gateway)] == [stores[SHOP]]


@pytest.mark.parametrize("topic, payload", [
    ("shop/redact", {"shop_id": 1, "shop_domain": SHOP}),
    ("app/uninstalled", {"id": 1, "name": "Acme", "domain": "shop.acme.example", "myshopify_domain": SHOP}),
    ("customers/redact", {"shop_id": 1, "shop_domain": SHOP, "customer": {"id": 7}, "orders_to_redact": []}),
])
async def test_a_body_that_names_another_shop_than_the_header_is_refused(gateway: Gateway, stores: dict[str, str],
                                                                        topic: str, payload: dict[str, Any]) -> None:
    # Given a delivery about SHOP (never seen before) sent with OTHER in X-Shopify-Shop-Domain
    body, headers = _delivery(gateway, topic, OTHER, payload)
    # When it arrives, Then it is refused: the header disagrees with the signed body
    status, result = await _post(gateway, body, headers)
    assert (status, result["error"]) == (400, "shop_mismatch")
    # And nothing was staged or changed for OTHER's tenant (its store is still connected)
    assert await _staged(gateway) == []
    products_update, headers = _delivery(gateway, "products/update", OTHER, {**PRODUCT, "id": 1})
    assert (await _post(gateway, products_update, headers))[1]["status"] == "accepted"
    # And a shop-level body that names no shop at all is refused too
    nameless, headers = _delivery(gateway, topic, OTHER, {"id": 1})
    assert (await _post(gateway, nameless, headers))[1]["error"] == "shop_mismatch"


async def test_a_product_body_presented_as_a_deletion_is_refused(gateway: Gateway, stores: dict[str, str]) -> None:
    # Given a product's body (never delivered here) sent as products/delete
    body, headers = _delivery(gateway, "products/delete", SHOP, PRODUCT)
    # When it arrives, Then it is refused: Shopify's deletions carry the id only
    status, result = await _post(gateway, body, headers)
    assert (status, result["error"]) == (400, "topic_mismatch")
    # And a real deletion body is accepted
    body, headers = _delivery(gateway, "products/delete", SHOP, {"id": PRODUCT["id"]})
    assert (await _post(gateway, body, headers))[1]["status"] == "accepted"
    assert await _staged(gateway) == [("catalog.product_deleted", stores[SHOP])]


async def test_a_delivery_is_bound_to_the_store_whose_secret_signed_it(gateway: Gateway, stores: dict[str, str]) -> None:
    # Given CUSTOM, whose webhooks are signed with its own app's secret, and SHOP, signed with the app's
    # When a delivery signed with the app's secret is addressed to CUSTOM
    body, headers = _delivery(gateway, "products/update", CUSTOM, PRODUCT)
    status, _ = await _post(gateway, body, headers)
    # Then it is refused: only CUSTOM's secret signs for CUSTOM
    assert status == 401
    # When a delivery signed with CUSTOM's secret is addressed to SHOP, Then it is refused too
    body, headers = _delivery(gateway, "products/update", SHOP, PRODUCT, secret=CUSTOM_SECRET)
    assert (await _post(gateway, body, headers))[0] == 401
    # And CUSTOM's own deliveries are accepted for its tenant
    body, headers = _delivery(gateway, "products/update", CUSTOM, PRODUCT, secret=CUSTOM_SECRET)
    assert (await _post(gateway, body, headers))[1]["status"] == "accepted"
    assert await _staged(gateway) == [("catalog.product_changed", stores[CUSTOM])]


async def test_a_delivery_triggered_long_ago_is_refused(gateway: Gateway, stores: dict[str, str]) -> None:
    now = dt.datetime.now(dt.UTC)
    # Given a delivery Shopify triggered 7 hours ago (its retries stop after 4)
    body, headers = _delivery(gateway, "products/update", SHOP, PRODUCT, triggered_at=now - dt.timedelta(hours=7))
    # When it arrives, Then it is refused as a replay, and nothing is recorded for it
    status, result = await _post(gateway, body, headers)
    assert (status, result["error"]) == (400, "stale_delivery")
    # When the trigger time is not a time at all, Then it is refused too
    status, result = await _post(gateway, body, headers, **{"X-Shopify-Triggered-At": "yesterday"})
    assert (status, result["error"]) == (400, "invalid_input")
    # And Shopify's retry 3 hours after the trigger is accepted (the refusals recorded nothing)
    status, result = await _post(gateway, body, headers, **{"X-Shopify-Triggered-At": (now - dt.timedelta(hours=3)).isoformat()})
    assert (status, result["status"]) == (200, "accepted")
    # And Shopify's own format (nanoseconds, Z) is read
    fresh, headers = _delivery(gateway, "products/update", SHOP, {**PRODUCT, "updated_at": "2026-12-02T00:00:00Z"})
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    assert (await _post(gateway, fresh, headers, **{"X-Shopify-Triggered-At": stamp}))[1]["status"] == "accepted"
    assert await _staged(gateway) == [("catalog.product_changed", stores[SHOP])] * 2
