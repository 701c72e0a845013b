"""Erasure and retention through the gateway: `POST /api/v1/erasure` (a tenant's admin API key) and the
dashboard's Privacy page API, on the real gateway (`create_app`) with real Slack DMs answered by the
real retrieval service, real RabbitMQ and SQLite/PostgreSQL. Afterwards every table is searched."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from bot import models as M
from parley.db import unit_of_work, utcnow
from tests.bot.conftest import Stack, dm, eventually
from tests.bot.privacy_seed import rows_containing
from tests.bot.test_admin import Browser

ALICE, BOB = "UALICE0001", "UBOB000002"


def _dm_from(user: str, text: str) -> dict[str, Any]:
    payload = dm(text)
    payload["event"].update(user=user, channel=f"D{user}")
    return payload


async def _gone(stack: Stack, needle: str) -> bool:
    return await _search(stack, needle) == {}


async def _search(stack: Stack, needle: str) -> dict[str, int]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return await rows_containing(session, needle)


async def test_the_api_erases_one_customer_of_the_keys_tenant(stack: Stack) -> None:
    # Given two customers who asked in their DMs, both answered
    for user, marker in ((ALICE, "alicemarmot551"), (BOB, "bobpelican772")):
        assert (await stack.post_slack(_dm_from(user, f"What is the warranty on order {marker}?"))).status == 200
    await stack.settle()
    assert {"inbound_message", "conversation_turn"} <= set(await _search(stack, "alicemarmot551"))
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    # A malformed customer, a bad flag, no key: refused with the reason, nothing erased
    bad = await stack.client.post("/api/v1/erasure", json={"customer": "alice"}, headers=auth)
    assert bad.status == 400 and (await bad.json())["error"] == "invalid_customer"
    bad = await stack.client.post("/api/v1/erasure", json={"customer": f"slack:{ALICE}", "dry_run": "yes"}, headers=auth)
    assert bad.status == 400
    assert (await stack.client.post("/api/v1/erasure", json={"customer": f"slack:{ALICE}"})).status == 401
    # When the tenant previews, then erases Alice
    preview = await stack.client.post("/api/v1/erasure", json={"customer": f"slack:{ALICE}", "dry_run": True}, headers=auth)
    assert preview.status == 200 and (await preview.json())["counts"]["messages"] == 1
    assert "inbound_message" in await _search(stack, "alicemarmot551")
    done = await stack.client.post("/api/v1/erasure", json={"customer": f"slack:{ALICE}"}, headers=auth)
    report = await done.json()
    # Then the report is the erasure's, and nothing of Alice is left; Bob is untouched
    assert done.status == 200 and report["counts"]["messages"] == 1 and report["counts"]["turns"] == 2
    assert await _search(stack, "alicemarmot551") == {} and await _search(stack, ALICE) == {}
    assert {"inbound_message", "conversation_turn"} <= set(await _search(stack, "bobpelican772"))
    # And another tenant's key erases nothing of this tenant's customers
    other = await stack.client.post("/api/v1/erasure", json={"customer": f"slack:{BOB}"},
                                    headers={"Authorization": f"Bearer {stack.other_api_key}"})
    assert other.status == 200 and (await other.json())["total"] == 0
    assert "inbound_message" in await _search(stack, "bobpelican772")
    # And the gateway counts the erasures it did (the previews are not erasures)
    metrics = await (await stack.client.get("/metrics")).text()
    assert 'parley_gateway_erasures_total{door="api"} 2.0' in metrics


async def test_the_privacy_page_sets_retention_and_erases_with_a_preview(make_stack: Any) -> None:
    # Given a gateway that runs the retention sweep often, a customer's question from today and one
    # from 40 days ago
    stack = await make_stack(settings_update={"retention_sweep_interval_seconds": 0.1})
    assert (await stack.post_slack(_dm_from(BOB, "Where is parcel bobheron903?"))).status == 200
    await stack.settle()
    old = utcnow() - dt.timedelta(days=40)
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        session.add(M.InboundMessage(channel="slack", external_event_id=uuid.uuid4().hex, conversation_id="slack:T:DOLD",
                                     sender_id="UOLD000009", text="old question oldibis4410", status="answered",
                                     received_at=old))
    browser = await Browser(stack).signed_in(stack.api_key)
    try:
        # The page is there, behind the sign-in
        page = await browser.request("GET", "/admin/privacy")
        assert page.status == 200 and 'data-view="privacy"' in await page.text()
        # When the admin reads, then changes the retention settings
        shown = await browser.json("GET", "/admin/api/retention")
        assert (shown["raw_files"], shown["transcript_days"], shown["dead_letter_days"]) == ("keep", 0, 30)
        changed = await browser.json("POST", "/admin/api/retention", json={"transcript_days": 60, "raw_files": "delete"})
        assert (changed["transcript_days"], changed["raw_files"], changed["source"]["transcript_days"]) == (60, "delete", "tenant")
        await asyncio.sleep(0.5)  # a few sweeps: 40 days is within 60
        assert "inbound_message" in await _search(stack, "oldibis4410")
        # Then, with 30 days, the gateway's own sweep removes the old question and keeps today's
        await browser.json("POST", "/admin/api/retention", json={"transcript_days": 30})
        await eventually(lambda: _gone(stack, "oldibis4410"))
        assert "inbound_message" in await _search(stack, "bobheron903")
        metrics = await (await stack.client.get("/metrics")).text()
        assert 'parley_gateway_retention_removed_total{kind="messages"} 1.0' in metrics
        # A bad value or an unknown setting is a 400 saying which, and changes nothing
        bad = await browser.request("POST", "/admin/api/retention", json={"dead_letter_days": 0})
        assert bad.status == 400 and "dead-letter retention" in (await bad.json())["detail"]
        bad = await browser.request("POST", "/admin/api/retention", json={"keep_forever": True})
        assert bad.status == 400 and "keep_forever" in (await bad.json())["detail"]
        assert (await browser.json("GET", "/admin/api/retention"))["dead_letter_days"] == 30
        # And a POST without the CSRF token is refused
        assert (await browser.request("POST", "/admin/api/erasure", csrf=False, json={"customer": f"slack:{BOB}"})).status == 403
        # When they preview and then erase Bob from the page
        preview = await browser.json("POST", "/admin/api/erasure", json={"customer": f"slack:{BOB}", "dry_run": True})
        assert preview["dry_run"] and preview["counts"]["messages"] == 1
        done = await browser.json("POST", "/admin/api/erasure", json={"customer": f"slack:{BOB}"})
        assert not done["dry_run"] and done["counts"]["messages"] == 1
        assert await _search(stack, "bobheron903") == {} and await _search(stack, BOB) == {}
    finally:
        await browser.close()
