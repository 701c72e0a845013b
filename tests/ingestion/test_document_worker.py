"""The document pipeline end to end: the real `parley worker documents` process, real RabbitMQ,
real SQLite and PostgreSQL, real files. Uploads go through the real CLI (`parley ingest`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from parley.bus import Envelope
from parley.db import bind_admin, create_engine, create_sessionmaker, unit_of_work
from knowledge.models import Chunk, Document, DocumentStatus
from parley.bus.models import OutboxMessage
from parley.settings import Settings
from tenants.models import Tenant
from tests.ingestion.samples import build_pdf, encrypt_pdf
from tests.support import services
from tests.support.processes import stop_process

pytestmark = pytest.mark.skipif(
    not services.reachable("127.0.0.1", 5672), reason="RabbitMQ is not reachable on 127.0.0.1:5672 (scripts/test.sh starts it)"
)

try:
    from parley.embeddings.local import model_installed

    HAVE_MODEL = model_installed("all-MiniLM-L6-v2")
except Exception:  # pragma: no cover - the embeddings package itself is broken
    HAVE_MODEL = False


def _env(db_url: str, data_dir: Path, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=db_url, PARLEY_DATA_DIR=str(data_dir), PARLEY_AMQP_PREFIX=prefix,
               PARLEY_LOG_JSON="true", PARLEY_MAX_ATTEMPTS="2", COLUMNS="200")
    return env


def _parley(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def worker_env() -> dict[str, str]:
    """PARLEY_* variables for the worker only, on top of the stack's (a test module overrides this)."""
    return {}


@pytest.fixture
def stack(db_url: str, tmp_path: Path, worker_env: dict[str, str]) -> Iterator[dict[str, str]]:
    if not HAVE_MODEL:
        pytest.skip("the local embedding model package is not installed (scripts/bootstrap.sh installs it)")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    env = _env(db_url, tmp_path / "var", prefix)
    assert _parley(env, "tenants", "create", "acme").returncode == 0
    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "documents"], env={**env, **worker_env},
                              stdout=log, stderr=log)
    try:
        yield env
    finally:
        stop_process(worker, timeout=60)
        log.close()
        _delete_topology(prefix)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


def _delete_topology(prefix: str) -> None:
    from parley.bus import RabbitBroker, Topology

    async def go() -> None:
        broker = RabbitBroker(services.AMQP_URL, topology=Topology(prefix=prefix))
        await broker.start()
        await broker.delete_topology()
        await broker.close()

    asyncio.run(go())


