"""Helpers of the fault suite (no tests here): real worker processes, a TCP proxy in front of
PostgreSQL, broker-side connection kills, and the audit that says nothing was lost or doubled.

Everything runs for real: the `parley worker documents` process, RabbitMQ under a unique topology
prefix, PostgreSQL. The test process plays the producers (a gateway or `parley ingest`: blobs,
`submit_upload`, the outbox relay) and reads the database directly to judge the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingestion.documents.service import chunk_id
from parley.blobs import BlobStore
from parley.bus import Envelope, OutboxRelay, RabbitBroker
from parley.bus.models import DeadLetter
from parley.db import unit_of_work
from knowledge.service import create_job, job_report, submit_upload
from knowledge.models import Chunk, Document, DocumentStatus, Job, JobItem, JobItemStatus, JobStatus
from parley.bus.models import OutboxMessage
from parley.settings import Settings
from parley.vectors.models import VectorEntry
from tests.support import waiting
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


#: Polls until a condition holds (tests/support/waiting.py), with this suite's bounds.
eventually = partial(waiting.eventually, timeout=60.0, interval=0.1)


# --- worker processes ---------------------------------------------------------------------------


@dataclass
class Worker:
    """`parley worker documents` as a child process; every start appends to the same log file."""

    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ("worker", "documents")
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "cli", *self.args], env=self.env, cwd=REPO,
                                            stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def connection_name(self) -> str:
        """What `parley.runtime.rabbit_broker` names the process's AMQP connection."""
        return f"parley-{self.args[-1]}-worker-{self.pid}"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs; unacked deliveries go back to the queue."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)
        self.kills += 1

    def stop(self) -> int | None:
        """SIGTERM and wait: the graceful path; the exit status, None if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None
        return stop_process(self.process, timeout=60)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (PARLEY_LOG_JSON=true)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out


def worker_env(settings: Settings, *, database_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=database_url or settings.effective_database_url, PARLEY_DATA_DIR=str(settings.data_dir),
               PARLEY_AMQP_URL=settings.amqp_url, PARLEY_AMQP_PREFIX=settings.amqp_prefix,
               PARLEY_AMQP_QUEUE_TYPE=settings.amqp_queue_type, PARLEY_LOG_JSON="true",
               PARLEY_SECRET_KEY=settings.secret_key.get_secret_value() if settings.secret_key else "", COLUMNS="200")
    env.update(extra)
    return env


def parley_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


# --- the broker, from its side ------------------------------------------------------------------


def close_connections(connection_name: str, reason: str = "fault suite: connection closed by the broker") -> int:
    """`rabbitmqctl close_connection` for every connection whose client-provided name is ``connection_name``."""
    listing = subprocess.run([RABBITMQCTL, "-q", "list_connections", "pid", "client_properties"], capture_output=True,
                             text=True, check=True).stdout
    pids = [line.split("\t", 1)[0] for line in listing.splitlines() if f'{{"connection_name","{connection_name}"}}' in line]
    for pid in pids:
        subprocess.run([RABBITMQCTL, "-q", "close_connection", pid, reason], check=True, capture_output=True)
    return len(pids)


def connection_names() -> list[str]:
    """Client-provided names of the broker's open connections (`rabbitmqctl list_connections`)."""
    listing = subprocess.run([RABBITMQCTL, "-q", "list_connections", "client_properties"], capture_output=True,
                             text=True, check=True).stdout
    return [line.split('{"connection_name","', 1)[1].split('"', 1)[0] for line in listing.splitlines()
            if '{"connection_name","' in line]


def queue_depths(prefix: str) -> dict[str, tuple[int, int]]:
    """(ready, unacknowledged) for every queue of the topology ``prefix``."""
    listing = subprocess.run([RABBITMQCTL, "-q", "list_queues", "name", "messages_ready", "messages_unacknowledged"],
                             capture_output=True, text=True, check=True).stdout
    out = {}
    for line in listing.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0].startswith(prefix) and parts[1].isdigit():
            out[parts[0][len(prefix):]] = (int(parts[1]), int(parts[2]))
    return out


# --- a TCP proxy in front of PostgreSQL ---------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``. ``cut()`` drops every open connection and refuses new
    ones (the port is closed: connect() gets ECONNREFUSED), ``restore()`` listens again on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


# --- producing work -----------------------------------------------------------------------------


@dataclass
class Batch:
    job_id: str | None
    documents: dict[str, str]  # filename -> document id


