"""Poison documents through the real worker: a parser that crashes, one that hangs, zip bombs, an empty
file, a PDF without text. Crashes are retried a bounded number of times through the delay tiers;
everything ends in the dead-letter queue with a reason a person can read; the queue keeps flowing
behind them; `parley dlq list` shows them and `parley dlq replay` re-queues one once it is fixed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from parley.bus import Envelope
from knowledge.models import DocumentStatus
from tests.faults.conftest import FaultStack
from tests.faults.support import audit, broker_ids, eventually, parley_cli, queue_depths
from tests.ingestion.samples import amplifying_zip, blank_pdf, build_zip, zip_bomb_docx

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

PARSE_LIMIT_S = 3
ATTEMPTS = 3
WEB = {"channel": "web", "conversation_id": "poison"}

#: filename -> (content, error code, words the person is shown)
#: The two hangs come first: they take both of the worker's prefetch slots until the parse budget ends.
POISON = {
    "hang.bin": (b"%FAULT-HANG manual", "parse_timeout", f"parsing took longer than {PARSE_LIMIT_S} s"),
    "hang-2.bin": (b"%FAULT-HANG manual 2", "parse_timeout", f"parsing took longer than {PARSE_LIMIT_S} s"),
    "crash.bin": (b"%FAULT-CRASH manual", "parser_crashed", "the document parser crashed (SIGSEGV)"),
    "flaky.bin": (b"%FAULT-FLAKY The flaky manual: keep the device dry.", "parser_crashed",
                  "the document parser crashed (SIGSEGV)"),
    "bomb.docx": (zip_bomb_docx(expanded_mb=20), "archive_too_large", "only a zip bomb does"),
    "bomb.zip": (build_zip({"bomb.txt": b"\0" * (20 * 1024 * 1024)}), "archive_bomb", "only a zip bomb does"),
    # the attack review's archive: 24 members of 8 MB in 198 KB, each member under the per-member ratio check
    "amplify.zip": (amplifying_zip(members=24, member_mb=8), "archive_bomb", "as a whole, which only a zip bomb does"),
    "empty.txt": (b"", "empty_file", "the file is empty"),
    "scan.pdf": (blank_pdf(), "pdf_no_text", "PDF has no extractable text"),
}
RETRIED = {"crash.bin", "flaky.bin"}


async def test_poison_is_dead_lettered_with_reasons_and_the_queue_keeps_flowing(stack: FaultStack, hostile_plugin: Path) -> None:
    # Given a worker whose parser sandbox knows the hostile formats, with a 3 s parse budget and 3 attempts
    worker = stack.worker(PARLEY_PARSER_PLUGINS=str(hostile_plugin), PARLEY_PARSE_TIME_LIMIT_SECONDS=str(PARSE_LIMIT_S),
                          PARLEY_MAX_ATTEMPTS=str(ATTEMPTS))
    worker.start()
    # When the poison is uploaded (one DM upload each), then a good document behind it
    ids = {}
    for name, (content, _, _) in POISON.items():
        ids[name] = (await stack.submit([(name, content)], as_job=False, notify=WEB)).documents[name]
    good = (await stack.submit([("hours.md", b"# Hours\n\nThe shop opens at 9:00 on weekdays.\n")], as_job=False,
                               notify=WEB)).documents["hours.md"]
    everything = [*ids.values(), good]

    async def settled() -> bool:
        a = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=everything, job_id=None)
        return all(d.status in (DocumentStatus.indexed, DocumentStatus.failed) for d in a.documents.values())

    await eventually(settled, timeout=120, what="every document indexed or failed", log=worker.log)
    result = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=everything, job_id=None)
    docs = result.documents
    # Then the good document queued behind the poison is indexed
    assert docs[good].status == DocumentStatus.indexed and docs[good].chunk_count > 0
    # And the hung parses were stopped at the budget and gave their slots back: while both prefetch slots
    # were held by them nothing else could start, so the first hang was reported before anything else
    # was even touched
    hung = [docs[ids[name]] for name in ("hang.bin", "hang-2.bin")]
    others = [d for d in docs.values() if d not in hung]
    assert min(d.updated_at for d in hung) <= min(d.updated_at for d in others)
    # And each poison document failed with its own readable reason; crashes were tried ATTEMPTS times, the rest once
    for name, (_, code, words) in POISON.items():
        doc = docs[ids[name]]
        assert (doc.status, doc.error_code) == (DocumentStatus.failed, code), (name, doc.error_code, doc.error)
        assert words in (doc.error or "") and "Traceback" not in (doc.error or ""), (name, doc.error)
        assert doc.attempts == (ATTEMPTS if name in RETRIED else 1), (name, doc.attempts)
    assert "Word document" not in (docs[ids["bomb.zip"]].error or ""), "a .zip is not a Word document"
    # And the archives wrote nothing: the blob store holds the uploaded files and not one unpacked member
    # (unpacked, amplify.zip alone would have added 192 MB; an archive may unpack to 100 MB at most)
    stored = {p.name: p.stat().st_size for p in (stack.blobs.root / stack.tenant_id).rglob("*") if p.is_file()}
    uploaded = [content for content, _, _ in POISON.values()] + [b"# Hours\n\nThe shop opens at 9:00 on weekdays.\n"]
    assert set(stored) == {hashlib.sha256(content).hexdigest() for content in uploaded}
    assert sum(stored.values()) < 100 * 1024 * 1024
    # And the dead letters say the same, with the attempt history; retries waited for the delay tiers
    dead = {Envelope.from_bytes(row.body).payload["document_id"]: row for row in result.dead}
    assert set(dead) == set(ids.values())
    for name in RETRIED:
        row = dead[ids[name]]
        assert row.reason == f"gave up after {ATTEMPTS} attempts; last error: parser_crashed: the document parser crashed (SIGSEGV)"
        assert [a["attempt"] for a in row.attempts] == list(range(1, ATTEMPTS + 1))
        times = [dt.datetime.fromisoformat(a["at"]) for a in row.attempts]
        shortest_tier = stack.broker.topology.delays[0]
        assert all(later - earlier >= dt.timedelta(seconds=shortest_tier) for earlier, later in zip(times, times[1:]))
    # And the person who uploaded each file was told once: indexed, or why not
    told = {}
    for notice in result.notices:
        told.setdefault(notice.payload["document_id"], []).append(notice.payload["kind"])
    assert told == {**{i: ["failed"] for i in ids.values()}, good: ["indexed"]}
    # And the worker survived all of it: one process, still running
    assert worker.alive() and worker.starts == 1

    # When the admin lists the dead letters with the CLI
    env = worker.env
    listed = parley_cli(env, "--json", "dlq", "list", "--queue", "documents")
    assert listed.returncode == 0, listed.stderr
    rows = {row["message_id"]: row for row in json.loads(listed.stdout)}
    # Then every poison document is there with its reason and attempt count
    assert set(rows) == {row.message_id for row in result.dead}
    for doc_id, row in dead.items():
        assert rows[row.message_id]["reason"] == row.reason and rows[row.message_id]["attempts"] == len(row.attempts)
    # When the flaky parser is fixed and its dead letter replayed with the CLI
    (hostile_plugin.parent / "hostile_parsers.fixed").touch()
    flaky = dead[ids["flaky.bin"]]
    replayed = parley_cli(env, "--json", "dlq", "replay", "--queue", "documents", str(flaky.id))
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"replayed": [flaky.id]}
    # Then the document is indexed after all, and its uploader told so
    await eventually(lambda: _status(stack, ids["flaky.bin"], DocumentStatus.indexed), timeout=60,
                     what="the replayed document indexed", log=worker.log)
    after = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=everything, job_id=None)
    assert [n.payload["kind"] for n in after.notices if n.payload["document_id"] == ids["flaky.bin"]] == ["failed", "indexed"]
    # And it left the dead-letter list and the broker's dead-letter queue; the rest stay
    still = json.loads(parley_cli(env, "--json", "dlq", "list", "--queue", "documents").stdout)
    assert {row["message_id"] for row in still} == {row.message_id for row in result.dead} - {flaky.message_id}
    await eventually(lambda: queue_depths(stack.prefix).get("documents") == (0, 0), timeout=30, interval=0.5,
                     what="documents queue empty")
    in_dlq = await broker_ids(stack.broker, stack.broker.topology.dlq("documents"))
    assert set(in_dlq) == {row.message_id for row in result.dead} - {flaky.message_id}


async def _status(stack: FaultStack, document_id: str, status: DocumentStatus) -> bool:
    a = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=[document_id], job_id=None)
    return a.documents[document_id].status == status
