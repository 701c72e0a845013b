"""The retention settings at work (`tenants.retention`, `bot.privacy.retention`, the document worker).

Transcripts older than a tenant's days are gone and newer ones stay; dead letters older than their
days are gone (a tenant's days, else the default); a tenant that keeps only chunks loses the
uploaded file once it is indexed while its chunks still answer, and re-indexing says the original
was not kept instead of failing on a missing file. Each checked by searching for what was removed.
Real SQLite and PostgreSQL; the document worker's own handler with the local embedding model and
the parser sandbox; the real retrieval service in-process for the answer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select, update

from bot import models as M
from bot.channels.web.routes import document_json
from bot.privacy.retention import run_sweeps
from ingestion.documents import sandbox
from ingestion.documents.service import IndexingDeps, index_document
from knowledge.models import Chunk, Document, DocumentStatus
from knowledge.retry import REPLAY_RULES
from knowledge.service import requeue_all, submit_upload
from parley.blobs import BlobStore
from parley.bus import Envelope, Failure, Permanent, record_dead_letter
from parley.bus.models import DeadLetter
from parley.db import create_engine, create_sessionmaker, unit_of_work, utcnow
from parley.errors import InvalidInput
from parley.settings import Settings
from parley.vectors import EmbeddedVectorIndex
from retrieval.schemas import QueryRequest
from tenants import service as tenants
from tenants.retention import get_retention, set_retention
from tests.bot.privacy_seed import rows_containing, seed_customer
from tests.conftest import Db

TRANSCRIPT_TABLES = {"inbound_message", "conversation_turn", "handoff_message", "answer_feedback", "delivery_failure"}


async def _tenant(sessions: Any, name: str) -> str:
    async with unit_of_work(sessions, admin=True) as session:
        return (await tenants.create_tenant(session, name=name)).id


async def _age_dead_letters(db: Db, tenant_id: str | None, days: int) -> None:
    async with unit_of_work(db.sessions, admin=True) as session:
        await session.execute(update(DeadLetter).where(
            DeadLetter.tenant_id.is_(None) if tenant_id is None else DeadLetter.tenant_id == tenant_id)
            .values(dead_lettered_at=utcnow() - dt.timedelta(days=days)))


async def _transcripts(db: Db, marker: str) -> set[str]:
    async with unit_of_work(db.sessions, admin=True) as session:
        return set(await rows_containing(session, marker)) & TRANSCRIPT_TABLES


async def test_transcripts_and_dead_letters_older_than_their_days_are_swept(db: Db, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", _env_file=None)
    blobs = BlobStore(tmp_path / "blobs")
    now = utcnow()
    # Given a tenant that keeps transcripts 30 days and dead letters 14, with a customer from 40 days ago
    # and one from 5 days ago; and a tenant on the defaults (transcripts for ever, dead letters 30 days)
    acme, keeper = await _tenant(db.sessions, "acme"), await _tenant(db.sessions, "keeper")
    async with unit_of_work(db.sessions, tenant_id=acme) as session:
        await set_retention(session, tenant_id=acme, settings=settings, transcript_days=30, dead_letter_days=14)
        await seed_customer(session, blobs, tenant_id=acme, user="UOLD000001", marker="oldmoose3312",
                            at=now - dt.timedelta(days=40))
    await _age_dead_letters(db, acme, 20)
    async with unit_of_work(db.sessions, tenant_id=acme) as session:
        await seed_customer(session, blobs, tenant_id=acme, user="UNEW000002", marker="newlark5521",
                            at=now - dt.timedelta(days=5))
    async with unit_of_work(db.sessions, tenant_id=keeper) as session:
        await seed_customer(session, blobs, tenant_id=keeper, user="UKEEP00003", marker="keepvole7719",
                            at=now - dt.timedelta(days=400))
    await _age_dead_letters(db, keeper, 20)
    # and two dead letters of no tenant, 40 and 10 days old
    for days, message_id in ((40, "platform-old"), (10, "platform-new")):
        async with unit_of_work(db.sessions, admin=True) as session:
            await record_dead_letter(session, queue="documents", message_id=message_id, message_type="document.uploaded",
                                     tenant_id=None, correlation_id=None, failure=Failure("malformed_message", "bad", False),
                                     attempts=[], body=b"{}")
        if days == 40:
            await _age_dead_letters(db, None, days)
    assert await _transcripts(db, "oldmoose3312") == TRANSCRIPT_TABLES

    # When the retention sweep runs
    report = await run_sweeps(db.sessions, settings=settings, blobs=blobs)

    # Then the old customer's transcript is gone from every table, the newer one's and the keeper's stay
    assert await _transcripts(db, "oldmoose3312") == set()
    assert await _transcripts(db, "newlark5521") == TRANSCRIPT_TABLES
    assert await _transcripts(db, "keepvole7719") == TRANSCRIPT_TABLES
    async with unit_of_work(db.sessions, admin=True) as session:
        conversations = set((await session.execute(select(M.Conversation.customer_id))).scalars())
        assert conversations == {"UNEW000002", "UKEEP00003"}
        # And the old customer's document is not a transcript: it still answers
        assert (await session.execute(select(func.count()).select_from(Chunk).where(
            Chunk.text.contains("oldmoose3312")))).scalar_one() == 1
        # And dead letters: acme's 20-day one (> 14) and the platform's 40-day one went; acme's new one,
        # the keeper's (20 < its default 30) and the platform's 10-day one stayed
        left = sorted((d.tenant_id or "", d.message_id if d.tenant_id is None else "UNEW" in d.body)
                      for d in (await session.execute(select(DeadLetter))).scalars())
    assert left == sorted([("", "platform-new"), (acme, True), (keeper, False)])
    totals = report.totals()
    assert totals["messages"] == 1 and totals["turns"] == 2 and totals["conversations"] == 1
    assert totals["staff_messages"] == 1 and totals["feedback"] == 1 and totals["delivery_failures"] == 1
    assert totals["dead_letters"] == 2 and report.platform_dead_letters == 1
    # And sweeping again removes nothing: two sweepers at once are harmless
    assert not any((await run_sweeps(db.sessions, settings=settings, blobs=blobs)).totals().values())


async def test_retention_settings_refuse_bad_values_and_fall_back_to_the_defaults(db: Db, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", retention_dead_letter_days=45, _env_file=None)
    acme = await _tenant(db.sessions, "acme")
    async with unit_of_work(db.sessions, tenant_id=acme) as session:
        value = await get_retention(session, tenant_id=acme, settings=settings)
        assert (value.raw_files, value.transcript_days, value.dead_letter_days) == ("keep", 0, 45)
        assert set(value.source.values()) == {"default"} and value.describe()["transcripts"] == "kept for ever"
        for bad in ({"raw_files": "shred"}, {"transcript_days": -1}, {"dead_letter_days": 0},
                    {"transcript_days": "ninety"}, {"dead_letter_days": 10**6}):
            with pytest.raises(InvalidInput):
                await set_retention(session, tenant_id=acme, settings=settings, **bad)
        value = await set_retention(session, tenant_id=acme, settings=settings, transcript_days="90", raw_files="delete")
        assert (value.raw_files, value.transcript_days, value.source["transcript_days"]) == ("delete", 90, "tenant")
        value = await set_retention(session, tenant_id=acme, settings=settings, transcript_days=None)
        assert (value.transcript_days, value.source["transcript_days"], value.raw_files) == (0, "default", "delete")


# --- uploaded files after indexing ------------------------------------------------------------

WARRANTY = b"# Warranty\n\nEvery kettle carries a warranty of seven years from the day of delivery.\n"


async def _upload(sessions: Any, blobs: BlobStore, tenant_id: str, name: str, content: bytes) -> Document:
    blob = await blobs.put_bytes(tenant_id, content, max_bytes=1 << 20)
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        return (await submit_upload(session, tenant_id=tenant_id, source="cli", filename=name,
                                    declared_mime="text/markdown", blob=blob)).document


async def _index(deps: IndexingDeps, tenant_id: str, document_id: str) -> None:
    async with unit_of_work(deps.sessions, tenant_id=tenant_id) as session:
        await index_document(deps, session, tenant_id=tenant_id, document_id=document_id)


async def _ask(settings: Settings, sessions: Any, embedder: Any, tenant_id: str, question: str) -> Any:
    from retrieval.app import RetrievalDeps, create_app
    from retrieval.client import InProcessRetrievalClient
    from retrieval.config import RetrievalConfig
    from retrieval.routes import SERVICE

    app = create_app(settings, deps=RetrievalDeps(sessions=sessions, embedder=embedder,
                                                  config=RetrievalConfig(warm_tenants=False)))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        return await InProcessRetrievalClient(app[SERVICE]).query(QueryRequest(tenant_id=tenant_id, message=question))
    finally:
        await runner.cleanup()


async def test_a_tenant_that_keeps_only_chunks_loses_the_file_once_indexed(db_url: str, tmp_path: Path,
                                                                          embedder: Any) -> None:
    settings = Settings(database_url=db_url, data_dir=tmp_path / "var", _env_file=None)
    engine = create_engine(settings, "tests")
    sessions = create_sessionmaker(engine)
    blobs = BlobStore(settings.effective_blob_dir)
    index = EmbeddedVectorIndex(sessions, role="writer")
    deps = IndexingDeps(sessions=sessions, blobs=blobs, embedder=embedder, index=index)
    try:
        # Given a tenant whose retention deletes files once indexed, and one that keeps them
        lean, keeper = await _tenant(sessions, "lean"), await _tenant(sessions, "keeper")
        async with unit_of_work(sessions, tenant_id=lean) as session:
            await set_retention(session, tenant_id=lean, settings=settings, raw_files="delete")
        lean_doc = await _upload(sessions, blobs, lean, "warranty.md", WARRANTY)
        kept_doc = await _upload(sessions, blobs, keeper, "warranty.md", WARRANTY)
        lean_file = blobs.root / lean_doc.blob_key
        assert lean_file.exists()
        # When the document worker indexes both
        await _index(deps, lean, lean_doc.id)
        await _index(deps, keeper, kept_doc.id)
        # Then the lean tenant's file is gone, its document says so, its chunks stay; the keeper's file stays
        assert not lean_file.exists() and (blobs.root / kept_doc.blob_key).exists()
        async with unit_of_work(sessions, admin=True) as session:
            row = await session.get(Document, lean_doc.id)
            assert row.status == DocumentStatus.indexed and row.original_deleted_at is not None
            assert document_json(row)["original_kept"] is False  # what the dashboard shows
            assert (await session.get(Document, kept_doc.id)).original_deleted_at is None
        # And its chunks still answer the question
        answer = await _ask(settings, sessions, embedder, lean, "How long is the kettle warranty?")
        assert "seven years" in answer.answer and answer.citations[0].title.startswith("warranty")

        # When everything is re-indexed: the document is left alone, with the reason
        async with unit_of_work(sessions, tenant_id=lean) as session:
            requeued = await requeue_all(session, tenant_id=lean, reason="model changed")
        assert requeued.job is None and [d.id for d in requeued.not_kept] == [lean_doc.id]
        assert "original file was not kept" in requeued.skipped_summary()
        # And a redelivered indexing of it fails for good saying why, not "file missing"
        async with unit_of_work(sessions, admin=True) as session:
            await session.execute(update(Document).where(Document.id == lean_doc.id).values(status=DocumentStatus.queued))
        with pytest.raises(Permanent) as caught:
            await _index(deps, lean, lean_doc.id)
        assert caught.value.code == "original_not_kept" and "upload the file again" in str(caught.value)
        # And a replay of that dead letter is refused with what to do
        envelope = Envelope.new("document.uploaded", tenant_id=lean, payload={"document_id": lean_doc.id})
        async with unit_of_work(sessions, admin=True) as session:
            dead = await record_dead_letter(session, queue="documents", message_id=envelope.id, message_type=envelope.type,
                                            tenant_id=lean, correlation_id=None, attempts=[], body=envelope.to_bytes(),
                                            failure=Failure("original_not_kept", str(caught.value), False))
            await session.execute(update(Document).where(Document.id == lean_doc.id).values(status=DocumentStatus.failed))
            verdict = (await REPLAY_RULES["document.uploaded"](session, [dead]))[dead.id]
        assert not verdict.allowed and "was not kept" in verdict.why

        # When the keeper switches to keeping only chunks, the next sweep deletes the file it still has
        async with unit_of_work(sessions, tenant_id=keeper) as session:
            await set_retention(session, tenant_id=keeper, settings=settings, raw_files="delete")
        report = await run_sweeps(sessions, settings=settings, blobs=blobs, tenant_id=keeper)
        assert report.totals()["files"] == 1 and not (blobs.root / kept_doc.blob_key).exists()
    finally:
        await sandbox.aclose()
        await index.aclose()
        await engine.dispose()