async def submit(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, relay: OutboxRelay | None, *,
                 tenant_id: str, files: Sequence[tuple[str, bytes]], notify: dict[str, Any] | None = None,
                 as_job: bool = True, publish: bool = True) -> Batch:
    """What the gateway and `parley ingest` do: blobs, then the documents (one job when ``as_job``) and
    their `document.uploaded` in one transaction; then the relay publishes them."""
    stored = [(name, await blobs.put_bytes(tenant_id, data, max_bytes=64 * 1024 * 1024)) for name, data in files]
    documents = {}
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        job_id = None
        if as_job:
            job = await create_job(session, tenant_id=tenant_id, kind="documents", total=len(stored),
                                   description=f"{len(stored)} files (fault suite)", notify=notify)
            job_id = job.id
        for name, blob in stored:
            submitted = await submit_upload(session, tenant_id=tenant_id, source="api", filename=name, declared_mime=None,
                                            blob=blob, job_id=job_id, notify=None if as_job else notify)
            documents[name] = submitted.document.id
    if publish and relay is not None:
        await relay.flush()
    return Batch(job_id, documents)


def text_documents(n: int, *, tag: str = "") -> list[tuple[str, bytes]]:
    """Small, distinct text documents (distinct content: the same bytes would be one document)."""
    return [(f"note-{tag}{i:03d}.txt", (f"Note {tag}{i}: the {_WORDS[i % len(_WORDS)]} desk at counter {i} opens at "
                                         f"{8 + i % 4}:{i % 6}0 and closes at {16 + i % 5}:00. Ask for ticket {tag}{i}.\n").encode())
            for i in range(n)]


_WORDS = ("returns", "shipping", "billing", "repairs", "pickup", "gift card", "warranty", "exchange")


# --- judging the outcome ------------------------------------------------------------------------


async def finished_count(sessions: async_sessionmaker[AsyncSession], document_ids: Sequence[str]) -> int:
    """How many of the documents are indexed or failed (a cheap poll)."""
    async with unit_of_work(sessions, admin=True) as s:
        return await s.scalar(select(func.count()).select_from(Document).where(
            Document.id.in_(list(document_ids)), Document.status.in_([DocumentStatus.indexed, DocumentStatus.failed]))) or 0


@dataclass
class Audit:
    """What the database says once the dust settled."""

    documents: dict[str, Document]
    chunks: dict[str, list[Chunk]]
    vectors: dict[str, list[VectorEntry]]
    job: Job | None
    items: list[JobItem]
    notices: list[Envelope]
    dead: list[DeadLetter]

    @property
    def indexed(self) -> set[str]:
        return {d.id for d in self.documents.values() if d.status == DocumentStatus.indexed}

    @property
    def failed(self) -> set[str]:
        return {d.id for d in self.documents.values() if d.status == DocumentStatus.failed}


async def audit(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, document_ids: Sequence[str],
                job_id: str | None) -> Audit:
    async with unit_of_work(sessions, admin=True) as s:
        documents = {d.id: d for d in (await s.execute(select(Document).where(Document.id.in_(list(document_ids))))).scalars()}
        chunks: dict[str, list[Chunk]] = defaultdict(list)
        for c in (await s.execute(select(Chunk).where(Chunk.tenant_id == tenant_id))).scalars():
            chunks[c.document_id].append(c)
        vectors: dict[str, list[VectorEntry]] = defaultdict(list)
        for v in (await s.execute(select(VectorEntry).where(VectorEntry.tenant_id == tenant_id,
                                                            VectorEntry.deleted.is_(False)))).scalars():
            vectors[v.document_id].append(v)
        job = items = None
        if job_id is not None:
            job = (await s.execute(select(Job).where(Job.id == job_id))).scalar_one()
            items = list((await s.execute(select(JobItem).where(JobItem.job_id == job_id))).scalars())
        notices = [Envelope.from_bytes(r.body) for r in (await s.execute(
            select(OutboxMessage).where(OutboxMessage.message_type == "notice.requested",
                                        OutboxMessage.tenant_id == tenant_id).order_by(OutboxMessage.id))).scalars()]
        dead = list((await s.execute(select(DeadLetter).where(DeadLetter.tenant_id == tenant_id)
                                     .order_by(DeadLetter.id))).scalars())
    return Audit(documents, dict(chunks), dict(vectors), job, items or [], notices, dead)


