"""The dashboard's knowledge history and uploader policy: over HTTP (CSRF, tenant isolation, restore)
and in a real headless browser (the History page: the policy form, the log, the Restore button)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from knowledge.audit import Actor
from knowledge.models import Document, DocumentStatus, KnowledgeEvent
from knowledge.service import delete_document
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from parley.vectors import create_vector_index
from tests.bot.conftest import Stack
from tests.bot.test_admin import Browser, browsers  # noqa: F401  (the fixture)
from tests.bot.test_web import bearer, files
from tests.support.browser import chromium_paths, screenshot_dir, start_chromium

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]


async def _uploaded_and_deleted(stack: Stack, name: str = "faq.md") -> str:
    """A document uploaded in the web chat, then deleted by the operator (as `parley documents delete` does)."""
    response = await stack.client.post("/api/documents", data=files((name, b"# FAQ\n\nWe answer within a day.\n",
                                                                     "text/markdown")), headers=bearer(stack.api_key))
    [doc] = (await response.json())["documents"]
    index = create_vector_index(stack.settings, role="writer", sessions=stack.sessions)
    try:
        async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
            await delete_document(session, index, tenant_id=stack.tenant_id, document_id=doc["id"],
                                  actor=Actor("cli", "operator", may_replace=True))
    finally:
        await index.aclose()
    return str(doc["id"])


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_history_restore_and_policy_over_http(stack: Stack, browsers: list[Browser]) -> None:  # noqa: F811
    # Given a document uploaded by the web key and deleted by the operator
    doc_id = await _uploaded_and_deleted(stack)
    admin = await Browser(stack).signed_in(stack.api_key)
    browsers.append(admin)
    # When the admin opens the history
    history = (await admin.json("GET", "/admin/api/knowledge-events"))["events"]
    # Then it shows both steps, newest first, with who did them and the document's state
    assert [(e["action"], e["actor"]["channel"]) for e in history] == [("deleted", "cli"), ("uploaded", "web")]
    assert history[0]["document"]["restorable"] is True and history[0]["document"]["status"] == "deleted"
    # When they restore it without the CSRF token, nothing happens; with it, it is queued again
    refused = await admin.request("POST", f"/admin/api/documents/{doc_id}/restore", csrf=False, json={})
    assert refused.status == 403
    restored = await admin.json("POST", f"/admin/api/documents/{doc_id}/restore", status=202, json={})
    assert restored["document"]["status"] == "queued"
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        outbox = (await session.execute(select(OutboxMessage.message_type).where(
            OutboxMessage.tenant_id == stack.tenant_id))).scalars().all()
    assert outbox.count("document.uploaded") == 2  # the upload's, and the restore's
    # And restoring what is not deleted is a clear 409, another tenant's document a 404
    again = await admin.request("POST", f"/admin/api/documents/{doc_id}/restore", json={})
    assert again.status == 409 and "only a replaced or deleted document" in (await again.json())["detail"]
    other = await Browser(stack).signed_in(stack.other_api_key)
    browsers.append(other)
    assert (await other.request("POST", f"/admin/api/documents/{doc_id}/restore", json={})).status == 404
    assert (await other.json("GET", "/admin/api/knowledge-events"))["events"] == []

    # When the admin lists a Slack uploader who may replace, and closes Instagram uploads
    await admin.json("POST", "/admin/api/uploaders", json={"channel": "slack", "user_id": "U0LEAD", "may_replace": True})
    changed = await admin.json("POST", "/admin/api/uploaders", json={"channel": "instagram", "mode": "nobody"})
    # Then the policy shows it, and the other tenant's is untouched
    channels = {c["channel"]: c for c in changed["channels"]}
    assert channels["instagram"]["mode"] == "nobody" and "closed" in channels["instagram"]["meaning"]
    assert [(u["user_id"], u["may_replace"], u["added_by"]) for u in channels["slack"]["uploaders"]] == [
        ("U0LEAD", True, f"admin:api_key:{(await admin.json('GET', '/admin/api/session'))['key']['id']}")]
    theirs = {c["channel"]: c for c in (await other.json("GET", "/admin/api/uploaders"))["channels"]}
    assert theirs["instagram"]["mode"] == "admins" and theirs["slack"]["uploaders"] == []
    # And nonsense is a 400 with the reason, never a 500
    bad = await admin.request("POST", "/admin/api/uploaders", json={"channel": "shopify", "mode": "anyone"})
    assert bad.status == 400 and "unknown upload channel" in (await bad.json())["detail"]
    bad = await admin.request("POST", "/admin/api/uploaders", json={"channel": "slack", "mode": "everyone"})
    assert bad.status == 400 and "unknown upload mode" in (await bad.json())["detail"]
    bad = await admin.request("POST", "/admin/api/uploaders", data=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert bad.status == 400
    removed = await admin.json("POST", "/admin/api/uploaders/remove", json={"channel": "slack", "user_id": "U0LEAD"})
    assert removed["removed"] is True


@pytest.mark.timeout(180)
@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_history_page_in_a_browser(stack: Stack) -> None:
    chromium_paths()
    # Given a deleted document
    doc_id = await _uploaded_and_deleted(stack, "returns.md")
    driver = await asyncio.to_thread(start_chromium)
    try:
        await asyncio.to_thread(_walk, driver, str(stack.client.make_url("")).rstrip("/"), stack.api_key, doc_id)
    finally:
        await asyncio.to_thread(driver.quit)
    # Then what the person did in the page happened on the server
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        doc = await session.get(Document, doc_id)
        actions = [e.action.value for e in (await session.execute(select(KnowledgeEvent).order_by(KnowledgeEvent.id))).scalars()]
    assert doc is not None and doc.status == DocumentStatus.queued
    assert actions == ["uploaded", "deleted", "restored"]
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        from tenants import uploaders

        policy = {c["channel"]: c for c in await uploaders.describe(session, tenant_id=stack.tenant_id)}
    assert policy["web"]["mode"] == "listed"
    assert [(u["user_id"], u["may_replace"]) for u in policy["slack"]["uploaders"]] == [("U0HELPER", True)]


def _walk(driver: Any, base: str, api_key: str, doc_id: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])

    def find(css: str) -> Any:
        return wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    def click(css: str) -> None:
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, css)))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True)

    # When the person signs in and opens the History page
    driver.get(f"{base}/admin/history")
    find("#api_key").send_keys(api_key)
    click("#login-form button")
    wait.until(ec.url_to_be(f"{base}/admin/history"))
    # Then the log shows the deletion with a Restore button, and the upload
    find('#history-body tr[data-action="deleted"] button.restore')
    find('#history-body tr[data-action="uploaded"]')
    # When they list a Slack helper who may replace
    find('.policy-channel[data-channel="slack"] input[type=text]').send_keys("U0HELPER")
    click('.policy-channel[data-channel="slack"] input[type=checkbox]')
    click('.policy-channel[data-channel="slack"] button[type=submit]')
    wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "U0HELPER may add documents"))
    find('.policy-channel[data-channel="slack"] li[data-user="U0HELPER"]')
    # And make web uploads listed-only
    find('[data-view="history"] h1').click()  # out of the policy form, so the page refreshes it
    Select(find('.policy-channel[data-channel="web"] select.mode')).select_by_value("listed")
    wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "listed"))
    # And restore the deleted document
    find('[data-view="history"] h1').click()
    click(f'#history-body tr[data-action="deleted"] button.restore[data-id="{doc_id}"]')
    wait.until(ec.text_to_be_present_in_element((By.ID, "flash"), "returns.md restored"))
    find('#history-body tr[data-action="restored"]')
    driver.save_screenshot(str(screenshot_dir(ROOT / "var" / "screenshots" / "admin") / "10-history.png"))
