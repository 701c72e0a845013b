"""Failed documents are not retried blindly: `reindex` leaves alone the ones that failed for good
(they would fail the same way and double the dead letters) and the old versions of files uploaded
again; a replay of a failure for good is refused with what to do, and allowed once a newer version
of the file exists (then that version is what gets indexed)."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from ingestion.documents.service import mark_failed
from knowledge.models import Document, DocumentStatus
from knowledge.retry import REPLAY_RULES
from knowledge.service import requeue_all, submit_upload
from parley.blobs import StoredBlob
from parley.bus import Envelope, Failure, record_dead_letter, stage_replay
from parley.bus.dead_letters import NotReplayable, check_replays
from parley.bus.models import DeadLetter, OutboxMessage
from parley.db import unit_of_work
from tenants import service as tenants
from tests.conftest import Db

PASSWORD = Failure("pdf_encrypted", "pdf_encrypted: PDF is password-protected", False)
NO_TEXT = Failure("pdf_no_text", "pdf_no_text: PDF has no extractable text", False)
CRASHED = Failure("parser_crashed", "parser_crashed: the document parser crashed (SIGSEGV)", True).exhausted(3)


async def _tenant(db: Db) -> str:
    async with unit_of_work(db.sessions, admin=True) as session:
        return (await tenants.create_tenant(session, name="acme")).id


async def _upload(db: Db, tenant_id: str, filename: str, content: bytes) -> Document:
    sha = hashlib.sha256(content).hexdigest()
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        done = await submit_upload(session, tenant_id=tenant_id, source="cli", filename=filename, declared_mime=None,
                                   blob=StoredBlob(f"{tenant_id}/{sha}", sha, len(content)))
        return done.document


async def _indexed(db: Db, tenant_id: str, document: Document) -> None:
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        (await session.get(Document, document.id)).status = DocumentStatus.indexed


async def _fails(db: Db, tenant_id: str, document: Document, failure: Failure) -> DeadLetter:
    """The document worker's dead-letter step: its hook marks the document failed, the row records how."""
    envelope = Envelope.new("document.uploaded", tenant_id=tenant_id, payload={"document_id": document.id})
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        await mark_failed(session, envelope, failure)
        return await record_dead_letter(session, queue="documents", message_id=envelope.id, message_type=envelope.type,
                                        tenant_id=tenant_id, correlation_id=None, failure=failure,
                                        attempts=[{"attempt": 1, "error": failure.reason}], body=envelope.to_bytes())


async def _staged_documents(db: Db, after: int) -> list[str]:
    async with unit_of_work(db.sessions, admin=True) as session:
        rows = (await session.execute(select(OutboxMessage).where(OutboxMessage.id > after,
                                                                  OutboxMessage.message_type == "document.uploaded"))).scalars()
        return sorted(Envelope.from_bytes(r.body).payload["document_id"] for r in rows)


async def _last_outbox_id(db: Db) -> int:
    async with unit_of_work(db.sessions, admin=True) as session:
        return max((await session.execute(select(OutboxMessage.id))).scalars(), default=0)


@pytest.fixture
async def library(db: Db) -> dict[str, object]:
    """An indexed guide, a password-protected PDF, a file whose parser crashed every time, and a scan
    with no text that was uploaded again as a new version (indexed)."""
    tenant_id = await _tenant(db)
    guide = await _upload(db, tenant_id, "guide.md", b"# Guide\n")
    locked = await _upload(db, tenant_id, "locked.pdf", b"%PDF-1.7 locked")
    flaky = await _upload(db, tenant_id, "flaky.docx", b"PK flaky")
    scan = await _upload(db, tenant_id, "scan.pdf", b"%PDF-1.7 scan v1")
    await _indexed(db, tenant_id, guide)
    dead = {"locked": await _fails(db, tenant_id, locked, PASSWORD), "flaky": await _fails(db, tenant_id, flaky, CRASHED),
            "scan": await _fails(db, tenant_id, scan, NO_TEXT)}
    scan_v2 = await _upload(db, tenant_id, "scan.pdf", b"%PDF-1.7 scan v2 with text")
    await _indexed(db, tenant_id, scan_v2)
    return {"tenant_id": tenant_id, "guide": guide, "locked": locked, "flaky": flaky, "scan": scan, "scan_v2": scan_v2,
            "dead": dead}