def _files(folder: Path) -> Path:
    folder.mkdir()
    (folder / "returns.md").write_text(
        "# Returns policy\n\nYou can return any item within 30 days of delivery for a full refund.\n\n"
        "## Exceptions\n\nGift cards and final-sale items cannot be returned.\n"
    )
    (folder / "shipping.html").write_text(
        "<html><head><title>Shipping</title><script>evil()</script></head><body><h1>Shipping</h1>"
        "<p>Orders ship within 2 business days from our Leipzig warehouse.</p>"
        "<table><tr><td>Standard</td><td>5 EUR</td></tr><tr><td>Express</td><td>15 EUR</td></tr></table></body></html>"
    )
    (folder / "notes.txt").write_text("Our support line is open Monday to Friday, 9:00 to 17:00 CET.\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "locked.pdf").write_bytes(encrypt_pdf(build_pdf([["Secret price list"]]), user_password="s3cret"))
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    return folder


async def _state(db_url: str, tmp: Path) -> dict[str, object]:
    engine = create_engine(Settings(database_url=db_url, data_dir=tmp), "test")
    sessions = create_sessionmaker(engine)
    try:
        async with unit_of_work(sessions, admin=True) as s:
            rows = list((await s.execute(select(Document))).scalars())
            docs = {d.filename: d for d in rows}
            chunks = (await s.execute(select(func.count()).select_from(Chunk))).scalar_one()
            version = (await s.execute(select(Tenant.index_version))).scalar_one()
            notices = [Envelope.from_bytes(r.body) for r in (await s.execute(
                select(OutboxMessage).where(OutboxMessage.message_type == "notice.requested"))).scalars()]
        return {"rows": rows, "docs": docs, "chunks": chunks, "version": version, "notices": notices}
    finally:
        await engine.dispose()


def test_bulk_upload_is_indexed_or_failed_with_reasons(stack: dict[str, str], db_url: str, tmp_path: Path) -> None:
    # Given a folder of good, empty, encrypted and unsupported files
    folder = _files(tmp_path / "kb")
    # When the admin ingests it and waits
    done = _parley(stack, "--json", "ingest", str(folder), "--tenant", "acme")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Then the job's counters are exact and its report groups the reasons
    assert (report["total"], report["done"], report["failed"]) == (6, 3, 3)
    assert "3 of 6 indexed; 3 failed:" in report["report"]
    assert "PDF is password-protected" in report["report"]
    state = asyncio.run(_state(db_url, tmp_path))
    docs = state["docs"]
    assert {n for n, d in docs.items() if d.status == DocumentStatus.indexed} == {"returns.md", "shipping.html", "notes.txt"}
    assert docs["empty.txt"].status == DocumentStatus.failed and docs["empty.txt"].error
    assert docs["image.png"].error and "Traceback" not in docs["image.png"].error
    # And chunk metadata matches what the documents say they hold; the index version moved
    assert state["chunks"] == sum(d.chunk_count for d in docs.values()) > 0
    assert state["version"] == 3

    # And failed work is in the dead-letter list with its reason
    dead = json.loads(_parley(stack, "--json", "dlq", "list", "--queue", "documents").stdout)
    assert len(dead) == 3 and any("password" in row["reason"] for row in dead)

    # When the same files are uploaded again, nothing is indexed twice
    again = json.loads(_parley(stack, "--json", "ingest", str(folder / "returns.md"), "--tenant", "acme").stdout)
    assert again["done"] == 1
    state2 = asyncio.run(_state(db_url, tmp_path))
    assert state2["chunks"] == state["chunks"] and len(state2["docs"]) == len(docs)
    assert state2["docs"]["returns.md"].id == docs["returns.md"].id

    # And each failed for good, so no replay is offered: the list says what to do instead
    assert all(row["replayable"] is False for row in dead), dead
    locked = next(row for row in dead if row["file"] == "locked.pdf")
    assert "give the password" in locked["replay_note"]
    # When one is replayed anyway, it is refused with that reason, and nothing is dead-lettered twice
    replayed = _parley(stack, "dlq", "replay", str(locked["id"]))
    assert replayed.returncode == 1 and "give the password" in replayed.stderr and "Traceback" not in replayed.stderr
    assert json.loads(_parley(stack, "--json", "dlq", "list").stdout) == dead
    # And a re-index re-runs the indexed documents only, not the ones that failed for good
    reindexed = json.loads(_parley(stack, "--json", "reindex", "--tenant", "acme").stdout)
    assert reindexed["documents"] == 3 and len(reindexed["skipped_for_good"]) == 3


def test_new_version_replaces_the_old_one(stack: dict[str, str], db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    doc = folder / "faq.md"
    doc.write_text("# FAQ\n\nShipping takes 3 days.\n")
    assert json.loads(_parley(stack, "--json", "ingest", str(doc), "--tenant", "acme").stdout)["done"] == 1
    doc.write_text("# FAQ\n\nShipping takes 5 days now.\n\n## Returns\n\nReturns are free.\n")
    assert json.loads(_parley(stack, "--json", "ingest", str(doc), "--tenant", "acme").stdout)["done"] == 1
    state = asyncio.run(_state(db_url, tmp_path))
    versions = state["rows"]
    assert sorted(d.status.value for d in versions) == ["deleted", "indexed"]
    live = next(d for d in versions if d.status == DocumentStatus.indexed)
    assert state["chunks"] == live.chunk_count

    # When the tenant is re-indexed (an embedding model change), the job covers the live document
    # and the index ends the same
    started = json.loads(_parley(stack, "--json", "reindex", "--tenant", "acme").stdout)
    assert started["documents"] == 1
    deadline = time.monotonic() + 120
    while json.loads(_parley(stack, "--json", "jobs", "show", started["job_id"], "--tenant", "acme").stdout)["status"] == "running":
        assert time.monotonic() < deadline, "reindex job did not finish"
        time.sleep(1)
    reindexed = asyncio.run(_state(db_url, tmp_path))
    assert reindexed["chunks"] == live.chunk_count
    assert next(d for d in reindexed["rows"] if d.id == live.id).status == DocumentStatus.indexed

    # When the admin deletes it, its chunks and vectors are gone and cached answers invalidated
    deleted = _parley(stack, "documents", "delete", live.id, "--tenant", "acme")
    assert deleted.returncode == 0, deleted.stderr
    after = asyncio.run(_state(db_url, tmp_path))
    assert after["chunks"] == 0 and after["version"] > state["version"]
    assert asyncio.run(_vector_count(db_url, tmp_path, live.tenant_id)) == 0

    # And the knowledge history tells it all, newest first, each step by the operator who ran it
    history = json.loads(_parley(stack, "--json", "documents", "history", "--tenant", "acme").stdout)
    old = next(d for d in versions if d.id != live.id)
    assert [(h["action"], h["document_id"], h["replaced_document_id"]) for h in history] == [
        ("deleted", live.id, None), ("replaced", live.id, old.id), ("uploaded", live.id, old.id), ("uploaded", old.id, None)]
    assert {h["actor"]["channel"] for h in history} == {"cli"}

    # When the operator restores the deleted version, it is indexed again and searchable
    restored = _parley(stack, "documents", "restore", live.id, "--tenant", "acme")
    assert restored.returncode == 0, restored.stderr
    deadline = time.monotonic() + 120
    while True:
        back = asyncio.run(_state(db_url, tmp_path))
        if next(d for d in back["rows"] if d.id == live.id).status == DocumentStatus.indexed:
            break
        assert time.monotonic() < deadline, "the restored document was not indexed again"
        time.sleep(0.5)
    assert back["chunks"] == live.chunk_count
    assert asyncio.run(_vector_count(db_url, tmp_path, live.tenant_id)) == live.chunk_count
    again = _parley(stack, "documents", "restore", live.id, "--tenant", "acme")
    assert again.returncode == 1 and "only a replaced or deleted document can be restored" in again.stderr


def test_a_zip_upload_becomes_one_job_of_its_documents(stack: dict[str, str], db_url: str, tmp_path: Path) -> None:
    import zipfile

    # Given a folder holding a note and a zip of two documents, an image and macOS junk
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "hours.txt").write_text("The shop opens at 9:00 on weekdays.\n")
    with zipfile.ZipFile(folder / "handbook.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("handbook/returns.md", "# Returns\n\nReturns are accepted within 30 days.\n")
        z.writestr("handbook/care.html", "<h1>Care</h1><p>Wash linen shirts cold and hang them to dry.</p>")
        z.writestr("handbook/logo.png", b"\x89PNG\r\n\x1a\n" + os.urandom(200))
        z.writestr("__MACOSX/handbook/._returns.md", b"\x00\x05\x16\x07")
    # When the admin ingests the folder and waits
    done = _parley(stack, "--json", "ingest", str(folder), "--tenant", "acme")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Then the archive's members took its place in the one job: 4 documents, the image failed
    assert (report["total"], report["done"], report["failed"]) == (4, 3, 1), report
    assert "3 of 4 indexed; 1 failed:" in report["report"]
    docs = asyncio.run(_state(db_url, tmp_path))["docs"]
    assert {n for n, d in docs.items() if d.status == DocumentStatus.indexed and d.chunk_count} == {
        "hours.txt", "handbook.zip/handbook/returns.md", "handbook.zip/handbook/care.html"}
    assert docs["handbook.zip"].status == DocumentStatus.indexed and docs["handbook.zip"].chunk_count == 0
    assert docs["handbook.zip/handbook/logo.png"].status == DocumentStatus.failed
    assert "only" in docs["handbook.zip/handbook/logo.png"].error


async def _vector_count(db_url: str, tmp: Path, tenant_id: str) -> int:
    from parley.vectors import create_vector_index

    settings = Settings(database_url=db_url, data_dir=tmp / "reader")
    engine = create_engine(settings, "test")
    index = create_vector_index(settings, role="reader", sessions=create_sessionmaker(engine))
    try:
        return await index.count(tenant_id)
    finally:
        await index.aclose()
        await engine.dispose()
