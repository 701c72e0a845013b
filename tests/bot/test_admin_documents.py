"""The dashboard's documents over HTTP: the list's search, status filter and pages; delete; a new
version; a document's page (versions, history, chunks, jobs, questions); the grouped job report.
(The worker's side of passwords and deletion: test_admin_documents_worker.py; the pages in a
browser: test_admin_documents_browser.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from bot.models import InboundMessage
from knowledge.models import Chunk, Document, DocumentStatus, Job, KnowledgeEvent
from knowledge.service import finish_job_item, job_breakdown, job_report
from parley.bus import Envelope
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from tests.bot.conftest import Stack
from tests.bot import test_admin
from tests.bot.test_admin import Browser
from tests.bot.test_web import bearer, files

browsers = test_admin.browsers  # the fixture: one cookie jar per signed-in person, closed at the end

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def _upload(stack: Stack, *items: tuple[str, bytes]) -> list[dict[str, Any]]:
    """Files uploaded through the web API (one request: a job when there are several)."""
    response = await stack.client.post("/api/documents", data=files(*((n, b, "text/markdown") for n, b in items)),
                                       headers=bearer(stack.api_key))
    assert response.status == 202, await response.text()
    return list((await response.json())["documents"])


async def _set(stack: Stack, document_id: str, **values: Any) -> None:
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await session.execute(update(Document).where(Document.id == document_id).values(**values))


async def _admin(stack: Stack, browsers: list[Browser], key: str | None = None) -> Browser:
    browser = await Browser(stack).signed_in(key or stack.api_key)
    browsers.append(browser)
    return browser


@pytest.mark.parametrize("db_backend", ["postgres", "sqlite"])
async def test_the_list_searches_filters_and_pages(stack: Stack, browsers: list[Browser]) -> None:
    # Given seven documents, one failed and one deleted, with names holding LIKE's wildcards
    names = ["returns-policy.md", "shipping_rates.md", "100%-cotton.md", "faq.md", "sizes.md", "care.md", "old.md"]
    docs = {d["filename"]: d for n in names for d in await _upload(stack, (n.replace("%", "pct"), f"# {n}\n\n{n}\n".encode()))}
    docs["100%-cotton.md"] = docs.pop("100pct-cotton.md")
    await _set(stack, docs["100%-cotton.md"]["id"], filename="100%-cotton.md")  # (a multipart name would quote the %)
    await _set(stack, docs["faq.md"]["id"], status=DocumentStatus.failed, error="document has no text", error_code="no_text")
    await _set(stack, docs["old.md"]["id"], status=DocumentStatus.deleted)
    admin = await _admin(stack, browsers)

    async def listed(query: str) -> tuple[list[str], int]:
        body = await admin.json("GET", "/admin/api/documents" + query)
        return [d["filename"] for d in body["documents"]], body["total"]

    # When they search by name (any case; % and _ are letters, not wildcards)
    assert await listed("?q=SHIP") == (["shipping_rates.md"], 1)
    assert await listed("?q=_") == (["shipping_rates.md"], 1)
    assert await listed("?q=%25") == (["100%-cotton.md"], 1)
    # And filter by status: deleted (and replaced) ones only when asked for
    assert await listed("?status=failed") == (["faq.md"], 1)
    assert await listed("?status=deleted") == (["old.md"], 1)
    assert (await listed(""))[1] == 6 and "old.md" not in (await listed(""))[0]
    assert (await listed("?status=all"))[1] == 7
    # Then pages of two, newest first, cover every live document once, each with the total
    pages = [await listed(f"?limit=2&offset={k}") for k in (0, 2, 4, 6)]
    assert [total for _, total in pages] == [6, 6, 6, 6] and [len(p) for p, _ in pages] == [2, 2, 2, 0]
    assert [n for p, _ in pages for n in p] == [n for n in reversed(names) if n != "old.md"]
    body = await admin.json("GET", "/admin/api/documents?limit=2")
    assert body["counts"] == {"queued": 5, "failed": 1, "deleted": 1} and (body["limit"], body["offset"]) == (2, 0)
    # And nonsense is a 400 that says what is wrong
    for query, detail in [("?status=lost", "unknown status 'lost'"), ("?limit=0", "'limit' must be between"),
                          ("?limit=x", "'limit' must be a whole number"), ("?offset=-1", "'offset' must be between")]:
        bad = await admin.request("GET", "/admin/api/documents" + query)
        assert bad.status == 400 and detail in (await bad.json())["detail"], query
    # And another tenant's dashboard lists none of them
    other = await _admin(stack, browsers, stack.other_api_key)
    assert (await other.json("GET", "/admin/api/documents?status=all"))["total"] == 0


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_delete_from_the_dashboard_is_recorded_and_sent_to_the_worker(stack: Stack, browsers: list[Browser]) -> None:
    # Given an indexed document with its chunks
    [doc] = await _upload(stack, ("hours.md", b"# Hours\n\nOpen 9 to 5.\n"))
    await _set(stack, doc["id"], status=DocumentStatus.indexed, chunk_count=1)
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        session.add(Chunk(id="c-hours-0", tenant_id=stack.tenant_id, document_id=doc["id"], ordinal=0, heading_path=["Hours"],
                          text="Open 9 to 5.", token_count=4, content_hash="h"))
    admin = await _admin(stack, browsers)
    other = await _admin(stack, browsers, stack.other_api_key)
    # When another tenant, or a request without the CSRF token, tries to delete it, nothing happens
    assert (await other.request("DELETE", f"/admin/api/documents/{doc['id']}")).status == 404
    assert (await admin.request("DELETE", f"/admin/api/documents/{doc['id']}", csrf=False)).status == 403
    # When the worker is indexing it, deleting it is refused (the worker would write it back)
    await _set(stack, doc["id"], status=DocumentStatus.processing)
    busy = await admin.request("DELETE", f"/admin/api/documents/{doc['id']}")
    assert busy.status == 409 and "being indexed right now" in (await busy.json())["detail"]
    await _set(stack, doc["id"], status=DocumentStatus.indexed)
    # When the admin deletes it
    deleted = await admin.json("DELETE", f"/admin/api/documents/{doc['id']}", status=202)
    # Then it is deleted at once, its chunks gone, the change recorded as theirs, and the worker told
    assert deleted["document"]["status"] == "deleted"
    key_id = (await admin.json("GET", "/admin/api/session"))["key"]["id"]
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        chunks = (await session.execute(select(Chunk).where(Chunk.document_id == doc["id"]))).scalars().all()
        events = [(e.action.value, e.actor_channel, e.actor_id) for e in (await session.execute(
            select(KnowledgeEvent).where(KnowledgeEvent.document_id == doc["id"]).order_by(KnowledgeEvent.id))).scalars()]
        outbox = [Envelope.from_bytes(o.body) for o in (await session.execute(select(OutboxMessage).where(
            OutboxMessage.tenant_id == stack.tenant_id, OutboxMessage.message_type == "document.deleted"))).scalars()]
    assert chunks == []
    assert events[-1] == ("deleted", "admin", f"api_key:{key_id}")
    assert [m.payload for m in outbox] == [{"document_id": doc["id"]}]
    # And it leaves the list, and deleting it again is a clear 409
    assert (await admin.json("GET", "/admin/api/documents"))["total"] == 0
    again = await admin.request("DELETE", f"/admin/api/documents/{doc['id']}")
    assert again.status == 409 and "already deleted" in (await again.json())["detail"]


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_a_new_version_keeps_the_name_and_replaces_even_a_failed_document(stack: Stack, browsers: list[Browser]) -> None:
    # Given a document that failed
    [doc] = await _upload(stack, ("price-list.md", b"# Prices\n\nOld prices.\n"))
    await _set(stack, doc["id"], status=DocumentStatus.failed, error="document has no text", error_code="no_text")
    admin = await _admin(stack, browsers)
    # When the admin uploads a new version from its page, whatever the file is called
    response = await admin.request("POST", f"/admin/api/documents/{doc['id']}/versions",
                                   data=files(("prices-2026.md", b"# Prices\n\nNew prices.\n", "text/markdown")))
    assert response.status == 202, await response.text()
    [new] = (await response.json())["documents"]
    # Then the new version is a new row under the same name and source that replaces the failed one
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        row = await session.get(Document, new["id"])
        assert row is not None
        assert (row.filename, row.source, row.replaces_id) == ("price-list.md", "web", doc["id"])
    # And its page lists both versions, newest first, and the old one's page says what replaced it
    page = await admin.json("GET", f"/admin/api/documents/{new['id']}/page")
    assert [(v["id"], v["this"]) for v in page["versions"]] == [(new["id"], True), (doc["id"], False)]
    old_page = await admin.json("GET", f"/admin/api/documents/{doc['id']}/page")
    assert old_page["replaced_by"]["id"] == new["id"]
    assert [e["action"] for e in page["events"]] == ["uploaded", "uploaded"]
    # And a new version is one file; another tenant's document is a 404
    two = await admin.request("POST", f"/admin/api/documents/{new['id']}/versions",
                              data=files(("a.md", b"# A\n\na\n", "text/markdown"), ("b.md", b"# B\n\nb\n", "text/markdown")))
    assert two.status == 413 and "at most 1 file per upload" in (await two.json())["detail"]
    other = await _admin(stack, browsers, stack.other_api_key)
    assert (await other.request("POST", f"/admin/api/documents/{doc['id']}/versions",
                                data=files(("x.md", b"# X\n\nx\n", "text/markdown")))).status == 404


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_a_document_page_shows_history_chunks_jobs_and_questions(stack: Stack, browsers: list[Browser]) -> None:
    # Given two files uploaded together (one job), one indexed with its chunks, the other failed
    guide, locked = await _upload(stack, ("guide.md", b"# Guide\n\nHow to wash.\n"), ("locked.md", b"# L\n\nl\n"))
    await _set(stack, guide["id"], status=DocumentStatus.indexed, chunk_count=2)
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        for n, text in enumerate(["How to wash.", "How to dry."]):
            session.add(Chunk(id=f"c-guide-{n}", tenant_id=stack.tenant_id, document_id=guide["id"], ordinal=n,
                              heading_path=["Guide"], text=text, token_count=3, content_hash=str(n)))
        await finish_job_item(session, tenant_id=stack.tenant_id, job_id=guide["job_id"], item_key=guide["id"], ok=True)
        await finish_job_item(session, tenant_id=stack.tenant_id, job_id=guide["job_id"], item_key=locked["id"], ok=False,
                              error_code="pdf_encrypted", error="PDF is password-protected")
        # And a question whose answer cited the guide (as the answer path records it), and one that did not
        session.add(InboundMessage(tenant_id=stack.tenant_id, channel="slack", external_event_id="Ev1", conversation_id="D1",
                                   sender_id="U1", text="How do I wash it?", status="answered", reply="Cold water [1].",
                                   citations=[{"n": 1, "kind": "document", "title": "guide.md", "document_id": guide["id"],
                                               "chunk_id": "c-guide-0"}]))
        session.add(InboundMessage(tenant_id=stack.tenant_id, channel="slack", external_event_id="Ev2", conversation_id="D1",
                                   sender_id="U1", text="Hours?", status="answered", reply="9 to 5 [1].",
                                   citations=[{"n": 1, "kind": "document", "title": "hours.md", "document_id": "f" * 32,
                                               "chunk_id": "x"}]))
    admin = await _admin(stack, browsers)
    # When the admin opens the guide's page
    page = await admin.json("GET", f"/admin/api/documents/{guide['id']}/page")
    # Then it shows the document, its history, its first chunks with their text, its job and the question
    assert page["document"]["filename"] == "guide.md" and page["document"]["status"] == "indexed"
    assert [(e["action"], e["actor"]["channel"]) for e in page["events"]] == [("uploaded", "web")]
    assert page["chunks"]["total"] == 2 and [c["text"] for c in page["chunks"]["shown"]] == ["How to wash.", "How to dry."]
    [job] = page["jobs"]
    assert job["id"] == guide["job_id"] and job["item"]["status"] == "done"
    assert job["breakdown"]["headline"] == "1 of 2 indexed"
    [question] = page["questions"]
    assert question["text"] == "How do I wash it?" and question["cited_as"] == [1]
    assert page["actions"] == {"delete": True, "restore": False, "new_version": True, "retry_with_password": False}
    # And the failed one's page offers the retry with a password
    failed = await admin.json("GET", f"/admin/api/documents/{locked['id']}/page")
    assert failed["actions"]["retry_with_password"] is False  # its row is still queued: not failed yet
    await _set(stack, locked["id"], status=DocumentStatus.failed, error_code="pdf_encrypted", error="PDF is password-protected")
    failed = await admin.json("GET", f"/admin/api/documents/{locked['id']}/page")
    assert failed["actions"]["retry_with_password"] is True and failed["questions"] == []
    # And another tenant's admin gets a 404
    other = await _admin(stack, browsers, stack.other_api_key)
    assert (await other.request("GET", f"/admin/api/documents/{guide['id']}/page")).status == 404


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_the_job_report_leads_with_success_and_groups_failures_with_their_files(stack: Stack, browsers: list[Browser]) -> None:
    # Given a job of six files: three indexed, two without text, one password-protected, in that order
    docs = await _upload(stack, *((f"doc-{n}.md", f"# {n}\n\ntext {n}\n".encode()) for n in range(6)))
    outcomes = [None, ("no_text", "document has no text"), None, ("pdf_encrypted", "PDF is password-protected"),
                ("no_text", "document has no text"), None]
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        for doc, outcome in zip(docs, outcomes, strict=True):
            code, error = outcome or (None, None)
            await finish_job_item(session, tenant_id=stack.tenant_id, job_id=doc["job_id"], item_key=doc["id"],
                                  ok=outcome is None, error_code=code, error=error)
    admin = await _admin(stack, browsers)
    # When the dashboard lists the jobs
    [job] = (await admin.json("GET", "/admin/api/jobs"))["jobs"]
    # Then the report leads with what worked, and the failures come grouped, most frequent first, with their files
    breakdown = job["breakdown"]
    assert (breakdown["headline"], breakdown["done"], breakdown["failed"], breakdown["pending"]) == ("3 of 6 indexed", 3, 3, 0)
    assert [(g["reason"], g["code"], g["count"]) for g in breakdown["groups"]] == [
        ("document has no text", "no_text", 2), ("PDF is password-protected", "pdf_encrypted", 1)]
    assert [(i["label"], i["document_id"]) for i in breakdown["groups"][0]["items"]] == [
        ("doc-1.md", docs[1]["id"]), ("doc-4.md", docs[4]["id"])]
    # And the one-line report (the CLI's and the notices') says the same, from the same breakdown
    assert job["report"] == "3 of 6 indexed; 3 failed: document has no text (2), PDF is password-protected (1)"
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        row = await session.get(Job, job["id"])
        assert row is not None
        assert await job_report(session, row) == job["report"]
        assert (await job_breakdown(session, row))["groups"] == breakdown["groups"]