def check_nothing_lost(a: Audit, *, tenant_id: str, expected: int) -> list[str]:
    """Every invariant of "nothing lost, nothing doubled", as a list of readable violations."""
    problems = []
    if len(a.documents) != expected:
        problems.append(f"{expected} documents submitted, {len(a.documents)} found")
    stuck = {d.filename: d.status.value for d in a.documents.values()
             if d.status not in (DocumentStatus.indexed, DocumentStatus.failed)}
    if stuck:
        problems.append(f"documents neither indexed nor failed: {sorted(stuck.items())[:10]}")
    for d in a.documents.values():
        own_chunks = a.chunks.get(d.id, [])
        own_vectors = a.vectors.get(d.id, [])
        if d.status == DocumentStatus.indexed:
            ordinals = sorted(c.ordinal for c in own_chunks)
            if d.chunk_count <= 0 or ordinals != list(range(d.chunk_count)):
                problems.append(f"{d.filename}: chunk_count {d.chunk_count} but chunk ordinals {ordinals}")
            want = {chunk_id(tenant_id, d.id, i) for i in range(d.chunk_count)}
            if {c.id for c in own_chunks} != want:
                problems.append(f"{d.filename}: chunk rows are not its deterministic ids")
            if sorted(v.id for v in own_vectors) != sorted(want):
                problems.append(f"{d.filename}: {len(own_vectors)} live vectors for {d.chunk_count} chunks")
        elif d.status == DocumentStatus.failed:
            if not d.error or not d.error_code or "Traceback" in d.error:
                problems.append(f"{d.filename}: failed without a readable reason ({d.error_code!r}: {d.error!r})")
            if own_chunks or own_vectors:
                problems.append(f"{d.filename}: failed but holds {len(own_chunks)} chunks / {len(own_vectors)} vectors")
    strays = set(a.chunks) - set(a.documents) | set(a.vectors) - set(a.documents)
    if strays:
        problems.append(f"chunks or vectors of unknown documents: {sorted(strays)[:5]}")
    dead_docs = Counter(Envelope.from_bytes(row.body).payload.get("document_id") for row in a.dead if row.status == "dead")
    if set(dead_docs) != a.failed:
        problems.append(f"dead letters {sorted(dead_docs)} do not match the failed documents {sorted(a.failed)}")
    if any(n > 1 for n in dead_docs.values()):
        problems.append(f"a document was dead-lettered more than once: {dead_docs.most_common(3)}")
    # Not checked: pending_message (the relay's per-tenant backlog count, for fairness). A message can be
    # consumed before the relay that published it commits its count, which then stays for 24 h: a real
    # issue of parley/bus/outbox.py (priorities skew; nothing is lost), left to its owner.
    return problems


def check_job(a: Audit, *, total: int) -> list[str]:
    """Exact counters, closed once, one final report that says what the counters say."""
    problems = []
    job = a.job
    assert job is not None
    if (job.total, job.done + job.failed) != (total, total) or job.status != JobStatus.done or job.finished_at is None:
        problems.append(f"job: status {job.status.value}, total {job.total}, done {job.done}, failed {job.failed}")
    in_job = {d.id for d in a.documents.values() if d.job_id == job.id}
    if (job.done, job.failed) != (len(a.indexed & in_job), len(a.failed & in_job)):
        problems.append(f"job counters {job.done}/{job.failed} vs documents {len(a.indexed & in_job)}/{len(a.failed & in_job)}")
    statuses = Counter(item.status for item in a.items)
    if len(a.items) != total or statuses[JobItemStatus.pending] or statuses[JobItemStatus.done] != job.done:
        problems.append(f"job items: {len(a.items)} rows, {dict(statuses)}")
    finals = [n for n in a.notices if n.payload.get("job_id") == job.id]
    if [n.payload.get("kind") for n in finals] != ["job_done"]:
        problems.append(f"final notices of the job: {[(n.payload.get('kind'), n.payload.get('text')) for n in finals]}")
    return problems


async def expected_report(sessions: async_sessionmaker[AsyncSession], job: Job) -> str:
    async with unit_of_work(sessions, tenant_id=job.tenant_id) as session:
        return await job_report(session, job)


async def broker_ids(broker: RabbitBroker, queue_name: str) -> Counter[str]:
    """Envelope ids of the messages ready in a queue, taken off it (acked)."""
    channel = await broker.connection.channel()
    seen: Counter[str] = Counter()
    try:
        queue = await channel.declare_queue(queue_name, passive=True, robust=False)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            seen[Envelope.from_bytes(message.body).id] += 1
    finally:
        await channel.close()
    return seen
