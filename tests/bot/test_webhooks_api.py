"""Outbound webhooks over HTTP: the tenant API (/api/v1/webhooks, API key) and the dashboard's
Webhooks page (/admin/api/webhooks, session + CSRF): registration with URL checks, the secret shown
once, rotation, enable/disable, a test delivery queued, tenant isolation, bad input answered 4xx."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select

from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from tests.bot.conftest import Stack
from tests.bot.test_admin import Browser, browsers  # noqa: F401 - the fixture
from webhooks.models import WebhookEndpoint

pytestmark = [pytest.mark.rabbitmq]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def dev_stack(make_stack: Callable[..., Awaitable[Stack]]) -> Stack:
    return await make_stack(settings_update={"webhooks_allow_private": True})


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_api_registers_lists_rotates_and_tests_endpoints(dev_stack: Stack) -> None:
    stack, key = dev_stack, dev_stack.api_key
    client = stack.client
    # Given a tenant with an API key / When it registers an endpoint
    created = await client.post("/api/v1/webhooks", headers=bearer(key),
                                json={"url": "http://127.0.0.1:9/hook", "events": "document.indexed,job.completed"})
    assert created.status == 201, await created.text()
    endpoint = await created.json()
    # Then the answer carries the secret, once, and the events
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["document.indexed", "job.completed"]
    # And the stored secret is sealed, and no listing shows it
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        row = await session.get(WebhookEndpoint, endpoint["id"])
    assert endpoint["secret"] not in row.secret_sealed and stack.gw.box.decrypt(row.secret_sealed) == endpoint["secret"]
    listed = await (await client.get("/api/v1/webhooks", headers=bearer(key))).json()
    assert [e["id"] for e in listed["endpoints"]] == [endpoint["id"]] and "secret" not in listed["endpoints"][0]
    assert "quota.exceeded" in listed["event_types"]
    # When the secret is rotated with a 2 h overlap / Then a new one is shown and the old one still signs
    rotated = await (await client.post(f"/api/v1/webhooks/{endpoint['id'][:8]}/rotate", headers=bearer(key),
                                       json={"overlap_hours": 2})).json()
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_until"]
    # When it is disabled, changed, then a test delivery is asked for
    off = await (await client.post(f"/api/v1/webhooks/{endpoint['id']}/disable", headers=bearer(key))).json()
    assert off["enabled"] is False and off["disabled_reason"] == "disabled by the tenant"
    changed = await client.patch(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(key), json={"events": ["catalog.synced"]})
    assert (await changed.json())["events"] == ["catalog.synced"]
    tested = await client.post(f"/api/v1/webhooks/{endpoint['id']}/test", headers=bearer(key))
    assert tested.status == 202
    delivery = await tested.json()
    assert delivery["event_type"] == "webhook.test" and delivery["status"] == "pending"
    # Then the delivery is in the endpoint's log and its message in the outbox for the webhooks worker
    log = await (await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(key))).json()
    assert [d["webhook_id"] for d in log["deliveries"]] == [delivery["webhook_id"]]
    async with unit_of_work(stack.sessions, admin=True) as session:
        queued = (await session.execute(select(OutboxMessage).where(OutboxMessage.routing_key == "webhooks"))).scalars().all()
    assert [m.message_type for m in queued] == ["webhook.delivery_requested"]
    # When it is removed / Then it is gone
    assert (await client.delete(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(key))).status == 200
    assert (await (await client.get("/api/v1/webhooks", headers=bearer(key))).json())["endpoints"] == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_bad_input_and_other_tenants_get_clear_4xx(stack: Stack) -> None:
    client, key = stack.client, stack.api_key
    # A private address (the platform does not allow them), plain http, an unknown event, no URL, not JSON
    for body, code, words in [
        ({"url": "https://127.0.0.1/x", "events": "all"}, "webhook_url_rejected", "loopback"),
        ({"url": "https://10.0.0.5/x", "events": "all"}, "webhook_url_rejected", "private address"),
        ({"url": "http://93.184.215.14/x", "events": "all"}, "webhook_url_rejected", "must use https"),
        ({"url": "https://93.184.215.14/x", "events": ["nope"]}, "invalid_input", "unknown event type nope"),
        ({"url": "https://93.184.215.14/x", "events": 5}, "invalid_input", "'events' is a list"),
        ({"events": "all"}, "invalid_input", "send the endpoint's 'url'"),
    ]:
        answer = await client.post("/api/v1/webhooks", headers=bearer(key), json=body)
        assert answer.status == 400, (body, await answer.text())
        error = await answer.json()
        assert error["error"] == code and words in error["detail"], error
    garbage = await client.post("/api/v1/webhooks", headers={**bearer(key), "Content-Type": "application/json"},
                                data=b"{not json")
    assert garbage.status == 400
    # Nothing was registered by any of them
    assert (await (await client.get("/api/v1/webhooks", headers=bearer(key))).json())["endpoints"] == []
    # Without a key: 401; another tenant's endpoint: 404
    assert (await client.get("/api/v1/webhooks")).status == 401
    made = await client.post("/api/v1/webhooks", headers=bearer(key), json={"url": "https://93.184.215.14/x", "events": "all"})
    endpoint = await made.json()
    other = await client.get(f"/api/v1/webhooks/{endpoint['id']}", headers=bearer(stack.other_api_key))
    assert other.status == 404 and "no such webhook endpoint" in (await other.json())["detail"]
    rotate = await client.post(f"/api/v1/webhooks/{endpoint['id']}/rotate", headers=bearer(key), json={"overlap_hours": "soon"})
    assert rotate.status == 400
    limit = await client.get(f"/api/v1/webhooks/{endpoint['id']}?limit=lots", headers=bearer(key))
    assert limit.status == 400


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_dashboard_page_manages_endpoints_with_csrf(dev_stack: Stack, browsers: list[Browser]) -> None:  # noqa: F811
    admin = await Browser(dev_stack).signed_in(dev_stack.api_key)
    browsers.append(admin)
    # Given the Webhooks page
    page = await admin.request("GET", "/admin/webhooks")
    assert page.status == 200 and 'data-view="webhooks"' in await page.text()
    script = await admin.request("GET", "/admin/static/webhooks.js")
    assert script.status == 200 and "views.webhooks" in await script.text()
    # When an endpoint is added without the CSRF token / Then it is refused
    refused = await admin.request("POST", "/admin/api/webhooks", csrf=False, json={"url": "http://127.0.0.1:9/h", "events": "all"})
    assert refused.status == 403
    # When added with it / Then its secret is shown once, and it is listed with every event type
    made = await admin.json("POST", "/admin/api/webhooks", status=201, json={"url": "http://127.0.0.1:9/h", "events": "all"})
    assert made["secret"].startswith("whsec_")
    listed = await admin.json("GET", "/admin/api/webhooks")
    assert [e["events"] for e in listed["endpoints"]] == [listed["event_types"]]
    # And its delivery log answers (empty), and enable/disable work from the page
    assert (await admin.json("GET", f"/admin/api/webhooks/{made['id']}"))["deliveries"] == []
    assert (await admin.json("POST", f"/admin/api/webhooks/{made['id']}/disable"))["enabled"] is False
    assert (await admin.json("POST", f"/admin/api/webhooks/{made['id']}/enable"))["enabled"] is True
