"""Ingestion speed on the embedded defaults: upload acks, throughput vs the embedder's own limit.

    .venv/bin/python bench/ingest.py --docs 200 --workers 1 2

1. Upload acknowledgement: the time to store the blob, record the document and stage its message
   (the work a gateway does before answering "received"), for every document of the burst, with
   no worker running, so the backlog grows to the whole burst. p50 / p99.
2. Throughput: real `parley worker documents` processes (nice 19, one embedding thread each)
   index the burst; chunks/s from the first message to the job's close.
3. The physical limit: the same chunk texts embedded in-process by the same model on one thread.
   The ratio throughput / (workers x raw) says how much of the CPU the pipeline spends outside
   the embedder (target >= 0.8).

Documents are SciFact abstracts from ../shared/data/scifact (real scientific text) when present,
otherwise generated prose; a mix of Markdown, HTML, plain text and PDF.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import delete_topology, stop_process  # noqa: E402
from parley.blobs import BlobStore  # noqa: E402
from parley.bus import OutboxRelay  # noqa: E402
from parley.db import bind_admin, create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from knowledge.repository import JobRepository  # noqa: E402
from knowledge.service import create_job, submit_upload  # noqa: E402
from parley.settings import Settings  # noqa: E402
from cli import migrations  # noqa: E402
from parley import runtime  # noqa: E402
from tenants import service as tenants  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"


def texts(n: int) -> list[tuple[str, str]]:
    if SCIFACT.exists():
        rows = []
        with SCIFACT.open() as fh:
            for line in fh:
                doc = json.loads(line)
                rows.append((doc.get("title") or doc["_id"], doc["text"]))
                if len(rows) >= n:
                    break
        return rows
    rng = random.Random(7)
    words = "order ship return refund warranty size colour cotton linen delivery store policy exchange item".split()
    return [(f"Note {i}", " ".join(rng.choice(words) for _ in range(220)) + ".") for i in range(n)]


def render(i: int, title: str, body: str) -> tuple[str, bytes]:
    kind = i % 4
    if kind == 0:
        return f"doc{i}.md", f"# {title}\n\n{body}\n".encode()
    if kind == 1:
        return f"doc{i}.html", f"<html><body><h1>{title}</h1><p>{body}</p></body></html>".encode()
    if kind == 2:
        return f"doc{i}.txt", f"{title}\n\n{body}\n".encode()
    from tests.ingestion.samples import build_pdf

    plain = (title + " " + body).encode("cp1252", "replace").decode("cp1252")  # the sample PDF writer's font encoding
    lines = [plain[j : j + 90] for j in range(0, len(plain), 90)]
    return f"doc{i}.pdf", build_pdf([lines])


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--raw-sample", type=int, default=300, help="chunks embedded in-process for the raw figure")
    args = ap.parse_args()

    corpus = texts(args.docs)
    files = [render(i, t, b) for i, (t, b) in enumerate(corpus)]
    print(f"{len(files)} documents, {sum(len(d) for _, d in files) / 1e6:.1f} MB; cores: {os.cpu_count()}")
    results: dict[str, object] = {"docs": len(files)}

    for workers in args.workers:
        tmp = Path(tempfile.mkdtemp(prefix="parley-bench-"))
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        settings = Settings(data_dir=tmp / "var", amqp_prefix=prefix, log_json=True)
        engine = create_engine(settings, "bench")
        await migrations.upgrade(engine)
        sessions = create_sessionmaker(engine)
        async with unit_of_work(sessions, admin=True) as s:
            tenant = await tenants.create_tenant(s, name="bench")
            tid = tenant.id
        blobs = BlobStore(settings.effective_blob_dir)
        broker = runtime.rabbit_broker(settings, "bench")
        await broker.start()
        relay = OutboxRelay(sessions, broker)
        await relay.start()

        # 1. acks, backlog growing to the whole burst (no worker yet)
        async with unit_of_work(sessions, tenant_id=tid) as s:
            job_id = (await create_job(s, tenant_id=tid, kind="documents", description="bench", total=len(files))).id
        acks = []
        for name, data in files:
            t0 = time.perf_counter()
            blob = await blobs.put_bytes(tid, data, max_bytes=settings.max_upload_bytes)
            async with unit_of_work(sessions, tenant_id=tid) as s:
                await submit_upload(s, tenant_id=tid, source="bench", filename=name, declared_mime=None, blob=blob, job_id=job_id)
            acks.append((time.perf_counter() - t0) * 1000)
        await relay.flush()
        print(f"[{workers} worker(s)] upload ack ms: p50 {pct(acks, .5):.1f}  p99 {pct(acks, .99):.1f}  (backlog up to {len(files)})")

        # 2. throughput with real worker processes
        env = {**os.environ, "PARLEY_DATA_DIR": str(settings.data_dir), "PARLEY_AMQP_PREFIX": prefix, "PARLEY_LOG_LEVEL": "WARNING"}
        procs = [
            subprocess.Popen([sys.executable, "-m", "cli", "worker", "documents"], env=env,
                             preexec_fn=lambda: os.nice(19), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        t0 = time.perf_counter()
        while True:
            async with unit_of_work(sessions, tenant_id=tid) as s:
                job = await JobRepository(s, tid).get(job_id)
                if job.status.value != "running":
                    break
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - t0
        for p in procs:
            stop_process(p, timeout=60)
        async with unit_of_work(sessions, admin=True) as s:
            bind_admin(s)
            from sqlalchemy import func, select

            from knowledge.models import Chunk

            chunks = (await s.execute(select(func.count()).select_from(Chunk))).scalar_one()
            chunk_texts = list((await s.execute(select(Chunk.text).limit(args.raw_sample))).scalars())
        rate = chunks / elapsed
        print(f"[{workers} worker(s)] indexed {job.done}/{job.total} ({job.failed} failed), {chunks} chunks in {elapsed:.1f}s: {rate:.1f} chunks/s")
        results[f"workers_{workers}"] = {"ack_p50_ms": pct(acks, .5), "ack_p99_ms": pct(acks, .99), "seconds": elapsed,
                                         "chunks": chunks, "chunks_per_s": rate, "failed": job.failed}
        await relay.stop()
        await delete_topology(broker)
        await engine.dispose()

    # 3. the embedder alone, one thread, same texts
    embedder = runtime.embedder(Settings(embedding_threads=1))
    embedder.embed_documents_sync(chunk_texts[:8])  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    embedder.embed_documents_sync(chunk_texts)  # type: ignore[attr-defined]
    raw = len(chunk_texts) / (time.perf_counter() - t0)
    print(f"raw embedding, 1 thread, same chunks: {raw:.1f} chunks/s")
    results["raw_chunks_per_s"] = raw
    for workers in args.workers:
        r = results[f"workers_{workers}"]
        r["ratio_to_raw"] = r["chunks_per_s"] / (raw * workers)  # type: ignore[index]
        print(f"[{workers} worker(s)] throughput / ({workers} x raw) = {r['ratio_to_raw']:.2f}")  # type: ignore[index]
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    asyncio.run(main())
