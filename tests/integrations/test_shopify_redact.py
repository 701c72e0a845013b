"""Shopify's ``customers/redact`` reaches the erasure machinery (`bot.privacy.erasure`).

Parley keeps no Shopify customer record; the only link between a Shopify customer and one of our
end customers is what the person wrote to the bot. So a redaction erases every end customer who
wrote the customer's email address (or phone number) to the store's tenant, and nothing else.
Real app routes (`setup_shopify`), deliveries signed as Shopify signs them, real SQLite and
PostgreSQL; afterwards every table and the blob store are searched for the customer's marker."""

from __future__ import annotations

import uuid
from typing import Any

from bot import models as M
from parley.blobs import BlobStore
from parley.db import unit_of_work, utcnow
from tests.bot.privacy_seed import conversation_of, files_containing, rows_containing, seed_customer
from tests.integrations.test_shopify_install import SHOP, Gateway, gateway  # noqa: F401  (fixture)
from tests.integrations.test_shopify_webhook_replay import _delivery, _post, stores  # noqa: F401  (fixture)

JANE, OTHER_PERSON = "UJANE00001", "UOTHER0002"
JANE_MARK, OTHER_MARK = "janeplover8842", "otherwren1063"


async def _seed(gateway: Gateway, tenant_id: str) -> BlobStore:
    blobs = BlobStore(gateway.settings.effective_blob_dir)
    async with unit_of_work(gateway.db.sessions, tenant_id=tenant_id) as session:  # type: ignore[attr-defined]
        await seed_customer(session, blobs, tenant_id=tenant_id, user=JANE, marker=JANE_MARK)
        await seed_customer(session, blobs, tenant_id=tenant_id, user=OTHER_PERSON, marker=OTHER_MARK)
        session.add(M.InboundMessage(tenant_id=tenant_id, channel="slack", external_event_id=uuid.uuid4().hex,
                                     conversation_id=conversation_of(JANE), sender_id=JANE, status="answered",
                                     text="My order number is 1042, my email is Jane.Doe@Example.com", received_at=utcnow()))
    return blobs


async def _everywhere(gateway: Gateway, marker: str) -> dict[str, int]:
    async with unit_of_work(gateway.db.sessions, admin=True) as session:  # type: ignore[attr-defined]
        return await rows_containing(session, marker)


def _redact(email: str) -> dict[str, Any]:
    return {"shop_id": 1, "shop_domain": SHOP, "customer": {"id": 207119551, "email": email, "phone": "555-625-1199"},
            "orders_to_redact": [299938, 280263]}


async def test_customers_redact_erases_whoever_wrote_the_customers_email(gateway: Gateway, stores: dict[str, str]) -> None:
    blobs = await _seed(gateway, stores[SHOP])
    # Given a redaction signed with another secret: refused, nothing erased
    body, headers = _delivery(gateway, "customers/redact", SHOP, _redact("jane.doe@example.com"), secret="not-the-secret")
    status, _ = await _post(gateway, body, headers)
    assert status == 401 and "inbound_message" in await _everywhere(gateway, JANE_MARK)
    # When Shopify asks, signed, to redact the customer with Jane's email
    body, headers = _delivery(gateway, "customers/redact", SHOP, _redact("jane.doe@example.com"))
    status, result = await _post(gateway, body, headers)
    # Then the answer is the erasure's report: one end customer, with what went
    assert status == 200 and result["status"] == "ok", result
    [report] = result["erased"]
    assert report["customer"] == f"slack:{JANE}" and report["counts"]["messages"] == 2 and report["counts"]["documents"] == 1
    # And nothing of Jane is left in any table or file; the other customer is untouched
    assert await _everywhere(gateway, JANE_MARK) == {} and await _everywhere(gateway, JANE) == {}
    assert await _everywhere(gateway, "Jane.Doe@Example.com") == {}
    assert files_containing(blobs.root, JANE_MARK) == []
    assert "inbound_message" in await _everywhere(gateway, OTHER_MARK) and files_containing(blobs.root, OTHER_MARK)


async def test_a_customer_nobody_named_has_nothing_to_erase(gateway: Gateway, stores: dict[str, str]) -> None:
    await _seed(gateway, stores[SHOP])
    # When the customer to redact never wrote to the bot
    body, headers = _delivery(gateway, "customers/redact", SHOP, _redact("someone.else@example.com"))
    status, result = await _post(gateway, body, headers)
    # Then the answer says there was nothing to erase, and nothing was
    assert status == 200 and result["erased"] == [] and "nothing to erase" in result["detail"]
    assert "no Shopify customer data" in result["detail"]
    assert "inbound_message" in await _everywhere(gateway, JANE_MARK)
