"""A refusal by the tenant's plan is clear everywhere it can happen in the gateway: a file sent in a
Slack DM gets a notice naming the limit (and nothing is kept), a question past the day's limit gets
a polite reply without a lookup, the web API answers 413/429 with the limit and the use, and the
dashboard's "Plan & usage" page shows usage against limits."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp import FormData
from sqlalchemy import select

from knowledge.audit import Actor
from knowledge.models import Document
from knowledge.service import submit_upload
from parley.blobs import StoredBlob
from parley.db import unit_of_work
from parley.errors import NotFound
from tenants import quotas
from tests.bot.conftest import Stack, dm
from tests.bot.test_admin import Browser
from tests.bot.test_slack_files import file_share, serve

pytestmark = [pytest.mark.rabbitmq, pytest.mark.parametrize("db_backend", ["sqlite"])]


async def _plan(stack: Stack, **limits: int) -> None:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await quotas.set_plan(session, tenant_id=stack.tenant_id, limits=limits)


async def _store(stack: Stack, *names: str) -> None:
    """Documents already stored (counted as any upload is)."""
    for name in names:
        content = f"stored {name}".encode()
        sha = hashlib.sha256(content).hexdigest()
        async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
            await submit_upload(session, tenant_id=stack.tenant_id, source="cli", filename=name, declared_mime=None,
                                blob=StoredBlob(f"{stack.tenant_id}/{sha}", sha, len(content)),
                                actor=Actor("cli", "ops", may_replace=True))


async def _documents(stack: Stack) -> list[str]:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        return sorted((await session.execute(select(Document.filename))).scalars())


async def test_a_dm_upload_past_the_plan_gets_a_notice_naming_the_limit(stack: Stack) -> None:
    # Given a workspace whose plan allows 2 documents, with 2 stored
    await _plan(stack, max_documents=2)
    await _store(stack, "a.md", "b.md")
    payload = file_share(stack)
    serve(stack, payload, {"namenamename.txt": b"hug a kitten"})
    # When the installer sends a file in a DM
    assert (await stack.post_slack(payload)).status == 200
    await stack.settle()
    # Then the notice names the limit and the use, and nothing of the file is kept
    [posted] = stack.slack.posted
    assert posted["text"] == ("I haven't kept namenamename.txt: This workspace's plan allows 2 documents; 2 are stored. "
                              "Remove some or upgrade.")
    assert await _documents(stack) == ["a.md", "b.md"]
    assert stack.gw.metrics.registry.get_sample_value(
        "parley_gateway_quota_refusals_total", {"channel": "slack", "resource": "documents"}) == 1
    sha = hashlib.sha256(b"hug a kitten").hexdigest()
    with pytest.raises(NotFound):
        await stack.gw.blobs.read(stack.tenant_id, f"{stack.tenant_id}/{sha[:2]}/{sha}")


async def test_questions_past_the_day_get_a_polite_reply_without_a_lookup(stack: Stack) -> None:
    # Given a plan of one question a day
    await _plan(stack, max_questions_per_day=1)
    first = dm("What is your returns policy?")
    # When two questions come, and the first is delivered again
    await stack.post_slack(first)
    await stack.settle()
    await stack.post_slack(first, **{"X-Slack-Retry-Num": "1"})
    await stack.post_slack(dm("How long does shipping take?"))
    await stack.settle()
    # Then the first was looked up and answered, the second told why not, and only one was counted
    assert len(stack.retrieval.requests) == 1
    assert len(stack.slack.posted) == 2
    assert stack.slack.posted[1]["text"].startswith("This workspace's plan allows 1 questions a day")
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        report = await quotas.usage_report(session, tenant_id=stack.tenant_id, defaults=stack.gw.intake.plan)
    assert {r["resource"]: r["used"] for r in report["resources"]}["questions_per_day"] == 1


async def test_the_api_answers_413_and_429_with_the_limit_and_the_use(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    # Given one document of one allowed, and one question of one a day asked
    await _plan(stack, max_documents=1, max_questions_per_day=1)
    await _store(stack, "a.md")
    assert (await stack.client.post("/api/chat", json={"message": "What is your returns policy?"},
                                    headers=headers)).status == 200
    # When a document is uploaded and a question asked
    form = FormData()
    form.add_field("file", b"# FAQ\n\nWe answer within a day.\n", filename="faq.md", content_type="text/markdown")
    upload = await stack.client.post("/api/documents", data=form, headers=headers)
    chat = await stack.client.post("/api/chat", json={"message": "How long does shipping take?"}, headers=headers)
    # Then a size-like limit is a 413 and a rate a 429 with Retry-After, each naming the limit and the use
    body = await upload.json()
    assert upload.status == 413 and body["error"] == "quota_exceeded"
    assert (body["resource"], body["limit"], body["used"]) == ("documents", 1, 1)
    assert body["detail"].startswith("This workspace's plan allows 1 documents; 1 are stored")
    asked = await chat.json()
    assert chat.status == 429 and asked["error"] == "quota_exceeded" and int(chat.headers["Retry-After"]) >= 1
    assert (asked["resource"], asked["limit"], asked["used"]) == ("questions_per_day", 1, 1)
    assert await _documents(stack) == ["a.md"]


async def test_the_dashboard_shows_usage_against_limits(stack: Stack) -> None:
    await _plan(stack, max_documents=4)
    await _store(stack, "a.md")
    browser = await Browser(stack).signed_in(stack.api_key)
    try:
        page = await browser.request("GET", "/admin/usage")
        usage = await browser.json("GET", "/admin/api/usage")
    finally:
        await browser.close()
    assert page.status == 200 and "Plan &amp; usage" in await page.text()
    documents = next(r for r in usage["resources"] if r["resource"] == "documents")
    assert (documents["used"], documents["limit"], documents["share"], documents["default"]) == (1, 4, 0.25, False)
    assert "parley plans set" in usage["change"]
