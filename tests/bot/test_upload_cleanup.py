"""Uploads through the web chat and the dashboard: who may upload (the tenant's policy for the web
channel), and no stored file is ever left without a document (an upload cut short keeps nothing,
and a file that is the same bytes as a document is never deleted with it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from knowledge.models import Document, KnowledgeEvent
from parley.db import unit_of_work
from tenants import uploaders
from tenants.models import ApiKey
from tests.bot.conftest import Stack
from tests.bot.test_web import bearer, files

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def stored_blobs(stack: Stack) -> list[Path]:
    """Every file in the tenant's blob folder (not its temporary files)."""
    root = stack.settings.effective_blob_dir / stack.tenant_id
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp") if root.exists() else []


async def documents(stack: Stack) -> list[Document]:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        return list((await session.execute(select(Document))).scalars())


async def test_an_upload_of_too_many_files_keeps_none_of_them(stack: Stack) -> None:
    # Given 21 files in one request, one more than an upload may carry
    many = [(f"note-{i:02}.txt", f"note number {i}\n".encode(), "text/plain") for i in range(21)]
    # When they are uploaded in the web chat
    response = await stack.client.post("/api/documents", data=files(*many), headers=bearer(stack.api_key))
    # Then the request is refused as too large, and the 20 files read before the 21st left nothing behind
    assert response.status == 413 and "at most 20 files" in (await response.json())["detail"]
    assert stored_blobs(stack) == [] and await documents(stack) == []


async def test_cutting_an_upload_short_never_deletes_a_file_a_document_needs(stack: Stack) -> None:
    # Given faq.md already uploaded (its bytes are stored once, content-addressed)
    faq = ("faq.md", b"# FAQ\n\nWe answer within a day.\n", "text/markdown")
    assert (await stack.client.post("/api/documents", data=files(faq), headers=bearer(stack.api_key))).status == 202
    [kept] = stored_blobs(stack)
    # When a later upload of 21 files carries the same faq.md among them
    many = [faq] + [(f"n{i}.txt", f"n {i}\n".encode(), "text/plain") for i in range(20)]
    response = await stack.client.post("/api/documents", data=files(*many), headers=bearer(stack.api_key))
    # Then that upload keeps nothing of its own, and the first faq.md keeps its file
    assert response.status == 413
    assert stored_blobs(stack) == [kept] and [d.filename for d in await documents(stack)] == ["faq.md"]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_web_channels_policy_decides_who_may_upload(stack: Stack) -> None:
    # Given the tenant closes web uploads
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await uploaders.set_mode(session, tenant_id=stack.tenant_id, channel="web", mode="nobody")
    # When an admin key uploads a document
    closed = await stack.client.post("/api/documents", data=files(("faq.md", b"# FAQ\n", "text/markdown")),
                                     headers=bearer(stack.api_key))
    # Then it is refused with the reason, nothing is stored, and the refusal is recorded
    assert closed.status == 403 and "closed" in (await closed.json())["detail"]
    assert stored_blobs(stack) == [] and await documents(stack) == []
    # When only listed keys may upload, and this key is listed without the right to replace
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        key_id = (await session.execute(select(ApiKey.id).where(ApiKey.tenant_id == stack.tenant_id))).scalar_one()
        await uploaders.set_mode(session, tenant_id=stack.tenant_id, channel="web", mode="listed")
        await uploaders.allow(session, tenant_id=stack.tenant_id, channel="web", user_id=f"api_key:{key_id}")
    first = await stack.client.post("/api/documents", data=files(("faq.md", b"# FAQ\n\nv1\n", "text/markdown")),
                                    headers=bearer(stack.api_key))
    # Then it may add a document, and replace its own
    assert first.status == 202
    again = await stack.client.post("/api/documents", data=files(("faq.md", b"# FAQ\n\nv2\n", "text/markdown")),
                                    headers=bearer(stack.api_key))
    assert again.status == 202 and (await again.json())["documents"][0]["filename"] == "faq.md"
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        actions = [(e.action.value, e.actor_id) for e in (await session.execute(
            select(KnowledgeEvent).order_by(KnowledgeEvent.id))).scalars()]
    assert actions == [("refused", f"api_key:{key_id}"), ("uploaded", f"api_key:{key_id}"), ("uploaded", f"api_key:{key_id}")]
