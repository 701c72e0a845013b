"""Deleting a tenant (`parley tenants delete`, `tenants.deletion`): nothing of it is left anywhere.

Real SQLite and PostgreSQL with real commits, the real blob store and embedded vector index (its
snapshot files written by a reader), real RabbitMQ with a topology of the test's own: the tenant's
messages already published when it is deleted are dropped by the document worker's consumer (acked,
no dead letter). The deletion runs through the real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cli.migrations import load_models
from ingestion.documents.consumer import document_consumer
from ingestion.documents.service import IndexingDeps
from parley.blobs import BlobStore
from parley.bus import OutboxRelay, RabbitBroker, Topology, consuming
from parley.bus.models import DeadLetter
from parley.db import Base, create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from parley.vectors import EmbeddedVectorIndex
from tenants import service as tenants
from tenants.deletion import delete_tenant, tenant_tables
from tests.bot.privacy_seed import files_containing, rows_containing, seed_customer
from tests.support import services, waiting

GONE, KEPT = "gonegecko6613", "stayheron2270"


def _parley(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=settings.effective_database_url, PARLEY_DATA_DIR=str(settings.data_dir),
               PARLEY_ENV_FILE="none", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_every_table_that_points_at_tenant_rows_goes_with_them() -> None:
    # Given the whole schema: a table without a tenant_id column that references tenant-owned rows
    # must cascade, or deleting those rows would fail (or leave orphans)
    load_models()
    owned = {t.name for t in tenant_tables()} | {"tenant"}
    bad = [f"{t.name}.{fk.parent.name} -> {fk.column.table.name}" for t in Base.metadata.sorted_tables
           if "tenant_id" not in t.c for fk in t.foreign_keys
           if fk.column.table.name in owned and (fk.ondelete or "").upper() != "CASCADE"]
    assert bad == []


async def test_deleting_a_tenant_leaves_nothing_of_it(db_url: str, tmp_path: Path) -> None:
    if not services.reachable("127.0.0.1", 5672):
        pytest.fail("RabbitMQ is not reachable on 127.0.0.1:5672 (scripts/test.sh starts it)")
    settings = Settings(database_url=db_url, data_dir=tmp_path / "var", _env_file=None)
    engine = create_engine(settings, "tests")
    sessions = create_sessionmaker(engine)
    blobs = BlobStore(settings.effective_blob_dir)
    topology = Topology(prefix=f"td{uuid.uuid4().hex[:8]}.", delays=(0.05, 0.1))
    broker = RabbitBroker(services.AMQP_URL, topology=topology, connection_name=f"{topology.prefix}test")
    await broker.start()
    try:
        # Given two tenants with customers, documents, vectors, queued and dead-lettered messages
        ids = {}
        for name, marker in (("acme", GONE), ("other", KEPT)):
            async with unit_of_work(sessions, admin=True) as session:
                ids[name] = (await tenants.create_tenant(session, name=name)).id
            async with unit_of_work(sessions, tenant_id=ids[name]) as session:
                await seed_customer(session, blobs, tenant_id=ids[name], user=f"U{marker[:8].upper()}", marker=marker)
        # and the vector index's snapshot files of both, as the retrieval service writes them
        reader = EmbeddedVectorIndex(sessions, role="reader", data_dir=settings.data_dir / "vectors")
        await reader.warm(list(ids.values()))
        await reader.snapshot()
        await reader.aclose()
        assert files_containing(settings.data_dir / "vectors", GONE)
        # and acme's work already published to RabbitMQ
        assert await OutboxRelay(sessions, broker).flush() >= 2

        # When the operator looks first (what `parley tenants delete acme` without --yes shows), nothing goes
        async with unit_of_work(sessions, admin=True) as session:
            preview = await delete_tenant(session, tenant_id=ids["acme"], blobs=blobs, dry_run=True,
                                          vector_dir=settings.data_dir / "vectors")
        assert preview.rows["inbound_message"] == 1 and preview.vector_files >= 1
        assert files_containing(blobs.root, GONE)
        # When they delete it
        done = _parley(settings, "--json", "tenants", "delete", "acme", "--yes")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["rows"]["inbound_message"] == 1 and report["rows"]["document"] == 1 and report["files"] >= 1
        assert report["rows"]["vector_entry"] == 1 and report["rows"]["tenant"] == 1

        # Then no table holds a row of acme, nor its marker, nor its id anywhere
        async with unit_of_work(sessions, admin=True) as session:
            for table in tenant_tables():
                n = (await session.execute(select(func.count()).select_from(table)
                                           .where(table.c.tenant_id == ids["acme"]))).scalar_one()
                assert n == 0, table.name
            assert await rows_containing(session, GONE) == {}
            assert await rows_containing(session, ids["acme"]) == {}
            # And the other tenant is whole
            assert {"inbound_message", "document", "chunk", "vector_entry", "handoff_message"} <= set(
                await rows_containing(session, KEPT))
        # And no file of acme is left: uploads, vector snapshots
        assert not (blobs.root / ids["acme"]).exists() and files_containing(blobs.root, GONE) == []
        assert not (settings.data_dir / "vectors" / ids["acme"]).exists()
        assert files_containing(settings.data_dir / "vectors", GONE) == []
        assert files_containing(blobs.root, KEPT) and files_containing(settings.data_dir / "vectors", KEPT)

        # When the document worker's consumer meets acme's message already in the queue
        deps = IndexingDeps(sessions=sessions, blobs=blobs, embedder=None, index=None)  # type: ignore[arg-type]
        consumer = document_consumer(deps, broker, max_attempts=2)
        async with consuming(consumer):
            await waiting.eventually(lambda: consumer.outcomes["dropped"] >= 1, timeout=20.0, interval=0.05)
            await asyncio.sleep(0.2)  # anything else it would do with it, it would have done by now
        # Then it was acked and logged, not dead-lettered
        assert consumer.outcomes["dead"] == 0 and consumer.outcomes["retry"] == 0
        async with unit_of_work(sessions, admin=True) as session:
            assert (await session.execute(select(func.count()).select_from(DeadLetter)
                                          .where(DeadLetter.tenant_id == ids["acme"]))).scalar_one() == 0
        assert await broker.message_count(topology.queue("documents")) == 0
    finally:
        await broker.delete_topology()
        await broker.close()
        await engine.dispose()


def test_an_unknown_tenant_is_a_one_line_error(tmp_path: Path, sqlite_template: Path) -> None:
    import shutil

    shutil.copy(sqlite_template, tmp_path / "parley.db")
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}", data_dir=tmp_path / "var",
                        _env_file=None)
    # Given no tenant called nosuch, When it is to be deleted, Then one line says so (exit 1)
    result = _parley(settings, "tenants", "delete", "nosuch")
    assert result.returncode == 1 and "no such tenant" in result.stderr and len(result.stderr.strip().splitlines()) == 1
