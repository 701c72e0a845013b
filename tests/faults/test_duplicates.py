"""Duplicate deliveries of `document.uploaded` through the real worker: the same envelope published
again after it was handled, and twice at once (both copies in flight together). Nothing happens
twice: no second set of chunks or vectors, no second notice, no counter or index version moved twice.

Duplicates of `notice.requested` are in tests/faults/test_notice_duplicates.py (and tests/bot/
test_notices.py), those of the catalog messages in tests/faults/test_catalog_duplicates.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from parley.bus import Envelope, Outgoing
from parley.db import unit_of_work
from knowledge.models import Job
from parley.bus.models import OutboxMessage
from tenants.models import Tenant
from tests.faults.conftest import FaultStack
from tests.faults.support import audit, broker_ids, check_job, check_nothing_lost, eventually, queue_depths
from tests.ingestion.samples import build_zip

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

WEB = {"channel": "web", "conversation_id": "dups"}
TERMINAL = {"ok", "duplicate", "dead"}


async def _uploaded(stack: FaultStack, document_id: str) -> Envelope:
    async with unit_of_work(stack.sessions, admin=True) as session:
        for row in (await session.execute(select(OutboxMessage).where(OutboxMessage.message_type == "document.uploaded"))).scalars():
            envelope = Envelope.from_bytes(row.body)
            if envelope.payload["document_id"] == document_id:
                return envelope
    raise AssertionError(f"no document.uploaded for {document_id}")


async def _publish(stack: FaultStack, envelope: Envelope, copies: int) -> None:
    for _ in range(copies):
        await stack.broker.publish(Outgoing.of(envelope), routing_key="documents")


async def _index_version(stack: FaultStack) -> int:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return (await session.execute(select(Tenant.index_version).where(Tenant.id == stack.tenant_id))).scalar_one()


def _handled(worker, ids: dict[str, int]):  # type: ignore[no-untyped-def]
    """True once the worker logged a final outcome for every copy of every message (id -> copies)."""
    def check() -> bool:
        seen = {i: 0 for i in ids}
        for record in worker.records():
            if record.get("outcome") in TERMINAL and record.get("message_id") in seen:
                seen[record["message_id"]] += 1
        if not all(seen[i] >= n for i, n in ids.items()):
            return False
        depths = queue_depths(worker.env["PARLEY_AMQP_PREFIX"])  # rabbitmqctl (~0.5 s of CPU): only now
        return not any(unacked for _, unacked in depths.values())
    return check


async def test_duplicated_uploads_change_nothing_twice(stack: FaultStack) -> None:
    worker = stack.worker()
    # Given uploads a worker has not seen yet: a single file, a two-file job, and an empty file (it fails)
    single = await stack.submit([("faq.md", b"# FAQ\n\nParcels leave the warehouse within two days.\n")], as_job=False,
                                notify=WEB, publish=False)
    job = await stack.submit([("a.txt", b"Opening hours are nine to five.\n"), ("b.txt", b"Closed on public holidays.\n")],
                             notify=WEB, publish=False)
    empty = await stack.submit([("empty.txt", b"")], as_job=False, notify=WEB, publish=False)
    doc_ids = [*single.documents.values(), *job.documents.values(), *empty.documents.values()]
    envelopes = [await _uploaded(stack, d) for d in doc_ids]
    # When each message is published twice in a row before the worker starts (prefetch 2: both copies
    # are in flight together)
    await stack.relay.flush()
    assert sum((await broker_ids(stack.broker, stack.broker.topology.queue("documents"))).values()) == len(envelopes)
    for envelope in envelopes:
        await _publish(stack, envelope, 2)
    worker.start()
    await eventually(_handled(worker, {e.id: 2 for e in envelopes}), timeout=90, interval=0.3, what="both copies handled",
                     log=worker.log)
    first = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=doc_ids, job_id=job.job_id)
    version = await _index_version(stack)
    # Then each document was indexed (or failed) once, and its uploader told once
    assert not check_nothing_lost(first, tenant_id=stack.tenant_id, expected=4) + check_job(first, total=2)
    assert len(first.indexed) == 3 and len(first.failed) == 1
    assert _told(first) == {(single.documents["faq.md"], "indexed"): 1, (empty.documents["empty.txt"], "failed"): 1,
                            (job.job_id, "job_done"): 1}
    # When every message is delivered twice more, after it was handled
    for envelope in envelopes:
        await _publish(stack, envelope, 2)
    await eventually(_handled(worker, {e.id: 4 for e in envelopes}), timeout=90, interval=0.3, what="late copies handled",
                     log=worker.log)
    again = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=doc_ids, job_id=job.job_id)
    # Then nothing changed: the same chunks, vectors, counters, notices, dead letters and index version
    assert not check_nothing_lost(again, tenant_id=stack.tenant_id, expected=4) + check_job(again, total=2)
    assert {d: (x.status, x.chunk_count, x.attempts, x.error, x.updated_at) for d, x in again.documents.items()} == \
           {d: (x.status, x.chunk_count, x.attempts, x.error, x.updated_at) for d, x in first.documents.items()}
    assert {d: sorted((c.id, c.created_at) for c in cs) for d, cs in again.chunks.items()} == \
           {d: sorted((c.id, c.created_at) for c in cs) for d, cs in first.chunks.items()}
    assert {d: sorted((v.id, v.seq) for v in vs) for d, vs in again.vectors.items()} == \
           {d: sorted((v.id, v.seq) for v in vs) for d, vs in first.vectors.items()}
    assert await _index_version(stack) == version
    assert [(r.message_id, r.reason, r.dead_lettered_at) for r in again.dead] == \
           [(r.message_id, r.reason, r.dead_lettered_at) for r in first.dead]
    assert again.job is not None and (again.job.done, again.job.failed) == (2, 0)
    assert [n.id for n in again.notices] == [n.id for n in first.notices]
    in_dlq = await broker_ids(stack.broker, stack.broker.topology.dlq("documents"))
    assert set(in_dlq) == {envelopes[-1].id}



def _told(a) -> dict[tuple[str, str], int]:  # type: ignore[no-untyped-def]
    """How many times each person-facing notice would be posted. The notifier posts once per idempotency
    key (tests/faults/test_notice_duplicates.py), so two copies of one failure that failed at the same
    moment may stage two notice messages with one key between them: that is once."""
    keys: dict[tuple[str, str], set[str]] = {}
    for n in a.notices:
        keys.setdefault((n.payload.get("document_id") or n.payload.get("job_id"), n.payload["kind"]), set()).add(n.idempotency_key)
    return {target: len(k) for target, k in keys.items()}


async def test_the_same_file_twice_in_one_upload_is_one_document_counted_once(stack: FaultStack) -> None:
    # Given an upload holding a file, a copy of it under another name, and a ZIP whose two members are twins
    worker = stack.worker()
    worker.start()
    policy = b"# Returns\n\nReturns are accepted within 30 days.\n"
    twins = build_zip({"kb/care.md": b"# Care\n\nWash cold.\n", "kb/care-copy.md": b"# Care\n\nWash cold.\n"})
    # When it is submitted as one job (this used to fail the whole upload on a duplicate job item)
    batch = await stack.submit([("returns.md", policy), ("returns (1).md", policy), ("kb.zip", twins)], notify=WEB)
    assert batch.documents["returns.md"] == batch.documents["returns (1).md"]
    # Then the job counts documents, each once, and closes with one report
    await eventually(lambda: _closed(stack, batch.job_id), timeout=90, what="the job closed", log=worker.log)
    result = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=list(set(batch.documents.values())),
                         job_id=batch.job_id)
    assert result.job is not None
    assert (result.job.total, result.job.done, result.job.failed) == (2, 2, 0)
    assert [n.payload["text"] for n in result.notices if n.payload.get("job_id") == batch.job_id] == ["2 of 2 indexed"]


async def _closed(stack: FaultStack, job_id: str | None) -> bool:
    async with unit_of_work(stack.sessions, admin=True) as session:
        job = await session.get(Job, job_id)
        return job is not None and job.status.value != "running"