async def test_reindex_skips_failures_for_good_and_replaced_versions(db: Db, library: dict) -> None:
    tenant_id = library["tenant_id"]
    before = await _last_outbox_id(db)
    # When the tenant is re-indexed
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        done = await requeue_all(session, tenant_id=tenant_id, reason="model change")
    # Then the indexed documents and the transient failure are queued again, as one job
    queued = sorted(d.id for d in (library["guide"], library["flaky"], library["scan_v2"]))
    assert done.job is not None and done.job.total == 3
    assert await _staged_documents(db, before) == queued
    # And the password-protected PDF is left as it was (its last failure was for good), and so is the
    # text-less scan's old version (a newer version of the file is indexed and re-indexed instead)
    assert done.for_good == {library["locked"].id: "PDF is password-protected"}
    assert [d.id for d in done.superseded] == [library["scan"].id]
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        locked = await session.get(Document, library["locked"].id)
        assert (locked.status, locked.error) == (DocumentStatus.failed, "PDF is password-protected")
    assert "1 that failed for good (PDF is password-protected (1)" in done.skipped_summary()
    assert "1 failed old version(s)" in done.skipped_summary()


async def test_replay_of_a_failure_for_good_says_what_to_do_until_a_new_version_exists(db: Db, library: dict) -> None:
    dead = library["dead"]
    # When the dashboard or the CLI asks which dead letters a replay can help
    async with unit_of_work(db.sessions, admin=True) as session:
        rows = [await session.get(DeadLetter, dead[k].id) for k in ("locked", "flaky", "scan")]
        verdicts = await check_replays(session, rows, rules=REPLAY_RULES)
    locked, flaky, scan = (verdicts[dead[k].id] for k in ("locked", "flaky", "scan"))
    # Then the crash may be retried; the password-protected PDF may not, and the reason says what to do
    assert flaky.allowed
    assert not locked.allowed and "locked.pdf: PDF is password-protected" in locked.why and "give the password" in locked.why
    # And the scan, uploaded again since, may: its replay indexes the newer version
    assert scan.allowed and scan.payload == {"document_id": library["scan_v2"].id}
    # When the PDF's dead letter is replayed anyway, it is refused and nothing is staged
    before = await _last_outbox_id(db)
    with pytest.raises(NotReplayable, match="give the password"):
        async with unit_of_work(db.sessions, admin=True) as session:
            await stage_replay(session, ids=[dead["locked"].id], rules=REPLAY_RULES)
    assert await _staged_documents(db, before) == []
    # When the scan's is replayed, the staged message is about the new version
    async with unit_of_work(db.sessions, admin=True) as session:
        await stage_replay(session, ids=[dead["scan"].id], rules=REPLAY_RULES)
    assert await _staged_documents(db, before) == [library["scan_v2"].id]


async def test_a_document_with_no_text_is_told_to_upload_a_new_version(db: Db) -> None:
    tenant_id = await _tenant(db)
    empty = await _upload(db, tenant_id, "empty.pdf", b"%PDF-1.7 empty")
    row = await _fails(db, tenant_id, empty, NO_TEXT)
    async with unit_of_work(db.sessions, admin=True) as session:
        verdict = (await check_replays(session, [await session.get(DeadLetter, row.id)], rules=REPLAY_RULES))[row.id]
    assert not verdict.allowed
    assert verdict.why == ("empty.pdf: PDF has no extractable text; trying the same file again would fail the same way: "
                           "upload a new version of empty.pdf")
