"""Erasing one end customer (`bot.privacy.erasure`): afterwards nothing of them is anywhere.

Real SQLite and PostgreSQL (one rolled-back transaction per test), the real blob store, the real
embedded vector index (its writer in the erasure's transaction, a reader to search it afterwards).
Each test seeds two customers of one tenant with unique markers (`tests.bot.privacy_seed`), erases
the first, then searches every table, the blob directory and the vector index for both."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bot.privacy.erasure import Customer, erase_customer
from knowledge.models import KnowledgeEvent
from parley.blobs import BlobStore
from parley.bus import Envelope
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work
from parley.errors import InvalidInput
from parley.vectors import EmbeddedVectorIndex
from tenants import service as tenants
from tenants.models import Tenant
from tests.bot.privacy_seed import files_containing, rows_containing, seed_customer
from tests.conftest import Db

GONE, KEPT = "UERASEME01", "UKEEPME002"
GONE_MARK, KEPT_MARK = "zebracrane4417", "otterfinch9081"


@pytest.fixture
async def seeded(db: Db, tmp_path: Path) -> dict[str, object]:
    blobs = BlobStore(tmp_path / "blobs")
    async with unit_of_work(db.sessions, admin=True) as session:
        tenant = await tenants.create_tenant(session, name="acme")
    async with unit_of_work(db.sessions, tenant_id=tenant.id) as session:
        gone = await seed_customer(session, blobs, tenant_id=tenant.id, user=GONE, marker=GONE_MARK)
        kept = await seed_customer(session, blobs, tenant_id=tenant.id, user=KEPT, marker=KEPT_MARK)
    return {"tenant_id": tenant.id, "blobs": blobs, "gone": gone, "kept": kept}


async def _search(db: Db, needle: str) -> dict[str, int]:
    async with unit_of_work(db.sessions, admin=True) as session:
        return await rows_containing(session, needle)


async def _keyword_hits(db: Db, tenant_id: str, needle: str) -> list[str]:
    reader = EmbeddedVectorIndex(db.sessions, role="reader", refresh_interval=3600)
    try:
        return [hit.text for hit in await reader.keyword_search(tenant_id, needle, 10)]
    finally:
        await reader.aclose()


async def test_erasing_a_customer_leaves_nothing_of_them_anywhere(db: Db, seeded: dict[str, object]) -> None:
    tenant_id, blobs = str(seeded["tenant_id"]), seeded["blobs"]
    assert isinstance(blobs, BlobStore)
    # Given both customers are everywhere: tables, files, the vector index
    before = await _search(db, GONE_MARK)
    assert {"inbound_message", "conversation_turn", "chunk", "vector_entry", "document", "handoff_message",
            "answer_feedback", "delivery_failure", "outbox_message", "dead_letter", "webhook_delivery"} <= set(before)
    assert files_containing(blobs.root, GONE_MARK) and await _keyword_hits(db, tenant_id, GONE_MARK)
    async with unit_of_work(db.sessions, admin=True) as session:
        version = (await session.get(Tenant, tenant_id)).index_version

    # When the first customer is erased (the vectors through the index's writer, in the same transaction)
    writer = EmbeddedVectorIndex(db.sessions, role="writer")
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        report = await erase_customer(session, tenant_id=tenant_id, customer="slack:" + GONE, index=writer, blobs=blobs)
    await writer.aclose()

    # Then the report says what went, by kind
    counts = report.counts
    assert counts["messages"] == 1 and counts["turns"] == 2 and counts["conversations"] == 1
    assert counts["handoff_events"] == 1 and counts["staff_messages"] == 1 and counts["feedback"] == 1
    assert counts["delivery_failures"] == 1 and counts["documents"] == 1 and counts["chunks"] == 1
    assert counts["vectors"] == 1 and counts["files"] == 1 and counts["uploader_listings"] == 1
    assert counts["queued_messages"] >= 1 and counts["dead_letters"] == 1 and counts["webhook_deliveries"] == 1
    assert counts["job_notices"] == 1
    # And neither their marker nor their id is in any table, any file, or the index
    assert await _search(db, GONE_MARK) == {}
    assert await _search(db, GONE) == {}
    assert files_containing(blobs.root, GONE_MARK) == []
    assert await _keyword_hits(db, tenant_id, GONE_MARK) == []
    # And the other customer's data is all still there
    assert set(await _search(db, KEPT_MARK)) >= set(before) - {"knowledge_event"}
    assert files_containing(blobs.root, KEPT_MARK) and await _keyword_hits(db, tenant_id, KEPT_MARK)
    # And the knowledge history still says a document was added and deleted, by nobody it can name
    async with unit_of_work(db.sessions, admin=True) as session:
        events = list((await session.execute(select(KnowledgeEvent).where(
            KnowledgeEvent.document_id == seeded["gone"]["document_id"]))).scalars())  # type: ignore[index]
        assert sorted(e.action.value for e in events) == ["deleted", "uploaded"]
        assert {(e.filename, e.actor_id) for e in events} == {("[erased]", "[erased]"), ("[erased]", "erasure")}
        # And no cached answer survives: the tenant's index version moved
        assert (await session.get(Tenant, tenant_id)).index_version > version


async def test_a_dry_run_counts_the_same_and_changes_nothing(db: Db, seeded: dict[str, object]) -> None:
    tenant_id, blobs = str(seeded["tenant_id"]), seeded["blobs"]
    assert isinstance(blobs, BlobStore)
    # When the erasure runs as a dry run
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        preview = await erase_customer(session, tenant_id=tenant_id, customer=f"slack:{GONE}", index=None, blobs=blobs,
                                       dry_run=True)
    # Then everything is still there
    assert preview.dry_run and preview.total > 0
    assert "inbound_message" in await _search(db, GONE_MARK) and files_containing(blobs.root, GONE_MARK)
    # And the real run (without an index: the worker removes the vectors) removes what the preview counted
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        done = await erase_customer(session, tenant_id=tenant_id, customer=f"slack:{GONE}", index=None, blobs=blobs)
    assert {k: v for k, v in done.counts.items() if k not in ("vectors", "vectors_queued")} == \
        {k: v for k, v in preview.counts.items() if k not in ("vectors", "vectors_queued")}
    assert done.counts["vectors_queued"] == 1 and any("document worker" in n for n in done.notes)
    async with unit_of_work(db.sessions, admin=True) as session:
        staged = [Envelope.from_bytes(r.body).payload for r in (await session.execute(
            select(OutboxMessage).where(OutboxMessage.message_type == "document.deleted"))).scalars()]
    assert staged == [{"document_id": seeded["gone"]["document_id"]}]  # type: ignore[index]
    # And erasing them again finds nothing
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        again = await erase_customer(session, tenant_id=tenant_id, customer=f"slack:{GONE}", index=None, blobs=blobs)
    assert again.total == 0 and again.summary() == f"removed nothing of slack:{GONE}"


@pytest.mark.parametrize("text, why", [
    ("U123", "<channel>:<id>"), ("slack:", "<channel>:<id>"), ("telegram:42", "unknown channel"),
    ("slack:U 1", "not a slack id"), ("web:" + "x" * 300, "not a web id"),
])
def test_a_malformed_customer_is_refused_with_the_form_to_use(text: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Customer.parse(text)
    assert why in caught.value.message and caught.value.code == "invalid_customer"


def test_the_three_channels_parse() -> None:
    assert Customer.parse(" Slack:U0123ABCD ") == Customer("slack", "U0123ABCD")
    assert Customer.parse("instagram:1784140000000") == Customer("instagram", "1784140000000")
    assert str(Customer.parse("web:visitor:abc-123")) == "web:visitor:abc-123"
