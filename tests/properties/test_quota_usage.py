"""Usage counters never drift, as a property.

Hypothesis runs random sequences of what happens to a tenant's knowledge: uploads (new files, new
versions of a file, the same content again), the real document worker indexing them
(`ingestion.documents.service.index_document`: real extraction, real embedding calls to a local
OpenAI-compatible server, the real embedded vector index), failures through the worker's real
dead-letter hook, deletions, restores, a re-index of everything, and redeliveries (the same
message indexed again, the same failure twice), under a plan small enough that some uploads and
some indexings are refused. After every step, the counters equal what is stored: documents not
deleted, their bytes, the chunk rows (and the blobs on disk hold every stored document's file).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from ingestion.documents.service import IndexingDeps, index_document, mark_failed, remove_vectors
from knowledge import usage
from knowledge.audit import Actor
from knowledge.models import Document, DocumentStatus
from knowledge.service import request_deletion, requeue_all, restore_document, submit_upload
from parley.blobs import BlobStore
from parley.bus import Envelope, Failure
from parley.db import unit_of_work
from parley.embeddings.openai_provider import OpenAIEmbedder
from parley.errors import AlreadyExists, ParleyError, QuotaExceeded
from parley.settings import Settings
from parley.vectors import create_vector_index
from tenants import service as tenants
from tenants.quota_models import TenantUsage
from tenants.quotas import PlanDefaults
from tests.conftest import Db
from tests.parley.test_embeddings import FakeOpenAI

pytestmark = [pytest.mark.postgres]

ADMIN = Actor("cli", "ops", may_replace=True)
#: Small enough that some steps are refused: the refusals must leave the counters exact too.
PLAN = PlanDefaults(max_documents=4, max_stored_bytes=2_000, max_chunks=7)
NAMES = ["faq.md", "returns.md", "shipping.md"]
_tenants = itertools.count()


@pytest.fixture
async def openai_server() -> AsyncIterator[str]:
    fake = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/v1/embeddings", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/v1"
    await runner.cleanup()


def markdown(name: str, version: int, sections: int) -> bytes:
    """A file of ``sections`` headed sections (one chunk each), different per version."""
    body = "".join(f"# Part {i} of {name}\n\nVersion {version} says item {i} ships within {i + version} days.\n\n"
                   for i in range(sections))
    return body.encode()


_upload = st.tuples(st.just("upload"), st.sampled_from(NAMES), st.integers(0, 2), st.integers(1, 3))
_index = st.tuples(st.just("index"), st.integers(0, 9))
step = st.one_of(  # uploads and indexing twice as likely: the other steps need documents to act on
    _upload, _upload, _index, _index,
    st.tuples(st.just("replace"), st.integers(0, 9), st.integers(1, 3)),
    st.tuples(st.just("redeliver"), st.integers(0, 9)),
    st.tuples(st.just("fail"), st.integers(0, 9)),
    st.tuples(st.just("delete"), st.integers(0, 9)),
    st.tuples(st.just("restore"), st.integers(0, 9)),
    st.tuples(st.just("reindex"),),
)


class World:
    def __init__(self, db: Db, deps: IndexingDeps, tenant_id: str) -> None:
        self.db, self.deps, self.tenant_id = db, deps, tenant_id

    async def documents(self, *statuses: DocumentStatus) -> list[Document]:
        async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
            stmt = select(Document).order_by(Document.created_at, Document.id)
            if statuses:
                stmt = stmt.where(Document.status.in_(statuses))
            return list((await session.execute(stmt)).scalars())

    async def pick(self, i: int, *statuses: DocumentStatus) -> Document | None:
        docs = await self.documents(*statuses)
        return docs[i % len(docs)] if docs else None

    async def run(self, op: tuple) -> None:  # type: ignore[type-arg]
        kind = op[0]
        if kind == "upload":
            _, name, version, sections = op
            data = markdown(name, version, sections)
            blob = await self.deps.blobs.put_bytes(self.tenant_id, data, max_bytes=10_000)
            try:
                async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
                    await submit_upload(session, tenant_id=self.tenant_id, source="cli", filename=name,
                                        declared_mime="text/markdown", blob=blob, actor=ADMIN, plan=PLAN)
            except QuotaExceeded:
                pass
        elif kind == "replace":  # a new version of an indexed file, indexed: it takes the old one's place
            doc = await self.pick(op[1], DocumentStatus.indexed)
            if doc is not None:
                await self.run(("upload", doc.filename, len(await self.documents()) + 3, op[2]))
                for new in await self.documents(DocumentStatus.queued):
                    if new.filename == doc.filename:
                        await self.index(new)
        elif kind in ("index", "redeliver"):
            doc = await self.pick(op[1], *((DocumentStatus.queued,) if kind == "index" else (DocumentStatus.indexed,)))
            if doc is not None:
                await self.index(doc)
        elif kind == "fail":
            doc = await self.pick(op[1], DocumentStatus.queued, DocumentStatus.failed)
            if doc is not None:
                failure = Failure("parser_crashed", "parser_crashed: the parser crashed", False)
                for _ in range(2):  # a failure delivered twice changes nothing twice
                    await self.dead_letter(doc, failure)
        elif kind == "delete":
            doc = await self.pick(op[1], DocumentStatus.queued, DocumentStatus.indexed, DocumentStatus.failed)
            if doc is not None:
                async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
                    await request_deletion(session, tenant_id=self.tenant_id, document_id=doc.id, actor=ADMIN)
                async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
                    await remove_vectors(self.deps, session, tenant_id=self.tenant_id, document_id=doc.id)
        elif kind == "restore":
            doc = await self.pick(op[1], DocumentStatus.deleted)
            if doc is not None:
                try:
                    async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
                        await restore_document(session, tenant_id=self.tenant_id, document_id=doc.id, actor=ADMIN,
                                               plan=PLAN)
                except (QuotaExceeded, AlreadyExists):
                    pass
        elif kind == "reindex":
            async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
                await requeue_all(session, tenant_id=self.tenant_id, reason="property test")

    async def index(self, doc: Document) -> None:
        """What the document consumer does with one `document.uploaded`: index, or dead-letter."""
        try:
            async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
                await index_document(self.deps, session, tenant_id=self.tenant_id, document_id=doc.id)
        except ParleyError as exc:
            await self.dead_letter(doc, Failure.of(exc))

    async def dead_letter(self, doc: Document, failure: Failure) -> None:
        envelope = Envelope.new("document.uploaded", tenant_id=self.tenant_id, payload={"document_id": doc.id})
        async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
            await mark_failed(session, envelope, failure)

    async def check(self) -> None:
        async with unit_of_work(self.db.sessions, tenant_id=self.tenant_id) as session:
            stored = await usage.stored(session, self.tenant_id)
            counted = (await session.execute(select(TenantUsage).where(
                TenantUsage.tenant_id == self.tenant_id))).scalar_one_or_none()
        got = (counted.documents, counted.blob_bytes, counted.chunks) if counted is not None else (0, 0, 0)
        assert got == (stored.documents, stored.stored_bytes, stored.chunks)
        live = await self.documents(DocumentStatus.queued, DocumentStatus.processing, DocumentStatus.indexed,
                                    DocumentStatus.failed)
        assert sum(d.chunk_count for d in live) == stored.chunks
        for d in live:  # the file of every stored document is on disk, with the size counted
            assert len(await self.deps.blobs.read(self.tenant_id, d.blob_key)) == d.size_bytes


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=4, max_size=10))
async def test_counters_equal_what_is_stored_after_any_sequence(db: Db, openai_server: str, tmp_path: Path,
                                                                steps: list[tuple]) -> None:  # type: ignore[type-arg]
    # Given a tenant with a small plan and the real worker's dependencies
    settings_ = Settings(data_dir=tmp_path / "var", log_json=False)
    index = create_vector_index(settings_, role="writer", sessions=db.sessions)
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=openai_server, max_retries=1, timeout=10)
    deps = IndexingDeps(sessions=db.sessions, blobs=BlobStore(tmp_path / "blobs"), embedder=embedder, index=index,
                        plan=PLAN)
    async with unit_of_work(db.sessions, admin=True) as session:
        tenant_id = (await tenants.create_tenant(session, name=f"prop-{next(_tenants)}")).id
    world = World(db, deps, tenant_id)
    try:
        # When each step happens, Then the counters equal what is stored after it
        for op in steps:
            await world.run(op)
            await world.check()
        # And indexing whatever is left queued keeps them equal too
        for doc in await world.documents(DocumentStatus.queued):
            await world.index(doc)
            await world.check()
    finally:
        await embedder.aclose()
        await index.aclose()


async def test_a_document_past_the_chunks_limit_fails_with_the_reason_and_nothing_indexed(
        db: Db, openai_server: str, tmp_path: Path) -> None:
    # Given a plan of 3 indexed sections, 2 of them used
    settings_ = Settings(data_dir=tmp_path / "var", log_json=False)
    index = create_vector_index(settings_, role="writer", sessions=db.sessions)
    embedder = OpenAIEmbedder(api_key="sk-test", base_url=openai_server, max_retries=1, timeout=10)
    plan = PlanDefaults(max_chunks=3)
    deps = IndexingDeps(sessions=db.sessions, blobs=BlobStore(tmp_path / "blobs"), embedder=embedder, index=index,
                        plan=plan)
    async with unit_of_work(db.sessions, admin=True) as session:
        tenant_id = (await tenants.create_tenant(session, name=f"chunks-{next(_tenants)}")).id
    world = World(db, deps, tenant_id)
    try:
        for name in ("faq.md", "returns.md"):
            await world.run(("upload", name, 0, 2))
        first, second = await world.documents(DocumentStatus.queued)
        # When both are indexed by the worker
        await world.index(first)
        await world.index(second)
        # Then the second fails for good naming the limit, with no section of it anywhere
        async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
            failed = await session.get(Document, second.id)
            assert failed is not None and failed.status == DocumentStatus.failed
            assert failed.error_code == "quota_exceeded" and failed.chunk_count == 0
            assert failed.error == ("This workspace's plan allows 3 indexed sections; 2 are indexed, and returns.md "
                                    "would add 2. Remove some documents or upgrade.")
        assert await index.count(tenant_id) == 2
        await world.check()
        # And the refusal was announced as a quota.exceeded event
        async with unit_of_work(db.sessions, admin=True) as session:
            from parley.bus.models import OutboxMessage

            bodies = list((await session.execute(select(OutboxMessage.body).where(
                OutboxMessage.tenant_id == tenant_id, OutboxMessage.message_type == "tenant.event"))).scalars())
        assert any('"quota.exceeded"' in b and '"chunks"' in b for b in bodies)
    finally:
        await embedder.aclose()
        await index.aclose()
