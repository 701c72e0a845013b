"""Database writes per second for what an indexing job and an answered question write, on SQLite and PostgreSQL.

    .venv/bin/python bench/db_writes.py --documents 200 --questions 1000
    PARLEY_TEST_PG_HOST=127.0.0.1 .venv/bin/python bench/db_writes.py --backends postgres --documents 50 --questions 200

Everything runs through the product's own code, in this process, on a fresh database built by
``alembic upgrade head`` (SQLite: a file in a temporary directory; PostgreSQL: a new database on the
server of ``--database-url``, dropped at the end):

* **indexing** - uploads: the blob stored and ``knowledge.service.submit_upload`` in its own unit of work
  (what the gateway writes for a file); then the real document consumer (``ingestion.documents.consumer``:
  consumer wrapper with idempotency + ``index_document``: sandboxed extraction, chunking, the embedded
  vector index's writer, chunk rows, status, job counters, notice) fed by the real outbox relay through
  the in-process broker (``parley.bus.memory``, as ``parley up --single-process``), ``--prefetch``
  documents at once. Embeddings come from the local OpenAI-compatible emulator of the test suite
  (``tests.parley.test_embeddings.FakeOpenAI``, 384 dimensions), so the embedding model's CPU does not
  hide the database: bench/ingest.py measures the real pipeline's chunks/s.
* **questions** - the web channel's path: ``InboundWriter.accept`` (the inbound row, group commit) then
  ``ConversationService.process`` (claim, history, the plan's question charge, the outcome and two
  conversation turns), ``--concurrency`` at once, the retrieval service replaced at its HTTP boundary by
  bench/gateway_ack.py's instant stub.

Counted on the engine (SQLAlchemy events): transactions committed, write statements (INSERT, UPDATE,
DELETE) and the rows they touched, and the time spent inside the database driver; rows inserted are also
counted from every table's row count before and after. Printed per phase: documents or questions per
second, transactions/s, rows/s, the driver's milliseconds per document or question (summed over the items
in flight, so it includes lock waits), and this process's CPU per item and share of a core (near 1.0: the
figure is bound by this one process's Python, not by the database). The machine's load average is printed
with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402
from sqlalchemy import event, func, inspect, select, text  # noqa: E402

from bench._common import cpu_seconds, load_average  # noqa: E402
from bench.gateway_ack import retrieval_stub, serve_app  # noqa: E402
from cli import migrations  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from tests.parley.test_embeddings import FakeOpenAI  # noqa: E402
from tests.support import services  # noqa: E402

WRITES = ("INSERT", "UPDATE", "DELETE")


@dataclass
class Counters:
    """What the engine did, from its events: commits, write statements, rows they touched, driver time."""

    transactions: int = 0
    statements: int = 0
    write_statements: int = 0
    rows_touched: int = 0
    db_seconds: float = 0.0
    _started: dict[int, float] = field(default_factory=dict)

    def attach(self, engine: Any) -> None:
        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
            self._started[id(cursor)] = time.perf_counter()

        @event.listens_for(sync, "after_cursor_execute")
        def after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
            started = self._started.pop(id(cursor), None)
            if started is not None:
                self.db_seconds += time.perf_counter() - started
            self.statements += 1
            if statement.lstrip().split(None, 1)[0].upper() in WRITES:
                self.write_statements += 1
                if cursor.rowcount and cursor.rowcount > 0:
                    self.rows_touched += cursor.rowcount

        @event.listens_for(sync, "commit")
        def commit(conn):  # noqa: ANN001, ANN202
            self.transactions += 1

    def snapshot(self) -> tuple[int, int, int, int, float]:
        return self.transactions, self.statements, self.write_statements, self.rows_touched, self.db_seconds


async def table_rows(engine: Any) -> int:
    """Rows in every table of the schema (the inserts' net effect, whatever the driver reports)."""
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        total = 0
        for name in names:
            if name == "alembic_version":
                continue
            total += (await conn.execute(text(f'SELECT count(*) FROM "{name}"'))).scalar_one()
        return total


def markdown(doc: int, sections: int) -> bytes:
    """A document of ``sections`` headed sections of ~120 words (one chunk each)."""
    words = ("order ship return refund warranty size colour cotton linen delivery store policy exchange item "
             "parcel courier tracking voucher invoice receipt").split()
    body = []
    for s in range(sections):
        prose = " ".join(words[(doc * 7 + s * 3 + i) % len(words)] for i in range(120))
        body.append(f"# Part {s} of guide {doc}\n\nGuide {doc} part {s}: {prose}.\n")
    return "\n".join(body).encode()


class Phase:
    """Counters and row counts around one phase; `result` turns them into per-second figures."""

    def __init__(self, counters: Counters, engine: Any) -> None:
        self.counters, self.engine = counters, engine

    async def __aenter__(self) -> Phase:
        self.rows0 = await table_rows(self.engine)
        self.c0 = self.counters.snapshot()
        self.t0, self.cpu0 = time.perf_counter(), cpu_seconds(os.getpid())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.seconds, self.cpu = time.perf_counter() - self.t0, cpu_seconds(os.getpid()) - self.cpu0
        self.c1 = self.counters.snapshot()
        self.rows1 = await table_rows(self.engine)

    def result(self, unit: str, n: int) -> dict[str, Any]:
        tx, stmts, writes, touched, db_s = (b - a for a, b in zip(self.c0, self.c1, strict=True))
        s, cpu = self.seconds, self.cpu
        return {
            unit: n, "seconds": round(s, 2), f"{unit}_per_s": round(n / s, 1),
            "transactions": tx, "transactions_per_s": round(tx / s, 1), "transactions_per_item": round(tx / n, 2),
            "write_statements_per_item": round(writes / n, 1), "statements_per_item": round(stmts / n, 1),
            "rows_inserted": self.rows1 - self.rows0, "rows_inserted_per_item": round((self.rows1 - self.rows0) / n, 1),
            "rows_touched_per_s": round(touched / s, 1), "rows_inserted_per_s": round((self.rows1 - self.rows0) / s, 1),
            # summed over the items in flight: it includes waiting for SQLite's write lock
            "driver_ms_per_item": round(db_s * 1000 / n, 2),
            "bench_cpu_ms_per_item": round(cpu * 1000 / n, 2), "bench_cpu_share": round(cpu / s, 2),
            "load": load_average(),
        }


async def index_phase(args: argparse.Namespace, settings: Settings, engine: Any, counters: Counters,
                      tenant_ids: list[str], embeddings_url: str) -> dict[str, Any]:
    from ingestion.documents import sandbox
    from ingestion.documents.consumer import document_consumer
    from ingestion.documents.service import IndexingDeps
    from knowledge.models import Document, DocumentStatus
    from knowledge.service import create_job, submit_upload
    from parley.blobs import BlobStore
    from parley.bus import OutboxRelay
    from parley.bus.memory import InMemoryBroker
    from parley.embeddings.openai_provider import OpenAIEmbedder
    from parley.vectors import create_vector_index

    sessions = create_sessionmaker(engine)
    blobs = BlobStore(settings.effective_blob_dir)
    broker = InMemoryBroker()
    await broker.start()
    relay = OutboxRelay(sessions, broker)
    await relay.start()
    embedder = OpenAIEmbedder(api_key="sk-bench", base_url=embeddings_url, model="text-embedding-3-small",
                              dimensions=384, max_retries=1, timeout=30)
    index = create_vector_index(settings, role="writer", sessions=sessions)
    deps = IndexingDeps(sessions=sessions, blobs=blobs, embedder=embedder, index=index)
    consumer = document_consumer(deps, broker, max_attempts=3, prefetch=args.prefetch)
    watcher = create_engine(settings, "bench-watch")  # polling outside the counted engine
    out: dict[str, Any] = {}
    try:
        async with Phase(counters, engine) as uploads:
            jobs = {}
            for tenant_id in tenant_ids:
                async with unit_of_work(sessions, tenant_id=tenant_id) as s:
                    jobs[tenant_id] = (await create_job(s, tenant_id=tenant_id, kind="documents", description="bench",
                                                        total=args.documents // len(tenant_ids) + 1)).id
            for i in range(args.documents):
                tenant_id = tenant_ids[i % len(tenant_ids)]
                blob = await blobs.put_bytes(tenant_id, markdown(i, args.sections), max_bytes=settings.max_upload_bytes)
                async with unit_of_work(sessions, tenant_id=tenant_id) as s:
                    await submit_upload(s, tenant_id=tenant_id, source="bench", filename=f"guide-{i}.md",
                                        declared_mime="text/markdown", blob=blob, job_id=jobs[tenant_id])
            await relay.flush()
        out["uploads"] = uploads.result("documents", args.documents)
        print(f"  uploads: {out['uploads']}", flush=True)

        async def settled() -> int:
            async with watcher.connect() as conn:
                return (await conn.execute(select(func.count()).select_from(Document).where(
                    Document.status.in_([DocumentStatus.indexed, DocumentStatus.failed])))).scalar_one()

        async with Phase(counters, engine) as indexing:
            await consumer.start()
            deadline = time.monotonic() + args.timeout
            while (done := await settled()) < args.documents:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {done} of {args.documents} documents settled within {args.timeout:.0f} s")
                await asyncio.sleep(0.1)
            await consumer.stop()
            await relay.flush()
        async with watcher.connect() as conn:
            failed = (await conn.execute(select(func.count()).select_from(Document).where(
                Document.status == DocumentStatus.failed))).scalar_one()
        out["indexing"] = indexing.result("documents", args.documents)
        out["indexing"].update(failed=failed, chunks_per_document=args.sections, prefetch=args.prefetch)
        print(f"  indexing: {out['indexing']}", flush=True)
    finally:
        await consumer.stop()
        await relay.stop()
        await broker.close()
        await sandbox.aclose()
        await embedder.aclose()
        await index.aclose()
        await watcher.dispose()
    return out


async def question_phase(args: argparse.Namespace, settings: Settings, engine: Any, counters: Counters,
                         tenant_ids: list[str], retrieval_url: str) -> dict[str, Any]:
    from bot.channels.web.routes import WebChannel
    from bot.conversation.repository import InboundWriter
    from bot.conversation.schemas import IncomingMessage
    from bot.conversation.service import ConversationService
    from bot.conversation.uploads import UploadIntake
    from parley.blobs import BlobStore
    from parley.crypto import load_service_token
    from parley.formats import FormatRegistry
    from retrieval.client import HttpRetrievalClient

    sessions = create_sessionmaker(engine)
    retrieval = HttpRetrievalClient(retrieval_url, timeout=30, token=load_service_token(settings))
    service = ConversationService(
        sessions=sessions, retrieval=retrieval, channels={"web": WebChannel()},
        intake=UploadIntake(sessions, BlobStore(settings.effective_blob_dir), default_max_bytes=settings.max_upload_bytes,
                            formats=FormatRegistry()),
    )
    writer = InboundWriter(sessions)
    queue = list(range(args.questions))
    outcomes: dict[str, int] = {}

    async def customer() -> None:
        while queue:
            i = queue.pop()
            tenant_id = tenant_ids[i % len(tenant_ids)]
            msg = IncomingMessage(channel="web", tenant_id=tenant_id, external_event_id=f"bench-{uuid.uuid4().hex}",
                                  conversation_id=f"web:visitor-{i % 50}", sender_id=f"visitor:{i % 50}",
                                  text=f"How long do returns take for order {i}?", route={"conversation": f"visitor-{i % 50}"})
            accepted = await writer.accept(msg)
            outcome = await service.process(tenant_id, accepted.message_id)
            outcomes[outcome.status] = outcomes.get(outcome.status, 0) + 1

    try:
        async with Phase(counters, engine) as questions:
            await asyncio.gather(*(customer() for _ in range(args.concurrency)))
        result = questions.result("questions", args.questions)
        result.update(outcomes=outcomes, concurrency=args.concurrency)
    finally:
        await retrieval.aclose()
    print(f"  questions: {result}", flush=True)
    return {"questions": result}


async def one_backend(args: argparse.Namespace, backend: str, work: Path, embeddings_url: str,
                      retrieval_url: str) -> dict[str, Any]:
    from tenants.service import create_tenant

    pg_name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{work / 'parley.db'}"
    else:
        if not services.reachable(services.PG_HOST, services.PG_PORT):
            raise SystemExit(f"PostgreSQL is not reachable on {services.PG_HOST}:{services.PG_PORT} "
                             "(PARLEY_TEST_PG_HOST / PARLEY_TEST_PG_PORT); run with --backends sqlite")
        pg_name = await services.create_pg_database("parley_bench")
        url = services.pg_url(pg_name)
    settings = Settings(data_dir=work, database_url=url, log_json=False, log_level="WARNING")
    engine = create_engine(settings, "bench")
    try:
        await migrations.upgrade(engine)
        sessions = create_sessionmaker(engine)
        tenant_ids = []
        async with unit_of_work(sessions, admin=True) as session:
            for i in range(args.tenants):
                tenant_ids.append((await create_tenant(session, name=f"dbw-{i:03d}", display_name=f"Shop {i}")).id)
        counters = Counters()
        counters.attach(engine)
        print(f"{backend}:", flush=True)
        out = {"backend": backend}
        if args.documents:
            out.update(await index_phase(args, settings, engine, counters, tenant_ids, embeddings_url))
        if args.questions:
            out.update(await question_phase(args, settings, engine, counters, tenant_ids, retrieval_url))
        return out
    finally:
        await engine.dispose()
        if pg_name is not None:
            await services.drop_pg_database(pg_name)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fake = FakeOpenAI()
    embeddings_app = web.Application()
    embeddings_app.router.add_post("/v1/embeddings", fake.handle)
    embeddings_runner, embeddings_url = await serve_app(embeddings_app)
    retrieval_runner, retrieval_url = await serve_app(retrieval_stub(0.0))
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "backends": [],
    }
    try:
        for backend in args.backends:
            work = Path(tempfile.mkdtemp(prefix=f"parley-bench-dbw-{backend}-", dir=args.tmp))
            try:
                results["backends"].append(await one_backend(args, backend, work, f"{embeddings_url}/v1", retrieval_url))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        await embeddings_runner.cleanup()
        await retrieval_runner.cleanup()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"],
                        help="databases measured, in this order (default: sqlite postgres)")
    parser.add_argument("--documents", type=int, default=200, help="documents uploaded and indexed (0: skip; default 200)")
    parser.add_argument("--sections", type=int, default=3, help="sections (= chunks) per document (default 3)")
    parser.add_argument("--prefetch", type=int, default=4,
                        help="documents the consumer indexes at once (default 4: two workers at prefetch 2)")
    parser.add_argument("--questions", type=int, default=1000, help="questions recorded and answered (0: skip; default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="questions in flight at once (default 16)")
    parser.add_argument("--tenants", type=int, default=4, help="tenants the documents and questions are spread over")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the indexing phase may take")
    parser.add_argument("--tmp", default=None, help="parent of the temporary directories (default: the system's)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON at the end")
    args = parser.parse_args(argv)
    if min(args.documents, args.questions) < 0 or min(args.sections, args.prefetch, args.concurrency, args.tenants) < 1:
        parser.error("--documents and --questions must be >= 0; --sections, --prefetch, --concurrency, --tenants >= 1")
    return args


def main() -> None:
    args = parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
